//! The fault proxy itself (against a plain std echo server), then ringmill servers behind
//! it: split writes, throttling, stalls and resets must leave the data path intact and the
//! callback contract kept.

mod common;

use common::proxy::{FaultProxy, Mode};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

/// A blocking std echo server (one thread per connection) for testing the proxy alone.
/// Reports how each connection ended: `Ok(bytes)` on EOF, `Err(kind)` on an error.
struct StdEcho {
    addr: SocketAddr,
    ends: Arc<Shared<Vec<std::result::Result<usize, std::io::ErrorKind>>>>,
}

fn std_echo() -> StdEcho {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ends = Arc::new(Shared::new(Vec::new()));
    let e2 = Arc::clone(&ends);
    // The listener thread lives as long as the test process; each test has its own port.
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let ends = Arc::clone(&e2);
            thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut total = 0;
                let end = loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break Ok(total),
                        Ok(n) => {
                            total += n;
                            if stream.write_all(&buf[..n]).is_err() {
                                break Err(std::io::ErrorKind::BrokenPipe);
                            }
                        }
                        Err(e) => break Err(e.kind()),
                    }
                };
                let _ = stream.shutdown(std::net::Shutdown::Write);
                ends.update(|v| v.push(end));
            });
        }
    });
    StdEcho { addr, ends }
}

/// Writes `data` from a helper thread while reading the echo, and returns the echo.
fn echo_through(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let out = data.to_vec();
    let w = thread::spawn(move || {
        writer.write_all(&out).unwrap();
    });
    let got = read_exact_within(&mut stream, data.len(), WAIT);
    w.join().unwrap();
    got
}

#[test]
fn proxy_passes_bytes_and_eof() {
    let echo = std_echo();
    let proxy = FaultProxy::start(echo.addr);
    let data = pattern(1, 300_000);
    let mut stream = connect(proxy.addr());
    let mut writer = stream.try_clone().unwrap();
    let out = data.clone();
    let w = thread::spawn(move || {
        writer.write_all(&out).unwrap();
        shutdown_write(&writer);
    });
    let got = read_to_eof(&mut stream, WAIT);
    w.join().unwrap();
    assert_bytes_eq(&got, &data, "echo through a passing proxy");
    echo.ends
        .wait_until(WAIT, "the echo server to see EOF", |v| {
            v.contains(&Ok(data.len()))
        });
    let stats = proxy.stats();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.up_written, data.len());
    assert_eq!(stats.down_written, data.len());
}

#[test]
fn proxy_splits_writes_into_small_pieces() {
    let echo = std_echo();
    let proxy = FaultProxy::start(echo.addr);
    proxy.set_mode(Mode::Split { min: 1, max: 7 });
    let data = pattern(2, 20_000);
    let got = echo_through(proxy.addr(), &data);
    assert_bytes_eq(&got, &data, "echo through split writes");
    let stats = proxy.stats();
    assert!(
        stats.max_write <= 7,
        "split mode wrote a piece of {} bytes",
        stats.max_write
    );
    // Pieces average 4 bytes: far more writes than 20_000 / 7 per direction.
    assert!(
        stats.up_writes >= data.len() / 7 && stats.down_writes >= data.len() / 7,
        "too few pieces: {stats:?}"
    );
}

#[test]
fn proxy_throttles_without_losing_bytes() {
    let echo = std_echo();
    let proxy = FaultProxy::start(echo.addr);
    proxy.set_mode(Mode::Throttle {
        bytes_per_sec: 400_000,
    });
    let data = pattern(3, 100_000);
    let got = echo_through(proxy.addr(), &data);
    assert_bytes_eq(&got, &data, "echo through a throttled proxy");
}

#[test]
fn proxy_stall_holds_bytes_until_release() {
    let echo = std_echo();
    let proxy = FaultProxy::start(echo.addr);
    let mut stream = connect(proxy.addr());
    proxy.wait(WAIT, "the proxy to accept", |s| s.accepted == 1);
    proxy.stall();
    stream.write_all(b"held back").unwrap();
    proxy.wait(WAIT, "a pump to hold the stalled bytes", |s| {
        s.stalled_pumps == 1 && s.up_read == 9
    });
    assert_eq!(
        proxy.stats().up_written,
        0,
        "nothing may pass while stalled"
    );
    proxy.release();
    let got = read_exact_within(&mut stream, 9, WAIT);
    assert_eq!(&got, b"held back");
    assert_eq!(proxy.stats().stalled_pumps, 0);
}

#[test]
fn proxy_reset_after_n_bytes_resets_both_sides() {
    let echo = std_echo();
    let proxy = FaultProxy::start(echo.addr);
    proxy.set_mode(Mode::ResetAfter(1000));
    let mut stream = connect(proxy.addr());
    let data = pattern(4, 5000);
    // The write may fail once the reset arrives.
    let _ = stream.write_all(&data);
    let result = try_read_to_eof(&mut stream, WAIT);
    match result {
        Err((got, e)) => {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "the client must see a reset, got {e}"
            );
            assert!(got.len() <= 1000, "at most the forwarded bytes come back");
        }
        Ok(got) => panic!(
            "the client must see a reset, got EOF after {} bytes",
            got.len()
        ),
    }
    echo.ends
        .wait_until(WAIT, "the target to see the reset", |v| !v.is_empty());
    let end = echo.ends.with(|v| v[0]);
    assert!(
        matches!(
            end,
            Err(std::io::ErrorKind::ConnectionReset) | Err(std::io::ErrorKind::BrokenPipe)
        ),
        "the target must see a reset, not a clean EOF: {end:?}"
    );
    let stats = proxy.stats();
    assert_eq!(stats.resets, 1);
    assert_eq!(
        stats.up_written, 1000,
        "exactly N bytes forwarded before the reset"
    );
}

