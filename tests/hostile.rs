//! Hostile peers and bad configuration never take a loop down: a panicking layer closes
//! its own connection only; a dead loop refuses sends; extreme durations and sizes are
//! either refused by validation or work; a layer handshake has its own deadline; closed
//! connections leave no timers behind; paused connections cannot pin the receive buffers;
//! a loop thread the OS refuses is an error from `build()`.

mod common;
mod common_child;

use common::*;
use ringmill::layer::Layer;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Panicking layers
// ---------------------------------------------------------------------------------------

/// The `Layer` method a [`Panicky`] layer panics in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Start,
    Decode,
    Encode,
    IsReady,
    Finish,
    EndOfStream,
    Drop,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Start => "start",
            Method::Decode => "decode",
            Method::Encode => "encode",
            Method::IsReady => "is_ready",
            Method::Finish => "finish",
            Method::EndOfStream => "end_of_stream",
            Method::Drop => "drop",
        }
    }
}

/// A pass-through layer that panics in `method` when `poisoned` (`is_ready` only once it
/// has seen data, so the handshake completes).
struct Panicky {
    method: Method,
    poisoned: bool,
    saw_data: bool,
}

impl Panicky {
    fn check(&self, method: Method) {
        if self.poisoned && self.method == method {
            panic!("poisoned layer in {}", method.name());
        }
    }
}

impl Layer for Panicky {
    fn start(&mut self, _out: &mut Vec<u8>) -> io::Result<()> {
        self.check(Method::Start);
        Ok(())
    }

    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, _out: &mut Vec<u8>) -> io::Result<()> {
        self.check(Method::Decode);
        self.saw_data = true;
        up.extend_from_slice(input);
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.check(Method::Encode);
        out.extend_from_slice(frame);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        if self.saw_data {
            self.check(Method::IsReady);
        }
        true
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> io::Result<()> {
        self.check(Method::Finish);
        Ok(())
    }

    fn end_of_stream(&mut self) -> io::Result<()> {
        self.check(Method::EndOfStream);
        Ok(())
    }
}

impl Drop for Panicky {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check(Method::Drop);
        }
    }
}

/// One loop thread, an echo server whose second connection's layer panics in `method`:
/// that connection is closed and reported (`HandlerPanic` naming the method, then
/// `on_disconnect` if `on_connect` ran); the first connection and a new one are served.
fn panicking_layer_closes_only_its_connection(backend: Backend, method: Method) {
    let event_loop = event_loop_with(backend, |b| b.threads(1));
    let rec = Recorder::shared();
    let handler = Recording::echo(&rec).on_data(|ctx, conn, data| {
        if data == b"BYE" {
            ctx.close_connection(conn)?;
        }
        Ok(())
    });
    let made = Arc::new(AtomicUsize::new(0));
    let server = TcpServer::new(server_config().build(), handler)
        .expect("TcpServer::new")
        .with_layer(move || {
            Box::new(Panicky {
                method,
                poisoned: made.fetch_add(1, Ordering::SeqCst) == 1,
                saw_data: false,
            })
        });
    server.start(&event_loop).expect("start");
    let addr = addr_of(&server);
    let mut good = connect(addr);
    let good_id = rec.wait_peer(good.local_addr().unwrap(), WAIT);
    round_trip(&mut good, b"before");
    let mut bad = connect(addr);
    let bad_id = match method {
        Method::Start => None,
        _ => Some(rec.wait_peer(bad.local_addr().unwrap(), WAIT)),
    };
    match method {
        Method::Start => {}
        Method::Decode | Method::Encode | Method::IsReady => bad.write_all(b"hello").unwrap(),
        Method::Finish => bad.write_all(b"BYE").unwrap(),
        Method::EndOfStream => shutdown_write(&bad),
        Method::Drop => round_trip(&mut bad, b"fine until dropped"),
    }
    if method == Method::Drop {
        drop(bad);
    } else {
        expect_closed(&mut bad);
        let err = rec.wait_error("HandlerPanic", WAIT);
        assert!(
            err.message.contains(&format!("`{}`", method.name()))
                && err.message.contains("poisoned layer"),
            "the report names the layer method and the panic: {}",
            err.message
        );
        if let Some(id) = bad_id {
            assert_eq!(err.conn, Some(id));
        }
    }
    if let Some(id) = bad_id {
        rec.wait_closed(id, WAIT);
        let trace = rec.trace(id);
        let tail = &trace.events[trace.events.len() - 2..];
        if method == Method::Drop {
            assert!(trace.errors().is_empty(), "{:?}", trace.events);
        } else {
            assert_eq!(
                tail,
                [Ev::Error("HandlerPanic".into()), Ev::Disconnect],
                "{:?}",
                trace.events
            );
        }
    }
    // The loop goes on: the old connection and a new one are served.
    round_trip(&mut good, b"after");
    let mut fresh = connect(addr);
    round_trip(&mut fresh, b"fresh connection");
    assert!(!rec.trace(good_id).closed());
    let expected = if method == Method::Start { 2 } else { 3 };
    drop((good, fresh));
    rec.wait_disconnects(expected, WAIT);
    event_loop.stop();
    rec.assert_no_violations();
    rec.assert_all_closed_once();
    assert_eq!(
        server.metrics().handler_panics,
        u64::from(method != Method::Drop),
        "the panic is counted"
    );
}

