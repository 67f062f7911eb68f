//! A seccomp filter that makes `io_uring_setup(2)` fail, as Docker's default profile
//! (`EPERM`) or a kernel without io_uring (`ENOSYS`) does. Shared by the fallback tests and
//! the `no_uring` tool (`tools/src/no_uring.rs`).
#![cfg(target_os = "linux")]
#![allow(dead_code)] // each includer uses part of it

/// Installs, for the rest of this process and whatever it `exec`s, a filter under which
/// `io_uring_setup` fails with `errno` and every other system call is allowed.
pub fn deny_io_uring_setup(errno: i32) -> std::io::Result<()> {
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
    install(&filter)
}

/// Installs `filter` (classic BPF over `struct seccomp_data`) on the calling thread, for the
/// threads it starts from now on and whatever it `exec`s. Without `SECCOMP_FILTER_FLAG_TSYNC`
/// threads already running keep their old filter.
pub fn install(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let program = libc::sock_fprog {
        len: u16::try_from(filter.len()).expect("a seccomp filter has at most 65535 instructions"),
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `program` points to `filter`; both outlive the call, and the kernel copies
    // the filter before prctl returns.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
