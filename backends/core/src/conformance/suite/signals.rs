//! Signals: no `SIGPIPE` on a send to a vanished peer, interrupted polls retried.

use crate::config::DriverConfig;
use crate::conformance::harness::*;
use crate::driver::{Driver, ListenerId, Slot};
use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Rule 4's `MSG_NOSIGNAL`: with SIGPIPE's default action (which kills the process),
/// sends to a peer that reset the connection fail with an error, the last with
/// `BrokenPipe`, and the process lives. The reset itself ends the receive with an error.
#[cfg(unix)]
pub fn send_to_a_vanished_peer_raises_no_sigpipe<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = exclusive();
    fn disposition() -> libc::sighandler_t {
        // SAFETY: an all-zero `sigaction` is a valid out-parameter, and a null new action
        // only queries the current one.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            assert_eq!(
                libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old),
                0
            );
            old.sa_sigaction
        }
    }
    struct Restore(libc::sighandler_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: puts back the disposition found at the start (a plain action).
            unsafe { libc::signal(libc::SIGPIPE, self.0) };
        }
    }
    // SAFETY: sets the default action for SIGPIPE; no handler is installed.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR);
    let _restore = Restore(previous);
    assert_eq!(disposition(), libc::SIG_DFL);

    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let client = TcpStream::connect(addr).unwrap();
    accept_as(&mut driver, Slot(0));
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    match &evs[..] {
        [Ev::Received(Slot(0), Err(err))] => {
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        }
        other => panic!("expected the reset to be received, got {other:?}"),
    }
    let data = vec![1u8; 64 * 1024];
    let mut errors = Vec::new();
    for _ in 0..2 {
        // SAFETY: `data` lives until the `Sent` below has been seen.
        unsafe { driver.send(Slot(0), &[IoSlice::new(&data)]) };
        let evs = poll_until(&mut driver, |evs| !evs.is_empty());
        match <[Ev; 1]>::try_from(evs) {
            Ok([Ev::Sent(Slot(0), Err(err))]) => errors.push(err.kind()),
            other => panic!("expected one failed Sent, got {other:?}"),
        }
    }
    assert_eq!(
        errors.last(),
        Some(&io::ErrorKind::BrokenPipe),
        "{errors:?}"
    );
    assert_eq!(disposition(), libc::SIG_DFL);
    close_and_wait(&mut driver, Slot(0));
}

#[cfg(unix)]
extern "C" fn ignore_signal(_: libc::c_int) {}

/// Rule 6: signals (a handler without `SA_RESTART`) hitting a thread blocked in
/// `poll(None)` never surface as `EINTR` nor end the poll early.
#[cfg(unix)]
pub fn interrupted_polls_are_retried<D: Driver>(
    make: impl Fn(&DriverConfig) -> D + Send + 'static,
) {
    use std::os::unix::thread::JoinHandleExt;
    let _serial = shared();
    // SAFETY: installs a handler that does nothing; the struct is fully initialised.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let (waker_tx, waker_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut driver = make(&small_config());
        waker_tx.send(driver.waker()).unwrap();
        let mut polls = 0;
        while driver.counters().wakeups == 0 {
            driver
                .poll(None, |c| panic!("unexpected completion {c:?}"))
                .expect("poll must retry interrupted waits");
            polls += 1;
        }
        done_tx.send(polls).unwrap();
    });
    let waker = waker_rx.recv_timeout(DEADLINE).unwrap();
    for _ in 0..200 {
        // SAFETY: the thread is alive (it ends only after the wake-up below).
        let rc = unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGUSR1) };
        assert_eq!(rc, 0);
        thread::yield_now();
    }
    waker.wake().unwrap();
    let polls = done_rx
        .recv_timeout(DEADLINE)
        .expect("loop thread did not finish after the wake-up");
    assert_eq!(
        polls, 1,
        "a signal ended poll(None) without a completion or wake-up"
    );
    handle.join().unwrap();
}