backend_matrix! {
    fn layer_panic_in_start(backend: Backend) {
        panicking_layer_closes_only_its_connection(backend, Method::Start);
    }

    fn layer_panic_in_decode(backend: Backend) {
        panicking_layer_closes_only_its_connection(backend, Method::Decode);
    }

    fn layer_panic_in_encode(backend: Backend) {
        panicking_layer_closes_only_its_connection(backend, Method::Encode);
    }

    fn layer_panic_in_is_ready(backend: Backend) {
        panicking_layer_closes_only_its_connection(backend, Method::IsReady);
    }

    fn layer_panic_in_finish(backend: Backend) {
        panicking_layer_closes_only_its_connection(backend, Method::Finish);
    }

    fn layer_panic_in_end_of_stream(backend: Backend) {
        panicking_layer_closes_only_its_connection(backend, Method::EndOfStream);
    }

    fn layer_panic_in_drop(backend: Backend) {
        panicking_layer_closes_only_its_connection(backend, Method::Drop);
    }
}

// ---------------------------------------------------------------------------------------
// A loop that dies anyway
// ---------------------------------------------------------------------------------------

/// Panics when dropped: user code the loop runs outside any callback (the drop of a
/// cancelled timer's closure).
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a value dropped on the loop thread panicked");
    }
}

backend_matrix! {
    /// A loop thread that dies of a panic no callback guard covers is marked stopped: its
    /// connections get `on_error(EventLoopGone)` and `on_disconnect`, their senders fail
    /// with `SendError::Closed`, the peers see the close, and posting to the loop fails.
    fn dead_loop_is_marked_stopped_and_refuses_sends(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        round_trip(&mut client, b"alive");
        let sender = server.context().sender(id).expect("a sender for the open connection");
        let handle = event_loop.handle(0).expect("loop 0");
        let bomb = PanicOnDrop;
        let timer = handle
            .schedule_once(std::time::Duration::from_millis(1), move || {
                let _keep = &bomb;
            })
            .expect("schedule_once");
        assert!(timer.cancel(), "cancelled before it came due");
        poll_until(WAIT, "the dead loop to be marked stopped", || handle.is_stopped());
        rec.wait_closed(id, WAIT);
        let trace = rec.trace(id);
        assert_eq!(
            &trace.events[trace.events.len() - 2..],
            [Ev::Error("EventLoopGone".into()), Ev::Disconnect],
            "{:?}",
            trace.events
        );
        let sent = sender.send(b"into the void");
        assert!(matches!(sent, Err(SendError::Closed)), "send to a dead loop: {sent:?}");
        assert!(server.context().send_to(id, b"gone").is_err());
        assert!(handle.post(|| {}).is_err(), "posting to a dead loop fails");
        expect_closed(&mut client);
        assert_eq!(server.connection_count(), 0);
        rec.assert_no_violations();
        rec.assert_all_closed_once();
    }
}