#[test]
fn proxy_drop_joins_its_threads() {
    let echo = std_echo();
    let proxy = FaultProxy::start(echo.addr);
    let mut streams: Vec<TcpStream> = (0..3).map(|_| connect(proxy.addr())).collect();
    proxy.wait(WAIT, "three connections", |s| s.accepted == 3);
    proxy.stall();
    for s in &mut streams {
        s.write_all(b"x").unwrap();
    }
    proxy.wait(WAIT, "three stalled pumps", |s| s.stalled_pumps == 3);
    let live = proxy.live_threads();
    assert_eq!(
        live.load(Ordering::SeqCst),
        7,
        "1 acceptor and 2 pumps per connection"
    );
    drop(proxy);
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "proxy threads still running after drop"
    );
}

backend_matrix! {
    /// Split writes of 1..7 bytes reach the handler intact and in order, and the echo
    /// comes back intact.
    fn echo_through_split_writes(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let proxy = FaultProxy::start(addr_of(&server));
        proxy.set_mode(Mode::Split { min: 1, max: 7 });
        let data = pattern(10, 16_000);
        let got = echo_through(proxy.addr(), &data);
        assert_bytes_eq(&got, &data, "echo through split writes");
        let id = rec.wait_conn(0, WAIT);
        assert_bytes_eq(&rec.received(id), &data, "bytes seen by on_data");
        let trace = rec.trace(id);
        let chunks = trace.events.iter().filter(|e| matches!(e, Ev::Data(_))).count();
        assert!(chunks > 1, "split writes should arrive as several chunks");
        rec.assert_no_violations();
    }

    /// A throttled peer is echoed intact.
    fn echo_through_throttle(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let proxy = FaultProxy::start(addr_of(&server));
        proxy.set_mode(Mode::Throttle { bytes_per_sec: 1_000_000 });
        let data = pattern(11, 200_000);
        let got = echo_through(proxy.addr(), &data);
        assert_bytes_eq(&got, &data, "echo through a throttled proxy");
        rec.assert_no_violations();
    }

    /// Stalling the path holds bytes back (the server sees none of them), releasing it
    /// delivers everything intact and in order.
    fn stall_then_release(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let proxy = FaultProxy::start(addr_of(&server));
        let mut stream = connect(proxy.addr());
        let id = rec.wait_conn(0, WAIT);
        stream.write_all(b"before").unwrap();
        assert_eq!(read_exact_within(&mut stream, 6, WAIT), b"before");
        proxy.stall();
        let data = pattern(12, 200_000);
        let mut writer = stream.try_clone().unwrap();
        let out = data.clone();
        let w = thread::spawn(move || writer.write_all(&out).unwrap());
        proxy.wait(WAIT, "the proxy to hold stalled bytes", |s| s.stalled_pumps >= 1);
        assert_eq!(rec.trace(id).bytes, 6, "no byte may reach the server while stalled");
        proxy.release();
        let got = read_exact_within(&mut stream, data.len(), WAIT);
        w.join().unwrap();
        assert_bytes_eq(&got, &data, "echo after the stall");
        let mut want = b"before".to_vec();
        want.extend_from_slice(&data);
        assert_bytes_eq(&rec.received(id), &want, "bytes seen by on_data");
        rec.assert_no_violations();
    }

    /// A reset after N bytes ends that connection with exactly one on_disconnect, after
    /// exactly the N bytes; the server keeps serving new connections.
    fn reset_after_n_bytes(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let proxy = FaultProxy::start(addr_of(&server));
        proxy.set_mode(Mode::ResetAfter(5000));
        let mut stream = connect(proxy.addr());
        // The reset hits an established connection: one the server has seen.
        let id = rec.wait_conn(0, WAIT);
        let data = pattern(13, 20_000);
        let _ = stream.write_all(&data);
        rec.wait_closed(id, WAIT);
        let trace = rec.trace(id);
        assert_eq!(trace.disconnects(), 1, "{:?}", trace.events);
        assert_bytes_eq(&trace.data, &data[..trace.data.len()], "bytes before the reset");
        assert!(trace.data.len() <= 5000, "more bytes than the proxy forwarded");
        assert_eq!(proxy.stats().resets, 1);
        drop(stream);

        // The server goes on: a direct connection is served.
        proxy.set_mode(Mode::Pass);
        let mut direct = connect(addr_of(&server));
        direct.write_all(b"still here").unwrap();
        let second = rec.wait_conn(1, WAIT);
        rec.wait_bytes(second, 10, WAIT);
        assert_eq!(rec.received(second), b"still here");
        drop(direct);
        rec.wait_closed(second, WAIT);
        rec.assert_all_closed_once();
        assert_eq!(rec.trace(id).disconnects(), 1, "a reset connection ends exactly once");
    }
}
