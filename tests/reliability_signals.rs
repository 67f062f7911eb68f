//! Issue 5, item 6: signals. A `SIGUSR1` handler is installed with `sigaction` and
//! without `SA_RESTART`, so every blocking syscall it interrupts fails with `EINTR`; a
//! thread then sends `SIGUSR1` every 100 µs, alternately to the process and directly to
//! each loop thread (so the loops are interrupted inside `epoll_wait` / `io_uring_enter`
//! for certain), while echo runs: 16 blocking clients streaming, and library clients
//! (`TcpClient`) connecting, echoing and disconnecting over and over.
//!
//! Pass criteria: no `on_error` at all, no server connection ends before its client
//! closes it, every echoed byte intact, every library client connected and echoed, and the
//! signals were really delivered (thousands, loop threads included). Runs in a child
//! process: the signal disposition is process-wide.

mod common;
mod common_child;
mod rel_support;

use common::*;
use common_child::ChildTest;
use rel_support::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Signals handled so far (the handler only counts).
static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

/// Installs the counting handler for `SIGUSR1`, without `SA_RESTART`.
fn install_handler() {
    // SAFETY: all-zero is a valid `sigaction` to fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = 0; // no SA_RESTART: interrupted syscalls fail with EINTR
                         // SAFETY: `action.sa_mask` is a valid signal set to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: a valid action whose handler only touches an atomic (async-signal-safe).
    let rc = unsafe { libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "sigaction: {}", std::io::Error::last_os_error());
}

/// Thread ids of this process's loop threads (named `ringmill-loop-N`).
fn loop_threads() -> Vec<libc::pid_t> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            comm.starts_with("ringmill-loop")
                .then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// Client-side record of a `TcpClient` run.
#[derive(Debug, Default)]
struct ClientLog {
    data: Vec<u8>,
    connected: bool,
    disconnected: bool,
    errors: Vec<String>,
}

struct ClientSide(Arc<Shared<ClientLog>>);

impl NetworkHandler for ClientSide {
    fn on_connect(&self, _: &ServerContext, _: ConnectionId) -> Result<()> {
        self.0.update(|l| l.connected = true);
        Ok(())
    }
    fn on_data(&self, _: &ServerContext, _: ConnectionId, data: &[u8]) -> Result<()> {
        self.0.update(|l| l.data.extend_from_slice(data));
        Ok(())
    }
    fn on_disconnect(&self, _: &ServerContext, _: ConnectionId) -> Result<()> {
        self.0.update(|l| l.disconnected = true);
        Ok(())
    }
    fn on_error(&self, _: &ServerContext, _: Option<ConnectionId>, e: NetworkError) {
        self.0.update(|l| l.errors.push(format!("{e:?}")));
    }
}

const STREAMS: usize = 16;
const CLIENT_THREADS: u64 = 2;
const STORM: Duration = Duration::from_secs(3);
/// One signal per period.
const PERIOD: Duration = Duration::from_micros(100);