// ---------------------------------------------------------------------------------------
// Extreme configuration values
// ---------------------------------------------------------------------------------------

/// Echoes `data` through a client with `config`-style extremes, then closes it.
fn client_round_trip(event_loop: &EventLoop, addr: std::net::SocketAddr, config: TcpClientConfig) {
    let crec = Recorder::shared();
    let mut client =
        TcpClient::connect(addr, config, Recording::new(&crec)).expect("TcpClient::connect");
    client.start(event_loop).expect("start");
    let id = crec.wait_conn(0, WAIT);
    client.send(b"client hello").expect("send");
    crec.wait_bytes(id, 12, WAIT);
    client.disconnect().expect("disconnect");
    crec.wait_closed(id, WAIT);
    crec.assert_all_closed_once();
}

backend_matrix! {
    /// `Duration::MAX` for every duration a configuration takes (idle timeout, keep-alive,
    /// connect timeout, close linger, stop timeout) is accepted and works: connections
    /// echo, close gracefully (the linger deadline), and the loop stops. A server keep-alive
    /// the system refuses (Linux takes at most 32,767 s) is reported per connection as
    /// `Configuration`, as mill-net does, and the connection is served without it; a
    /// client's likewise.
    fn maximal_durations_are_accepted_and_work(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| {
            b.threads(1)
                .close_linger(Duration::MAX)
                .stop_timeout(Duration::MAX)
        });
        let rec = Recorder::shared();
        let config = server_config()
            .idle_timeout(Duration::MAX)
            .keep_alive(Some(Duration::MAX))
            .try_build()
            .expect("the maximal durations pass validation");
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let addr = addr_of(&server);
        let mut plain = connect(addr);
        round_trip(&mut plain, b"idle timeout of Duration::MAX");
        let id = rec.wait_conn(0, WAIT);
        #[cfg(target_os = "linux")]
        rec.wait(WAIT, "the refused keep-alive reported for the connection", |r| {
            r.trace(id).errors().iter().any(|e| e == "Configuration")
        });
        #[cfg(not(target_os = "linux"))]
        let _ = id;
        // The peer ends its stream: a graceful close, with its linger deadline.
        shutdown_write(&plain);
        expect_closed(&mut plain);
        rec.wait_disconnects(1, WAIT);
        client_round_trip(
            &event_loop,
            addr,
            TcpClientConfig {
                connect_timeout: Duration::MAX,
                idle_timeout: Some(Duration::MAX),
                keep_alive: Some(Duration::MAX),
                ..TcpClientConfig::default()
            },
        );
        // A connection still open when the loop stops: the stop deadline.
        let mut open = connect(addr);
        round_trip(&mut open, b"open at stop");
        event_loop.stop();
        expect_closed(&mut open);
        rec.wait_disconnects(3, WAIT);
        rec.assert_all_closed_once();
    }

    /// Durations just below what `Instant` can add (one nanosecond short of
    /// `Duration::MAX`, and `u64::MAX` seconds) behave like `Duration::MAX`.
    fn near_maximal_durations_are_accepted_and_work(backend: Backend) {
        let near = Duration::MAX - Duration::from_nanos(1);
        let event_loop = event_loop_with(backend, |b| {
            b.threads(1)
                .close_linger(Duration::from_secs(u64::MAX))
                .stop_timeout(near)
        });
        let rec = Recorder::shared();
        let config = server_config().idle_timeout(near).try_build().expect("valid");
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let mut plain = connect(addr_of(&server));
        round_trip(&mut plain, b"near the maximum");
        shutdown_write(&plain);
        expect_closed(&mut plain);
        rec.wait_disconnects(1, WAIT);
        event_loop.stop();
        rec.assert_all_closed_once();
    }

    /// Extreme admission rates pass validation and admit (a huge rate and burst) or
    /// refuse (a tiny rate after its burst of one) without trouble.
    fn extreme_accept_rates_work(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let rec = Recorder::shared();
        let config = server_config()
            .exempt_loopback(false)
            .accept_rate(f64::MAX, u32::MAX)
            .accept_rate_per_ip(f64::MIN_POSITIVE, 1)
            .try_build()
            .expect("extreme rates pass validation");
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let mut first = connect(addr_of(&server));
        round_trip(&mut first, b"admitted by the burst");
        let mut second = connect(addr_of(&server));
        expect_closed(&mut second);
        rec.wait_error("AdmissionRefused", WAIT);
        round_trip(&mut first, b"still served");
        drop(first);
        rec.wait_disconnects(1, WAIT);
        event_loop.stop();
    }

    /// The framing codecs take their whole parameter range: `LineDelimited::new(usize::MAX)`
    /// and `LengthPrefixed::new(usize::MAX)` (no cap) frame and echo.
    fn framing_codecs_without_a_cap_work(backend: Backend) {
        use ringmill::layer::{LengthPrefixed, LineDelimited};
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let rec = Recorder::shared();
        let lines = TcpServer::new(server_config().build(), Recording::echo(&rec))
            .expect("server")
            .with_layer(|| Box::new(LineDelimited::new(usize::MAX)));
        lines.start(&event_loop).expect("start");
        let mut c = connect(addr_of(&lines));
        c.write_all(b"one\ntwo\r\n").unwrap();
        let got = read_exact_within(&mut c, 8, WAIT);
        assert_bytes_eq(&got, b"one\ntwo\n", "lines echoed");
        drop(c);
        let prec = Recorder::shared();
        let prefixed = TcpServer::new(server_config().build(), Recording::echo(&prec))
            .expect("server")
            .with_layer(|| Box::new(LengthPrefixed::new(usize::MAX)));
        prefixed.start(&event_loop).expect("start");
        let mut c = connect(addr_of(&prefixed));
        c.write_all(&[0, 0, 0, 3, b'a', b'b', b'c']).unwrap();
        let got = read_exact_within(&mut c, 7, WAIT);
        assert_bytes_eq(&got, &[0, 0, 0, 3, b'a', b'b', b'c'], "frame echoed");
        drop(c);
        rec.wait_disconnects(1, WAIT);
        prec.wait_disconnects(1, WAIT);
        event_loop.stop();
        rec.assert_all_closed_once();
        prec.assert_all_closed_once();
    }
}

