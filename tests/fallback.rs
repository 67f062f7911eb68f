//! Fallback: where io_uring cannot be set up (seccomp returning EPERM as Docker's default
//! profile does, ENOSYS as on a kernel without it, a tiny RLIMIT_MEMLOCK), `Backend::Auto`
//! serves on mio and says why, and `Backend::Uring` fails with a clear error.
//!
//! Each case runs in a child process (this test binary, re-executed), because a seccomp
//! filter or a resource limit cannot be taken back once installed.
#![cfg(target_os = "linux")]

mod seccomp;

use ringmill::errors::{NetworkError, Result};
use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
use ringmill::{Backend, EventLoop};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const CHILD_ENV: &str = "RINGMILL_FALLBACK_CHILD";

struct Echo;

impl NetworkHandler for Echo {
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        ctx.send_to(conn, data)
    }
}

/// Serves one echo round trip on `event_loop`.
fn echo_round_trip(event_loop: &EventLoop) {
    let config = TcpServerConfig::builder()
        .address("127.0.0.1:0".parse().unwrap())
        .build();
    let server = TcpServer::new(config, Echo).expect("server");
    server.start(event_loop).expect("start");
    let mut stream = TcpStream::connect(server.local_addr().unwrap()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let message = b"served without io_uring";
    stream.write_all(message).unwrap();
    let mut got = vec![0; message.len()];
    stream.read_exact(&mut got).expect("echo within 10 s");
    assert_eq!(&got, message);
    server.stop().unwrap();
}

/// Re-runs `test` in a child process with `role` set, and checks it passed.
fn run_child(test: &str, role: &str) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env_remove("RINGMILL_BACKEND")
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("CHILD OK"),
        "child {role} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// The child's side of a seccomp case.
fn seccomp_child(errno: i32, errno_text: &str) {
    seccomp::deny_io_uring_setup(errno).expect("install the seccomp filter");

    let event_loop = EventLoop::builder()
        .threads(2)
        .backend(Backend::Auto)
        .build()
        .expect("Auto must fall back to mio, not fail");
    assert_eq!(event_loop.backend(), Backend::Mio);
    let reason = event_loop.backend_reason().to_string();
    println!("auto picked {} because: {reason}", event_loop.backend());
    assert!(reason.contains("io_uring unavailable"), "reason: {reason}");
    if cfg!(feature = "uring") {
        assert!(
            reason.contains(errno_text),
            "the reason should name the error ({errno_text}): {reason}"
        );
    }
    echo_round_trip(&event_loop);
    event_loop.stop();

    let forced = EventLoop::builder()
        .threads(2)
        .backend(Backend::Uring)
        .build();
    match forced {
        Ok(_) => panic!("Backend::Uring must fail where io_uring_setup is denied"),
        Err(e) => match e.downcast_ref::<NetworkError>() {
            Some(NetworkError::BackendUnavailable { backend, reason }) => {
                assert_eq!(*backend, Backend::Uring);
                assert!(!reason.is_empty());
                println!("forced io_uring fails with: {e}");
            }
            _ => panic!("expected BackendUnavailable, got {e}"),
        },
    }
    println!("CHILD OK");
}

#[test]
fn seccomp_eperm_falls_back_to_mio() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("eperm") => seccomp_child(libc::EPERM, "Operation not permitted"),
        _ => run_child("seccomp_eperm_falls_back_to_mio", "eperm"),
    }
}

#[test]
fn seccomp_enosys_falls_back_to_mio() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("enosys") => seccomp_child(libc::ENOSYS, "not implemented"),
        _ => run_child("seccomp_enosys_falls_back_to_mio", "enosys"),
    }
}

/// With almost no lockable memory, the event loop still serves: on io_uring (which locks
/// no buffer memory of its own), or on mio with the reason.
#[test]
fn tiny_memlock_still_serves() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("memlock") {
        return run_child("tiny_memlock_still_serves", "memlock");
    }
    let limit = libc::rlimit {
        rlim_cur: 4096,
        rlim_max: 4096,
    };
    // SAFETY: `limit` is a valid rlimit for the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    let event_loop = EventLoop::builder()
        .threads(1)
        .build()
        .expect("a low RLIMIT_MEMLOCK must not stop the event loop");
    println!(
        "with RLIMIT_MEMLOCK=4096: {} ({}) {}",
        event_loop.backend(),
        event_loop.backend_reason(),
        event_loop.backend_description()
    );
    echo_round_trip(&event_loop);
    println!("CHILD OK");
}
