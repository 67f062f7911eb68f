//! Runs a command in a sandbox where io_uring cannot be used, as under Docker's default
//! seccomp profile (`EPERM`) or on a kernel built without it (`ENOSYS`): a seccomp filter
//! makes `io_uring_setup(2)` fail, then the command is executed with the filter in place.
//!
//! ```text
//! cargo build --release --example echo_server --example no_uring
//! target/release/examples/no_uring eperm target/release/examples/echo_server
//! target/release/examples/no_uring enosys target/release/examples/echo_server
//! ```
//!
//! A testing tool: ringmill must pick mio there and say why.

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
    if let Err(e) = deny_io_uring_setup(errno) {
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

/// Installs a seccomp filter under which `io_uring_setup` fails with `errno` and every
/// other system call is allowed. It is inherited across `exec`.
#[cfg(target_os = "linux")]
fn deny_io_uring_setup(errno: i32) -> std::io::Result<()> {
    // Classic BPF over `struct seccomp_data`, whose first field is the syscall number.
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA),
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `program` points to `filter`, both alive for the call; the kernel copies the
    // filter before prctl returns.
    if unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("no_uring: seccomp exists only on Linux");
    std::process::exit(2);
}