backend_matrix! {
    /// Driver settings that cannot work are refused by `build()` with a configuration
    /// error, never a panic; extreme ones that can work build.
    fn extreme_driver_settings_are_refused_or_work(backend: Backend) {
        let config = DriverConfig {
            events_capacity: usize::MAX,
            ..DriverConfig::default()
        };
        let built = EventLoop::builder()
            .threads(1)
            .backend(backend)
            .driver_config(config)
            .build();
        match built {
            Err(e) => assert!(
                matches!(network_error(e.as_ref()), NetworkError::Configuration(_)),
                "{backend}: {e}"
            ),
            Ok(event_loop) => event_loop.stop(),
        }
        let config = DriverConfig {
            ring_entries: u32::MAX,
            cq_entries: u32::MAX,
            read_budget: usize::MAX,
            ..DriverConfig::default()
        };
        let built = EventLoop::builder()
            .threads(1)
            .backend(backend)
            .driver_config(config)
            .build();
        if let Ok(event_loop) = built {
            event_loop.stop();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The layer handshake deadline
// ---------------------------------------------------------------------------------------

/// A layer whose handshake is `need` bytes from the peer; then it passes bytes through.
struct SlowHello {
    need: usize,
    got: usize,
}

impl Layer for SlowHello {
    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, _out: &mut Vec<u8>) -> io::Result<()> {
        let take = (self.need - self.got).min(input.len());
        self.got += take;
        up.extend_from_slice(&input[take..]);
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(frame);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.got == self.need
    }
}

/// Writes one byte every `every` until the server closes the connection or `stop` says
/// so; returns how many bytes it wrote. The pacing is the scenario (a slow-drip peer);
/// it waits on `stop` with that deadline, never sleeps.
fn drip(
    mut stream: TcpStream,
    every: Duration,
    stop: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sent = 0;
        loop {
            if stream.write_all(b"h").is_err() {
                return sent;
            }
            sent += 1;
            match stop.recv_timeout(every) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => return sent,
            }
        }
    })
}

