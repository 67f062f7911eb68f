//! Sends made on the connection's own loop thread (from `on_data`, a posted closure, a
//! timer) go straight onto that loop's flush list; sends from other threads go through
//! its inbox. Either way a reply arrives, and each sender's frames arrive in the order it
//! sent them.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Answers each line from `on_data` itself, from a closure posted to the connection's
/// loop, and from a timer on that loop.
struct Replies;

impl NetworkHandler for Replies {
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        if !data.contains(&b'\n') {
            return Ok(());
        }
        ctx.send_to(conn, b"from on_data\n")?;
        let handle = ctx.loop_of(conn).expect("open");
        assert!(
            handle.is_current(),
            "callbacks run on the connection's loop"
        );
        let sender = ctx.sender(conn).expect("open");
        handle.post(move || sender.send(b"from a posted closure\n").expect("accepted"))?;
        let sender = ctx.sender(conn).expect("open");
        ctx.schedule_once_for(conn, Duration::from_millis(1), move || {
            sender.send(b"from a timer\n").expect("accepted")
        })?;
        Ok(())
    }
}

/// Reads `n` lines within the test's deadline.
fn read_lines(stream: &std::net::TcpStream, n: usize) -> Vec<String> {
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut reader = BufReader::new(stream);
    (0..n)
        .map(|i| {
            let mut line = String::new();
            let got = reader.read_line(&mut line);
            assert!(
                matches!(got, Ok(len) if len > 0),
                "line {i} of {n} did not arrive: {got:?}"
            );
            line.trim_end().to_string()
        })
        .collect()
}

/// Sends `FRAMES` frames from the loop thread (one per byte the client sends, from
/// `on_data`) while a thread of its own sends `FRAMES` others to the same connection.
#[derive(Default)]
struct TwoSenders {
    next: AtomicUsize,
}

const FRAMES: usize = 2000;

impl NetworkHandler for TwoSenders {
    fn on_connect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let sender = ctx.sender(conn).expect("open");
        thread::spawn(move || {
            for i in 0..FRAMES {
                let frame = format!("B{i:06}\n");
                // Far below the high watermark: never refused.
                sender.send(frame.as_bytes()).expect("accepted");
            }
        });
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        // One frame per byte the client sent, numbered in order.
        for _ in data {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            ctx.send_to(conn, format!("A{i:06}\n").as_bytes())?;
        }
        Ok(())
    }
}

backend_matrix! {
    /// A reply sent from `on_data`, from a closure posted to the connection's loop and
    /// from a timer on it all arrive.
    fn replies_from_the_loop_thread_arrive(backend: Backend) {
        let event_loop = event_loop(backend);
        let server = start_server(&event_loop, server_config().build(), Replies);
        let mut client = connect(addr_of(&server));
        client.write_all(b"hello\n").expect("write");
        let mut lines = read_lines(&client, 3);
        lines.sort();
        assert_eq!(lines, ["from a posted closure", "from a timer", "from on_data"]);
        server.stop().expect("server stop");
        event_loop.stop();
    }

    /// Frames sent on the loop thread and frames sent by another thread at the same time:
    /// all arrive whole, and each sender's in the order it sent them.
    fn loop_and_other_thread_sends_keep_each_senders_order(backend: Backend) {
        let event_loop = event_loop(backend);
        let server = start_server(&event_loop, server_config().build(), TwoSenders::default());
        let mut client = connect(addr_of(&server));
        let reader = client.try_clone().expect("clone");
        let writer = thread::spawn(move || {
            for _ in 0..FRAMES {
                client.write_all(b"x").expect("write");
            }
            client
        });
        let lines = read_lines(&reader, 2 * FRAMES);
        let _client = writer.join().expect("writer");
        let mut next = [0usize; 2];
        for line in &lines {
            let (tag, number) = line.split_at(1);
            let which = match tag {
                "A" => 0,
                "B" => 1,
                _ => panic!("a frame was torn: {line:?}"),
            };
            let number: usize = number.parse().unwrap_or_else(|_| panic!("torn frame {line:?}"));
            assert_eq!(number, next[which], "sender {tag}'s frames out of order");
            next[which] += 1;
        }
        assert_eq!(next, [FRAMES, FRAMES]);
        server.stop().expect("server stop");
        event_loop.stop();
    }
}
