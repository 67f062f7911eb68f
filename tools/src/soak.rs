//! Soak: a ringmill echo server under 10,000 concurrent connections for a set time, then
//! the books are checked (`ci/soak` runs it on each backend).
//!
//! ```text
//! cargo run --release -p ringmill-tools --bin soak -- --backend uring|mio [--secs 60] [--conns 10000]
//! ```
//!
//! What it does and checks: `soak_linux.rs`. It reads `/proc` and sets Linux socket
//! options, so it runs on Linux only; elsewhere it builds and says so.

#[cfg(target_os = "linux")]
#[path = "soak_linux.rs"]
mod linux;

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("soak: Linux only (it reads /proc and sets Linux socket options)");
    std::process::exit(2);
}
