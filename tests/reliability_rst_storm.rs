//! Issue 5, item 7: an RST storm. 10,000 connections abort with `SO_LINGER` 0 while data
//! moves both ways (the client is writing, the server is echoing and pushing 64 KiB at
//! every new connection); a tenth of them abort right after the handshake, racing the
//! accept. Pass criteria: `on_disconnect` count equals `on_connect` count, nothing out of
//! order, every connection that saw data was established, and the process's descriptor
//! count is back to its baseline. Runs in a child process (alone, so the descriptor count
//! is exact).

mod common;
mod common_child;
mod rel_support;

use common::*;
use common_child::ChildTest;
use rel_support::*;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

const CONNECTIONS: usize = 10_000;
const THREADS: usize = 8;
/// Connections each client thread keeps open at once.
const WINDOW: usize = 16;

backend_matrix! {
    fn rst_storm_leaves_no_connection_and_no_descriptor(backend: Backend) {
        if common_child::role().as_deref() != Some("rst-storm") {
            let mut child = ChildTest::spawn(
                &test_name("rst_storm_leaves_no_connection_and_no_descriptor", backend),
                "rst-storm",
                &[],
            );
            let summary = child.expect("summary", Duration::from_secs(240));
            println!("{backend}: {summary}");
            child.wait_success(WAIT);
            return;
        }
        ensure_nofile(8192, 4096);
        let event_loop = event_loop(backend);
        let rec = Arc::new(Recorder::counting());
        let burst: Arc<Vec<u8>> = Arc::new(pattern(7, 64 * 1024));
        let handler = Recording::echo(&rec).on_connect(move |ctx, id| {
            // Refused or not, the connection is busy sending when the reset comes.
            let _ = ctx.send_to(id, &burst);
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let addr = addr_of(&server);

        // Warm-up, so lazily created process state is not counted as a leak.
        {
            let mut s = connect(addr);
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            reset_close(s);
            rec.wait(WAIT, "the warm-up connection to close", |r| r.disconnects == 1);
        }
        let fds_before = fd_list();
        let threads_before = thread_count();

        let clients: Vec<_> = (0..THREADS)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut rng = Rng::new(t as u64 + 1);
                    let mut open: VecDeque<TcpStream> = VecDeque::new();
                    let mut read_some = 0usize;
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..CONNECTIONS / THREADS {
                        let mut s = connect(addr);
                        if rng.range(0, 9) == 0 {
                            // Abort at once, racing the accept.
                            reset_close(s);
                            continue;
                        }
                        let out = pattern(rng.next_u64(), rng.range(1, 32 * 1024));
                        let _ = s.write_all(&out);
                        // Wait for the server's first bytes: it is established and sending.
                        match s.read(&mut buf) {
                            Ok(n) if n > 0 => read_some += 1,
                            other => panic!("no data from the server: {other:?}"),
                        }
                        open.push_back(s);
                        if open.len() >= WINDOW {
                            reset_close(open.pop_front().unwrap());
                        }
                    }
                    for s in open {
                        reset_close(s);
                    }
                    read_some
                })
            })
            .collect();
        let established: usize = clients.into_iter().map(|c| c.join().expect("client thread")).sum();

        rec.wait(Duration::from_secs(60), "every connection closed", |r| {
            r.connects > established && r.disconnects == r.connects
        });
        rec.assert_all_closed_once();
        let (connects, disconnects) = rec.with(|r| (r.connects, r.disconnects));
        assert_eq!(connects, disconnects);
        poll_until(WAIT, "connection_count() to reach 0", || server.connection_count() == 0);
        if !try_poll_until(WAIT, || fd_count() <= fds_before.len()) {
            let now = fd_list();
            let new: Vec<_> = now.iter().filter(|f| !fds_before.contains(f)).take(20).collect();
            panic!("descriptors leaked: {} before, {} after; new: {new:?}", fds_before.len(), now.len());
        }
        poll_until(SHORT_WAIT, "the thread count to return", || thread_count() <= threads_before);
        // Errors may name resets, never anything else.
        rec.with(|r| {
            for e in &r.errors {
                assert!(
                    e.conn.is_some() && e.kind.starts_with("Io("),
                    "unexpected error during the storm: {e:?}"
                );
            }
        });
        let m = server.metrics();
        common_child::report(
            "summary",
            format!(
                "{CONNECTIONS} resets, {connects} on_connect = {disconnects} on_disconnect, \
                 {} accepted, descriptors back to {}",
                m.accepted,
                fds_before.len()
            ),
        );
        server.stop().unwrap();
    }
}