backend_matrix! {
    /// A peer that drips its layer handshake one byte every 100 ms (so the idle timeout,
    /// 1 s, never fires) is closed at the handshake deadline (1.5 s), reported as
    /// `Io(TimedOut)`, never reaches the handler, and gives back its `max_connections`
    /// place; a well-behaved peer is served meanwhile and afterwards.
    fn slow_drip_handshake_is_closed_at_the_handshake_deadline(backend: Backend) {
        let handshake = Duration::from_millis(1500);
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let rec = Recorder::shared();
        let config = server_config()
            .idle_timeout(Duration::from_secs(1))
            .handshake_timeout(Some(handshake))
            .max_connections(1)
            .build();
        let server = TcpServer::new(config, Recording::echo(&rec))
            .expect("server")
            .with_layer(|| Box::new(SlowHello { need: 1000, got: 0 }));
        server.start(&event_loop).expect("start");
        let addr = addr_of(&server);
        let started = std::time::Instant::now();
        let slow = connect(addr);
        let mut reader = slow.try_clone().unwrap();
        let (stop, stopped) = std::sync::mpsc::channel();
        let dripper = drip(slow, Duration::from_millis(100), stopped);
        let err = rec.wait_error("Io(TimedOut)", WAIT);
        let closed_after = started.elapsed();
        assert!(err.message.contains("handshake"), "{}", err.message);
        assert!(
            closed_after >= handshake,
            "closed after {closed_after:?}, before the {handshake:?} deadline"
        );
        expect_closed(&mut reader);
        let _ = stop.send(());
        let sent = dripper.join().unwrap();
        assert!(sent > 10, "the peer kept dripping ({sent} bytes)");
        assert_eq!(rec.connects(), 0, "the handler never heard of it");
        assert!(rec.errors().iter().all(|e| e.kind != "IdleTimeout"), "{:?}", rec.errors());
        // Its place under max_connections is free again.
        poll_until(WAIT, "the place to be given back", || server.connection_count() == 0);
        let mut good = connect(addr);
        good.write_all(&[b'h'; 1000]).unwrap();
        round_trip(&mut good, b"after the handshake");
        drop(good);
        rec.wait_disconnects(1, WAIT);
        event_loop.stop();
        rec.assert_all_closed_once();
    }

    /// `handshake_timeout(Some(ZERO))` is refused by validation; `None` turns the deadline
    /// off (the idle timeout still covers a silent peer).
    fn handshake_timeout_is_validated(backend: Backend) {
        let _ = backend;
        let zero = server_config().handshake_timeout(Some(Duration::ZERO)).try_build();
        assert!(matches!(zero, Err(ConfigError::Zero("handshake_timeout"))), "{zero:?}");
        let off = server_config().handshake_timeout(None).try_build().expect("valid");
        assert_eq!(off.handshake_timeout, None);
        assert_eq!(
            server_config().build().handshake_timeout,
            Some(Duration::from_secs(10)),
            "the default"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Timers of closed connections
// ---------------------------------------------------------------------------------------

backend_matrix! {
    /// 1,000 short connections to a server with a 60 s idle timeout, one after the other:
    /// once they are closed, the loop's timer heap holds a bounded number of entries
    /// (not one idle timer per closed connection until its minute is up).
    fn closed_connections_leave_no_timers_behind(backend: Backend) {
        const CONNECTIONS: usize = 1000;
        const BOUND: usize = 200;
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let rec = Arc::new(Recorder::counting());
        let config = server_config().idle_timeout(Duration::from_secs(60)).build();
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let addr = addr_of(&server);
        for i in 0..CONNECTIONS {
            let mut c = connect(addr);
            round_trip(&mut c, b"short");
            drop(c);
            rec.wait_disconnects(i + 1, WAIT);
        }
        let mut entries = 0;
        let settled = try_poll_until(WAIT, || {
            entries = event_loop.metrics().timer_entries;
            entries <= BOUND
        });
        assert!(
            settled,
            "{entries} timer entries left after {CONNECTIONS} closed connections (bound {BOUND})"
        );
        // Live connections keep their timers: the idle timeout still works.
        event_loop.stop();
        rec.assert_all_closed_once();
    }
}

// ---------------------------------------------------------------------------------------
// Paused connections and the receive buffers
// ---------------------------------------------------------------------------------------

backend_matrix! {
    /// 32 connections that pause reading on their first bytes, each with 64 KiB sent, on a
    /// loop with 8 receive buffers of 4 KiB: the paused connections cannot hold the
    /// buffers (io_uring: what arrives for a paused connection is copied out of the
    /// provided-buffer ring), so another server on the same loop keeps echoing; once
    /// resumed, each paused connection gets all its bytes.
    fn paused_connections_cannot_pin_the_receive_buffers(backend: Backend) {
        const PAUSED: usize = 32;
        const EACH: usize = 64 * 1024;
        let event_loop = event_loop_with(backend, |b| {
            b.threads(1).buffer_count(8).buffer_size(4096)
        });
        let prec = Arc::new(Recorder::counting());
        let pausing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let senders: Arc<Shared<Vec<ConnSender>>> = Arc::new(Shared::new(Vec::new()));
        let (p, s) = (Arc::clone(&pausing), Arc::clone(&senders));
        let pauser = Recording::new(&prec)
            .on_connect(move |ctx, conn| {
                let sender = ctx.sender(conn).expect("sender");
                s.update(|v| v.push(sender));
                Ok(())
            })
            .on_data(move |ctx, conn, _| {
                if p.load(Ordering::SeqCst) {
                    ctx.sender(conn).expect("sender").pause_reads();
                }
                Ok(())
            });
        let paused_server = start_server(&event_loop, server_config().build(), pauser);
        let erec = Recorder::shared();
        let echo_server = start_server(&event_loop, server_config().build(), Recording::echo(&erec));
        let mut clients = Vec::new();
        for i in 0..PAUSED {
            let mut c = connect(addr_of(&paused_server));
            c.write_all(&pattern(i as u64, EACH)).unwrap();
            clients.push(c);
        }
        prec.wait(WAIT, "every paused connection to get its first bytes", |r| {
            r.conns.len() == PAUSED && r.conns.values().all(|t| t.bytes > 0)
        });
        // Nothing is being delivered now: no receive buffer may be out of the ring
        // (io_uring; mio reads into one loop buffer and reports none out).
        let mut out = 0;
        let returned = try_poll_until(WAIT, || {
            out = event_loop.metrics().driver.recv_buffers_out;
            out == 0
        });
        assert!(returned, "{PAUSED} paused connections hold {out} of the 8 receive buffers");
        let mut good = connect(addr_of(&echo_server));
        for round in 0..3u64 {
            round_trip(&mut good, &pattern(100 + round, 10_000));
        }
        pausing.store(false, Ordering::SeqCst);
        for sender in senders.with(|v| v.clone()) {
            sender.resume_reads();
        }
        prec.wait(WAIT, "every paused connection to get all its bytes", |r| {
            r.conns.values().all(|t| t.bytes == EACH)
        });
        drop(clients);
        drop(good);
        prec.wait_disconnects(PAUSED, WAIT);
        erec.wait_disconnects(1, WAIT);
        event_loop.stop();
        prec.assert_all_closed_once();
        erec.assert_all_closed_once();
    }
}

// ---------------------------------------------------------------------------------------
// A loop thread that cannot be started
// ---------------------------------------------------------------------------------------

/// This process's address space in use now, in bytes (`VmSize`).
fn address_space_in_use() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kib * 1024
}

fn set_address_space_limit(soft: libc::rlim_t) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid, writable rlimit for getrlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit; only the soft limit of this (child) process moves.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &new) }, 0);
    old
}

