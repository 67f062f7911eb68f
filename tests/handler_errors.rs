//! Contract 6: a handler error from `on_data` closes that connection and reports
//! `on_error(HandlerError)`; a panic in any callback is caught, closes that connection,
//! is reported (`HandlerPanic`), and the loop keeps serving the others.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;

backend_matrix! {
    /// `on_data` returning `Err` ends that connection: `on_error(Some(id), HandlerError)`
    /// carrying the handler's message, then one `on_disconnect`; the client sees the close;
    /// other connections are untouched.
    fn on_data_error_closes_connection(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let handler = Recording::echo(&rec).on_data(|_, _, data| {
            if data.starts_with(b"FAIL") {
                return Err("boom: refused by the handler".into());
            }
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut good = connect(addr_of(&server));
        let mut bad = connect(addr_of(&server));
        let good_id = rec.wait_peer(good.local_addr().unwrap(), WAIT);
        let bad_id = rec.wait_peer(bad.local_addr().unwrap(), WAIT);
        round_trip(&mut good, b"hello");
        bad.write_all(b"FAIL now").unwrap();
        expect_closed(&mut bad);
        rec.wait_closed(bad_id, WAIT);
        let trace = rec.trace(bad_id);
        assert_eq!(
            trace.events,
            vec![Ev::Connect, Ev::Data(8), Ev::Error("HandlerError".into()), Ev::Disconnect]
        );
        let err = rec.wait_error("HandlerError", WAIT);
        assert_eq!(err.conn, Some(bad_id));
        assert!(err.message.contains("boom: refused by the handler"), "{}", err.message);
        // The other connection and the server go on.
        round_trip(&mut good, b"still fine");
        let mut fresh = connect(addr_of(&server));
        round_trip(&mut fresh, b"new connection");
        assert!(!rec.trace(good_id).closed());
        drop((good, fresh));
        rec.wait_disconnects(3, WAIT);
        event_loop.stop();
        rec.assert_all_closed_once();
    }

    /// Connections whose `on_data` panics are closed and reported one by one while 100
    /// other connections keep echoing every byte correctly; the server accepts and serves
    /// new connections afterwards.
    fn panic_in_on_data_spares_the_others(backend: Backend) {
        const GOOD: usize = 100;
        const POISON: usize = 10;
        let event_loop = event_loop(backend);
        let rec = Arc::new(Recorder::counting());
        let handler = Recording::echo(&rec).on_data(|_, _, data| {
            if data.starts_with(b"PANIC") {
                panic!("poisoned connection");
            }
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let addr = addr_of(&server);
        let start = Arc::new(Barrier::new(GOOD / 10 + 1));
        let good: Vec<_> = (0..GOOD / 10)
            .map(|t| {
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    let mut conns: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
                    start.wait();
                    let mut rng = Rng::new(t as u64);
                    for round in 0..20 {
                        for c in conns.iter_mut() {
                            let len = rng.range(1, 20_000);
                            let mut msg = rng.bytes(len);
                            msg[0] = b'a'; // never "PANIC"
                            c.write_all(&msg).unwrap();
                            let got = read_exact_within(c, len, WAIT);
                            assert_bytes_eq(&got, &msg, &format!("thread {t} round {round}"));
                        }
                    }
                    conns
                })
            })
            .collect();
        start.wait();
        let mut poisoned = Vec::new();
        for _ in 0..POISON {
            let mut p = connect(addr);
            let id = rec.wait_peer(p.local_addr().unwrap(), WAIT);
            p.write_all(b"PANIC please").unwrap();
            expect_closed(&mut p);
            poisoned.push(id);
        }
        let good_conns: Vec<TcpStream> = good
            .into_iter()
            .flat_map(|g| g.join().expect("a good connection failed"))
            .collect();
        for id in &poisoned {
            rec.wait_closed(*id, WAIT);
            let trace = rec.trace(*id);
            assert_eq!(
                trace.events,
                vec![Ev::Connect, Ev::Data(12), Ev::Error("HandlerPanic".into()), Ev::Disconnect],
                "poisoned {id}"
            );
        }
        let errors = rec.errors();
        assert_eq!(errors.len(), POISON, "only the poisoned connections report errors: {errors:?}");
        for e in &errors {
            assert_eq!(e.kind, "HandlerPanic");
            assert!(e.message.contains("poisoned connection"), "{}", e.message);
            assert!(poisoned.contains(&e.conn.expect("a connection error")));
        }
        assert_eq!(server.connection_count(), GOOD, "the good connections are all open");
        // The loop keeps serving.
        let mut fresh = connect(addr);
        round_trip(&mut fresh, b"after the panics");
        drop(good_conns);
        drop(fresh);
        rec.wait_disconnects(GOOD + POISON + 1, WAIT);
        event_loop.stop();
        rec.assert_all_closed_once();
    }

    /// A panic in `on_connect` closes that connection, reports `HandlerPanic`, and still
    /// pairs the `on_connect` with one `on_disconnect`.
    fn panic_in_on_connect(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let handler = Recording::echo(&rec).on_connect(move |_, _| {
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                panic!("panic in on_connect");
            }
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut victim = connect(addr_of(&server));
        let id = rec.wait_peer(victim.local_addr().unwrap(), WAIT);
        expect_closed(&mut victim);
        rec.wait_closed(id, WAIT);
        assert_eq!(
            rec.trace(id).events,
            vec![Ev::Connect, Ev::Error("HandlerPanic".into()), Ev::Disconnect]
        );
        let mut next = connect(addr_of(&server));
        round_trip(&mut next, b"served");
    }

    /// A panic in `on_writable` closes that connection and is reported; a panic in
    /// `on_disconnect` is caught; either way the loop goes on serving.
    fn panic_in_other_callbacks(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let handler = Recording::echo(&rec)
            .on_writable(|ctx, id| {
                // Only the connection that was sent the 13-byte marker frame.
                if ctx.sender(id).is_some_and(|s| s.peak_queued_bytes() == 13) {
                    panic!("panic in on_writable");
                }
                Ok(())
            })
            .on_disconnect(|_, _| panic!("panic in on_disconnect"));
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut a = connect(addr_of(&server));
        let a_id = rec.wait_peer(a.local_addr().unwrap(), WAIT);
        // The 13-byte frame makes on_writable panic once it has been written.
        server.context().send_to(a_id, b"panic, please").unwrap();
        assert_eq!(read_exact_within(&mut a, 13, WAIT), b"panic, please");
        expect_closed(&mut a);
        rec.wait_closed(a_id, WAIT);
        let trace = rec.trace(a_id);
        assert_eq!(
            trace.events,
            vec![Ev::Connect, Ev::Writable, Ev::Error("HandlerPanic".into()), Ev::Disconnect]
        );
        // on_disconnect panicked just now; the loops still serve.
        for i in 0..4 {
            let mut b = connect(addr_of(&server));
            round_trip(&mut b, format!("round {i}").as_bytes());
        }
        rec.wait_disconnects(5, WAIT);
        event_loop.stop();
        rec.assert_all_closed_once();
    }
}

backend_matrix! {
    /// A socket option the kernel refuses on an accepted connection (Linux refuses a
    /// TCP_KEEPIDLE above 32767 s) is reported to `on_error` with the connection's id,
    /// before `on_connect`, and the connection is served anyway, as in mill-net.
    fn refused_socket_option_is_reported_with_the_connection(backend: Backend) {
        if !cfg!(target_os = "linux") {
            println!("skipped: only Linux is known to refuse this keep-alive time");
            return;
        }
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let idle = std::time::Duration::from_secs(1 << 20);
        let config = server_config().keep_alive(Some(idle)).build();
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        client.write_all(b"ping").unwrap();
        assert_eq!(read_exact_within(&mut client, 4, WAIT), b"ping");
        let events = rec.trace(id).events;
        assert!(
            matches!(events.first(), Some(Ev::Error(kind)) if kind == "Configuration"),
            "the refused option first, as an error of this connection: {events:?}"
        );
        assert_eq!(events.get(1), Some(&Ev::Connect), "{events:?}");
        event_loop.stop();
    }
}
