//! Metrics: `server.metrics()` counts bytes in and out, backpressure refusals, handler
//! errors and panics, and idle timeouts; `event_loop.metrics()` sums the loops' driver
//! counters, the connections they hold, and the timers and closures they ran.
//!
//! The counters are updated by the loops after the events they count, so the tests poll
//! them (with a deadline) rather than read them once.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

backend_matrix! {
    /// Every byte echoed is counted once in and once out.
    fn bytes_in_and_out_are_counted(backend: Backend) {
        let event_loop = event_loop(backend);
        let server = start_server(&event_loop, server_config().build(), Echo::new());
        let payload = pattern(7, 300_000);
        let mut clients: Vec<_> = (0..3).map(|_| connect(addr_of(&server))).collect();
        for client in &mut clients {
            client.write_all(&payload).unwrap();
        }
        for client in &mut clients {
            let echoed = read_exact_within(client, payload.len(), WAIT);
            assert_bytes_eq(&echoed, &payload, "echo");
        }
        let total = 3 * payload.len() as u64;
        poll_until(WAIT, "bytes counted", || {
            let m = server.metrics();
            m.bytes_in == total && m.bytes_out == total
        });
        let m = server.metrics();
        assert_eq!((m.open, m.accepted), (3, 3));
        assert_eq!((m.handler_errors, m.handler_panics, m.idle_timeouts), (0, 0, 0));
        assert_eq!(m.backpressure_refusals, 0);
    }

    /// A handler error and a handler panic each close their connection and are counted.
    fn handler_errors_and_panics_are_counted(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let handler = Recording::new(&rec).on_data(|_, _, data| {
            if data.starts_with(b"panic") {
                panic!("asked to panic");
            }
            Err("asked to fail".into())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut a = connect(addr_of(&server));
        let mut b = connect(addr_of(&server));
        a.write_all(b"fail").unwrap();
        b.write_all(b"panic").unwrap();
        read_to_eof(&mut a, WAIT);
        let _ = try_read_to_eof(&mut b, WAIT);
        rec.wait_disconnects(2, WAIT);
        let m = server.metrics();
        assert_eq!((m.handler_errors, m.handler_panics), (1, 1));
    }

    /// Connections closed by the idle timeout are counted; busy ones are not.
    fn idle_timeouts_are_counted(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config().idle_timeout(Duration::from_millis(50)).build();
        let server = start_server(&event_loop, config, Recording::new(&rec));
        let mut idle = connect(addr_of(&server));
        read_to_eof(&mut idle, WAIT);
        rec.wait_disconnects(1, WAIT);
        assert_eq!(server.metrics().idle_timeouts, 1);
    }

    /// Sends refused for backpressure are counted, whichever thread sent them.
    fn backpressure_refusals_are_counted(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let refused = std::sync::Arc::new(Shared::new(0u64));
        let r = std::sync::Arc::clone(&refused);
        let frame = vec![b'x'; 16 * 1024];
        let handler = Recording::new(&rec).on_connect(move |ctx, conn| {
            // Nothing is written before the loop's turn ends, so the queue fills here.
            loop {
                match ctx.send_to(conn, &frame) {
                    Ok(()) => continue,
                    Err(e) => {
                        assert!(
                            matches!(e.downcast_ref::<SendError>(), Some(SendError::Backpressure)),
                            "{e:?}"
                        );
                        r.update(|n| *n += 1);
                        return Ok(());
                    }
                }
            }
        });
        let config = server_config()
            .high_watermark(64 * 1024)
            .low_watermark(16 * 1024)
            .build();
        let server = start_server(&event_loop, config, handler);
        let _clients: Vec<_> = (0..2).map(|_| connect(addr_of(&server))).collect();
        refused.wait_until(WAIT, "two refusals", |n| *n == 2);
        let id = rec.wait_conn(0, WAIT);
        let sender = server.context().sender(id).expect("open");
        // One more refusal from a user thread (its queue is at or above the high mark
        // until the client reads, which it never does).
        let from_thread = std::thread::spawn(move || sender.send(b"more")).join().unwrap();
        let refusals = server.metrics().backpressure_refusals;
        match from_thread {
            Err(SendError::Backpressure) => assert_eq!(refusals, 3),
            // The kernel took enough of the queue to go below the mark: accepted, not
            // counted.
            Ok(()) => assert_eq!(refusals, 2),
            Err(e) => panic!("unexpected refusal {e:?}"),
        }
    }

    /// `event_loop.metrics()`: connections held over every server, driver counters that
    /// moved, timers fired and closures run.
    fn event_loop_metrics_sum_the_loops(backend: Backend) {
        let event_loop = event_loop(backend);
        let a = start_server(&event_loop, server_config().build(), Echo::new());
        let b = start_server(&event_loop, server_config().build(), Echo::new());
        let mut clients: Vec<_> = (0..3).map(|_| connect(addr_of(&a))).collect();
        clients.extend((0..2).map(|_| connect(addr_of(&b))));
        for c in &mut clients {
            c.write_all(b"hi").unwrap();
            read_exact_within(c, 2, WAIT);
        }
        poll_until(WAIT, "5 connections held", || event_loop.metrics().connections == 5);
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        event_loop.try_schedule_once(Duration::ZERO, move || tx.send(()).unwrap()).unwrap();
        event_loop.post(move || tx2.send(()).unwrap()).unwrap();
        for _ in 0..2 {
            rx.recv_timeout(WAIT).expect("ran");
        }
        poll_until(WAIT, "the timer and the closure counted", || {
            let m = event_loop.metrics();
            m.timers_fired >= 1 && m.tasks_run >= 1
        });
        let m = event_loop.metrics();
        assert!(m.driver.enters > 0, "{m:?}");
        match backend {
            Backend::Uring => assert!(m.driver.cqes > 0 && m.driver.sqes > 0, "{m:?}"),
            _ => assert!(m.driver.events > 0, "{m:?}"),
        }
        assert_eq!(m.task_panics, 0);
        let per_loop: usize = event_loop.handles().iter().map(|h| h.metrics().connections).sum();
        assert_eq!(per_loop, 5);
        drop(clients);
        poll_until(WAIT, "connections closed", || event_loop.metrics().connections == 0);
    }
}