backend_matrix! {
    /// With the address space capped just above what the process uses (`RLIMIT_AS`, in
    /// a child process), a loop thread's stack cannot be mapped: `build()` returns an
    /// error saying the thread could not be started, instead of panicking; with the limit
    /// lifted, the same builder works.
    fn loop_thread_spawn_failure_is_an_error_from_build(backend: Backend) {
        let test = format!("loop_thread_spawn_failure_is_an_error_from_build::{}", match backend {
            Backend::Mio => "mio",
            _ => "uring",
        });
        if common_child::role().as_deref() == Some("spawn-fails") {
            let old = set_address_space_limit((address_space_in_use() + (1 << 20)) as libc::rlim_t);
            let built = EventLoop::builder().threads(2).backend(backend).build();
            set_address_space_limit(old.rlim_cur);
            match built {
                Ok(_) => common_child::report("outcome", "built"),
                Err(e) => common_child::report("outcome", format!("error: {e}")),
            }
            let again = EventLoop::builder().threads(2).backend(backend).build();
            common_child::report("again", if again.is_ok() { "built" } else { "failed" });
            return;
        }
        let mut child = common_child::ChildTest::spawn(&test, "spawn-fails", &[]);
        let outcome = child.expect("outcome", WAIT);
        assert!(
            outcome.starts_with("error:") && outcome.contains("loop thread"),
            "build() with no room for a thread stack: {outcome}"
        );
        assert_eq!(child.expect("again", WAIT), "built");
        child.wait_success(WAIT);
    }
}

