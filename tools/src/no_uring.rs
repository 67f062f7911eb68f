//! Runs a command in a sandbox where io_uring cannot be used, as under Docker's default
//! seccomp profile (`EPERM`) or on a kernel built without it (`ENOSYS`): a seccomp filter
//! makes `io_uring_setup(2)` fail, then the command is executed with the filter in place.
//!
//! ```text
//! cargo build --release --example echo_server -p ringmill-tools --bin no_uring
//! target/release/no_uring eperm target/release/examples/echo_server
//! target/release/no_uring enosys target/release/examples/echo_server
//! ```
//!
//! A testing tool: ringmill must pick mio there and say why.

#[cfg(target_os = "linux")]
#[path = "../../tests/seccomp/mod.rs"]
mod seccomp;

#[cfg(target_os = "linux")]
fn main() {
    use std::os::unix::process::CommandExt;

    let mut args = std::env::args().skip(1);
    let errno = match args.next().as_deref() {
        Some("eperm") => libc::EPERM,
        Some("enosys") => libc::ENOSYS,
        _ => usage(),
    };
    let Some(program) = args.next() else { usage() };
    if let Err(e) = seccomp::deny_io_uring_setup(errno) {
        eprintln!("no_uring: cannot install the seccomp filter: {e}");
        std::process::exit(1);
    }
    let e = std::process::Command::new(&program).args(args).exec();
    eprintln!("no_uring: cannot run {program}: {e}");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
fn usage() -> ! {
    eprintln!("usage: no_uring eperm|enosys PROGRAM [ARGS...]");
    std::process::exit(2);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("no_uring: seccomp exists only on Linux");
    std::process::exit(2);
}