backend_matrix! {
    fn sigusr1_every_100us_causes_no_error_and_no_disconnect(backend: Backend) {
        if common_child::role().as_deref() != Some("signals") {
            let mut child = ChildTest::spawn(
                &test_name("sigusr1_every_100us_causes_no_error_and_no_disconnect", backend),
                "signals",
                &[],
            );
            let summary = child.expect("summary", Duration::from_secs(60));
            println!("{backend}: {summary}");
            child.wait_success(WAIT);
            return;
        }
        install_handler();
        let event_loop = Arc::new(event_loop(backend));
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let addr = addr_of(&server);
        let loops = loop_threads();
        assert_eq!(loops.len(), 2, "two loop threads to aim at");

        let stop = Arc::new(AtomicBool::new(false));
        let at_loops = Arc::new(AtomicUsize::new(0));
        let signaller = {
            let (stop, at_loops) = (Arc::clone(&stop), Arc::clone(&at_loops));
            std::thread::spawn(move || {
                // SAFETY: plain syscalls.
                let pid = unsafe { libc::getpid() };
                let mut i = 0usize;
                let start = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    if i % 2 == 0 {
                        // SAFETY: signals this process; the handler is installed.
                        unsafe { libc::kill(pid, libc::SIGUSR1) };
                    } else {
                        let tid = loops[(i / 2) % loops.len()];
                        // SAFETY: signals one thread of this process; the handler is installed.
                        let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
                        if rc == 0 {
                            at_loops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                    // Pacing: one signal per 100 µs on average (catching up when late).
                    let due = start + PERIOD * i as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                }
                i
            })
        };

        // Blocking clients stream through the storm.
        let streams: Vec<_> = (0..STREAMS)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut s = connect(addr);
                    let local = s.local_addr().unwrap();
                    let mut rng = Rng::new(i as u64);
                    let (mut bytes, start) = (0usize, Instant::now());
                    while start.elapsed() < STORM {
                        let len = rng.range(1, 64 * 1024);
                        let msg = rng.bytes(len);
                        s.write_all(&msg).unwrap_or_else(|e| panic!("stream {i}: write: {e}"));
                        let got = read_exact_within(&mut s, len, WAIT);
                        assert_bytes_eq(&got, &msg, &format!("stream {i}"));
                        bytes += len;
                    }
                    (s, local, bytes)
                })
            })
            .collect();

        // Library clients connect, echo and disconnect over and over.
        let lib_clients: Vec<_> = (0..CLIENT_THREADS)
            .map(|t| {
                let event_loop = Arc::clone(&event_loop);
                std::thread::spawn(move || {
                    let (mut rounds, start) = (0usize, Instant::now());
                    let mut rng = Rng::new(100 + t);
                    while start.elapsed() < STORM {
                        let log: Arc<Shared<ClientLog>> = Arc::default();
                        let mut client = TcpClient::connect(addr, TcpClientConfig::default(), ClientSide(Arc::clone(&log)))
                            .expect("TcpClient::connect");
                        client.start(&event_loop).expect("TcpClient::start");
                        let len = rng.range(1, 32 * 1024);
                        let msg = rng.bytes(len);
                        client.send(&msg).expect("send");
                        log.wait_until(WAIT, "the library client's echo", |l| l.data.len() >= len || !l.errors.is_empty());
                        client.disconnect().unwrap();
                        log.wait_until(WAIT, "the library client's on_disconnect", |l| l.disconnected);
                        log.with(|l| {
                            assert!(l.errors.is_empty(), "library client errors: {:?}", l.errors);
                            assert!(l.connected);
                            assert_bytes_eq(&l.data, &msg, "library client echo");
                        });
                        rounds += 1;
                    }
                    rounds
                })
            })
            .collect();

        let streams: Vec<_> = streams.into_iter().map(|h| h.join().expect("stream client")).collect();
        let rounds: usize = lib_clients.into_iter().map(|h| h.join().expect("library client")).sum();
        // Still under fire: every streaming connection is open on the server side.
        rec.with(|r| {
            for (_, local, _) in &streams {
                let t = r.conns.values().find(|t| t.peer == Some(*local)).expect("stream seen by the server");
                assert!(!t.closed(), "{local} was disconnected by the server during the storm: {:?}", t.events);
            }
        });
        stop.store(true, Ordering::SeqCst);
        let sent = signaller.join().unwrap();

        let bytes: usize = streams.iter().map(|(_, _, b)| b).sum();
        drop(streams);
        rec.wait(WAIT, "every connection closed", |r| r.disconnects == r.connects);
        rec.assert_all_closed_once();
        let errors = rec.errors();
        assert!(errors.is_empty(), "errors during the signal storm: {errors:?}");
        let handled = HANDLED.load(Ordering::Relaxed);
        let at_loops = at_loops.load(Ordering::Relaxed);
        assert!(sent as u128 >= STORM.as_micros() / PERIOD.as_micros() && handled >= 2000 && at_loops >= 1000, "too few signals: {sent} sent, {handled} handled, {at_loops} aimed at loop threads");
        assert!(rounds >= 10, "only {rounds} library client rounds");
        common_child::report(
            "summary",
            format!("{sent} SIGUSR1 sent ({at_loops} straight at loop threads), {handled} handled; {bytes} bytes echoed on {STREAMS} streams, {rounds} library client connect/echo/disconnect rounds; no error, no disconnect"),
        );
        server.stop().unwrap();
    }
}
