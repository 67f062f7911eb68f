//! `EventLoopBuilder::dispatch_on_run`: loops that dispatch nothing until `run()`
//! (mill-io's constructors build them), and loops that serve from `build()` (the builder's
//! default).
//!
//! Whether something did *not* happen before `run()` can only be checked over a window;
//! [`QUIET`] bounds it. An ungated loop does each of these things within microseconds, so
//! the window only bounds how long a passing test takes.

mod common;
use common::*;

use std::io::Write;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How long a held loop is watched for dispatching something it must not.
const QUIET: Duration = Duration::from_millis(300);

/// Runs `f` on a thread and fails if it does not return within [`SHORT_WAIT`] (the
/// acknowledgement deadline of a hanging stop or close is 30 s).
fn within_short_wait(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(SHORT_WAIT)
        .unwrap_or_else(|_| panic!("{what} did not return within {SHORT_WAIT:?}"));
}

fn held(backend: Backend) -> Arc<EventLoop> {
    Arc::new(event_loop_with(backend, |b| b.dispatch_on_run(true)))
}

backend_matrix! {
    fn a_held_loop_dispatches_nothing_before_run(backend: Backend) {
        let event_loop = held(backend);
        let server_rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&server_rec));
        // A peer the kernel puts in the backlog, with bytes waiting.
        let mut peer = connect(addr_of(&server));
        peer.write_all(b"early").expect("write to the backlog");
        // A client, a posted closure and a timer, all before run().
        let client_rec = Recorder::shared();
        let mut client = TcpClient::connect(
            addr_of(&server),
            TcpClientConfig::default(),
            Recording::new(&client_rec),
        )
        .expect("TcpClient::connect");
        client.send(b"queued").expect("send before the connect");
        client.start(&event_loop).expect("TcpClient::start");
        let (posted_tx, posted) = mpsc::channel();
        event_loop.post(move || { let _ = posted_tx.send(()); }).expect("post");
        let (timer_tx, timer) = mpsc::channel();
        event_loop.schedule_once(Duration::from_millis(1), move || { let _ = timer_tx.send(()); });

        assert!(
            posted.recv_timeout(QUIET).is_err(),
            "{backend}: a posted closure ran before run()"
        );
        assert!(timer.try_recv().is_err(), "{backend}: a timer fired before run()");
        assert_eq!(server_rec.connects(), 0, "{backend}: the server's on_connect before run()");
        assert_eq!(client_rec.connects(), 0, "{backend}: the client's on_connect before run()");
        assert!(server_rec.errors().is_empty(), "{backend}: {:?}", server_rec.errors());
        assert!(client_rec.errors().is_empty(), "{backend}: {:?}", client_rec.errors());
        assert_eq!(event_loop.pending_timers(), 1, "{backend}: the timer is kept");

        let runner = {
            let event_loop = Arc::clone(&event_loop);
            std::thread::spawn(move || event_loop.run())
        };
        posted.recv_timeout(WAIT).expect("the posted closure runs once run() is called");
        timer.recv_timeout(WAIT).expect("the timer fires once run() is called");
        client_rec.wait_connects(1, WAIT);
        // The backlog's peer and the client, both accepted; their bytes delivered.
        server_rec.wait_connects(2, WAIT);
        server_rec.wait(WAIT, "both peers' bytes", |r| {
            let mut got: Vec<Vec<u8>> = r.conns.values().map(|t| t.data.clone()).collect();
            got.sort();
            got == vec![b"early".to_vec(), b"queued".to_vec()]
        });

        event_loop.stop();
        runner.join().expect("run() returns").expect("run() is Ok");
        drop(client);
        server_rec.assert_all_closed_once();
        client_rec.assert_all_closed_once();
    }

    fn stop_and_close_on_a_held_loop_do_not_wait(backend: Backend) {
        let event_loop = held(backend);
        let server_rec = Recorder::shared();
        let server = Arc::new(start_server(
            &event_loop,
            server_config().build(),
            Recording::new(&server_rec),
        ));
        let addr = addr_of(&server);
        let _backlogged = connect(addr);
        let client_rec = Recorder::shared();
        let mut client = TcpClient::connect(addr, TcpClientConfig::default(), Recording::new(&client_rec))
            .expect("TcpClient::connect");
        client.start(&event_loop).expect("TcpClient::start");
        let (posted_tx, posted) = mpsc::channel();
        event_loop.post(move || { let _ = posted_tx.send(()); }).expect("post");
        event_loop.schedule_once(Duration::from_millis(1), || panic!("a timer fired"));

        // TcpServer::stop acts on the held loop: the listening socket is closed now.
        let stopping = Arc::clone(&server);
        within_short_wait("TcpServer::stop on a held loop", move || {
            stopping.stop().expect("stop");
        });
        std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("{backend}: the stopped server still holds {addr}: {e}"));
        // The client's connect never started: nothing to wait for.
        let sender = client.sender();
        within_short_wait("close() of a client on a held loop", move || sender.close());
        assert!(client.send(b"x").is_err(), "{backend}: a closed client accepts frames");
        within_short_wait("disconnect() and drop of a client on a held loop", move || {
            client.disconnect().expect("disconnect");
            drop(client);
        });

        // Stopping a loop that never ran dispatches nothing and does not hang; nor does
        // run() afterwards.
        let stopping = Arc::clone(&event_loop);
        within_short_wait("EventLoop::stop before run()", move || stopping.stop());
        within_short_wait("run() after stop()", {
            let event_loop = Arc::clone(&event_loop);
            move || event_loop.run().expect("run() after stop() is Ok")
        });
        assert!(posted.try_recv().is_err(), "{backend}: a posted closure ran without run()");
        assert_eq!(event_loop.pending_timers(), 0, "{backend}: the timer was dropped");
        assert_eq!(server_rec.connects() + client_rec.connects(), 0, "{backend}");
        assert!(server_rec.errors().is_empty(), "{backend}: {:?}", server_rec.errors());
        assert!(client_rec.errors().is_empty(), "{backend}: {:?}", client_rec.errors());
    }

    fn dropping_a_held_loop_that_never_ran_does_not_hang(backend: Backend) {
        let event_loop = held(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let _backlogged = connect(addr_of(&server));
        event_loop.schedule_repeating(Duration::from_millis(1), || panic!("a timer fired"));
        // Dropping stops the loop and joins its threads.
        within_short_wait("dropping a held loop", move || drop(event_loop));
        assert_eq!(rec.connects(), 0, "{backend}");
        assert!(rec.errors().is_empty(), "{backend}: {:?}", rec.errors());
        drop(server);
    }

    fn builder_loops_serve_from_build(backend: Backend) {
        let event_loop = event_loop(backend);
        let (tx, rx) = mpsc::channel();
        event_loop.post(move || { let _ = tx.send(()); }).expect("post");
        rx.recv_timeout(WAIT)
            .expect("a builder loop runs posted closures without run()");
        event_loop.stop();
    }
}

/// mill-io's constructors build held loops (on the backend `RINGMILL_BACKEND` or `Auto`
/// picks; the behaviour itself is checked on both backends above).
#[test]
fn mill_io_constructors_dispatch_on_run() {
    let loops: [(&str, Arc<EventLoop>); 3] = [
        (
            "new",
            Arc::new(EventLoop::new(2, 1024, 10).expect("EventLoop::new")),
        ),
        (
            "new_low_latency",
            Arc::new(EventLoop::new_low_latency(1024, 10).expect("new_low_latency")),
        ),
        ("default", Arc::new(EventLoop::default())),
    ];
    for (name, event_loop) in loops {
        let (tx, rx) = mpsc::channel();
        event_loop
            .post(move || {
                let _ = tx.send(());
            })
            .expect("post");
        assert!(
            rx.recv_timeout(QUIET).is_err(),
            "EventLoop::{name}: a posted closure ran before run()"
        );
        let runner = {
            let event_loop = Arc::clone(&event_loop);
            std::thread::spawn(move || event_loop.run())
        };
        rx.recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("EventLoop::{name}: the closure never ran after run()"));
        event_loop.stop();
        runner.join().expect("run() returns").expect("run() is Ok");
    }
}