backend_matrix! {
    /// Every size a server configuration takes, at `usize::MAX` (and the backlog at the
    /// largest `listen(2)` accepts), is accepted and works; an absurd thread count is
    /// refused by `build()` instead of panicking.
    fn maximal_sizes_are_accepted_or_refused_cleanly(backend: Backend) {
        let too_many = EventLoop::builder().threads(usize::MAX).backend(backend).build();
        match too_many {
            Err(e) => assert!(
                matches!(network_error(e.as_ref()), NetworkError::Configuration(_)),
                "{e}"
            ),
            Ok(_) => panic!("usize::MAX loop threads built"),
        }
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let rec = Recorder::shared();
        let config = server_config()
            .buffer_size(usize::MAX)
            .max_connections(usize::MAX)
            .max_connections_per_ip(usize::MAX)
            .high_watermark(usize::MAX)
            .low_watermark(usize::MAX)
            .max_frame(usize::MAX)
            .backlog(i32::MAX as u32)
            .exempt_loopback(false)
            .try_build()
            .expect("maximal sizes pass validation");
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let mut c = connect(addr_of(&server));
        round_trip(&mut c, &pattern(7, 100_000));
        drop(c);
        rec.wait_disconnects(1, WAIT);
        client_round_trip(
            &event_loop,
            addr_of(&server),
            TcpClientConfig {
                buffer_size: usize::MAX,
                high_watermark: usize::MAX,
                low_watermark: usize::MAX,
                max_frame: Some(usize::MAX),
                ..TcpClientConfig::default()
            },
        );
        event_loop.stop();
        rec.assert_all_closed_once();
    }
}
