//! Answers written straight from the received buffer: a frame that `on_data` sends back
//! out of its own `data` is written from there during the receive, with no copy into the
//! connection's queue, and only what the socket does not take is queued. Whichever way a
//! frame goes, the peer gets the frames in the order they were accepted, every byte once.

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Echoes every chunk and counts what the server answered.
struct Echoing;

impl NetworkHandler for Echoing {
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        ctx.send_to(conn, data)
    }
}

/// Answers each chunk with three frames, in an order that mixes both ways: the second
/// half of the chunk (written through when nothing is queued), a separator of its own
/// (queued), then the first half (queued behind the separator). A thread of its own sends
/// frames to the same connection meanwhile. Every accepted frame is logged under one lock
/// around the send, so the log's order is the order the queue accepted them in.
struct Mixed {
    log: Arc<Mutex<Vec<u8>>>,
    /// Payload bytes answered, and side frames sent.
    progress: Arc<Progress>,
}

#[derive(Default)]
struct Progress {
    answered: AtomicUsize,
    side_sent: AtomicUsize,
}

impl Mixed {
    fn send(&self, send: impl FnOnce(&[u8]) -> Result<()>, frame: &[u8]) {
        let mut log = self.log.lock().unwrap();
        send(frame).expect("below the high watermark: accepted");
        log.extend_from_slice(frame);
    }
}

const SIDE_FRAMES: usize = 3000;

impl NetworkHandler for Mixed {
    fn on_connect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let sender = ctx.sender(conn).expect("open");
        let log = Arc::clone(&self.log);
        let progress = Arc::clone(&self.progress);
        thread::spawn(move || {
            for i in 0..SIDE_FRAMES {
                let frame = format!("<side {i}>");
                let mut log = log.lock().unwrap();
                sender.send(frame.as_bytes()).expect("accepted");
                log.extend_from_slice(frame.as_bytes());
                progress.side_sent.fetch_add(1, Ordering::AcqRel);
            }
        });
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        let half = data.len() / 2;
        let to = |frame: &[u8]| ctx.send_to(conn, frame);
        self.send(to, &data[half..]);
        self.send(to, b"|");
        self.send(to, &data[..half]);
        self.progress
            .answered
            .fetch_add(data.len(), Ordering::AcqRel);
        Ok(())
    }
}

backend_matrix! {
    /// A plain echo: every byte comes back in order, and most of them went out through
    /// the write-through path (counted in `bytes_written_through`).
    fn echo_is_written_through(backend: Backend) {
        let event_loop = event_loop(backend);
        let server = start_server(&event_loop, server_config().build(), Echoing);
        let payload = pattern(81, 2 << 20);
        let mut client = connect(addr_of(&server));
        let mut writer = client.try_clone().expect("clone");
        let sent = payload.clone();
        let feeder = thread::spawn(move || {
            for piece in sent.chunks(3000) {
                writer.write_all(piece).expect("write");
            }
        });
        let echoed = read_exact_within(&mut client, payload.len(), WAIT);
        feeder.join().expect("feeder");
        assert_bytes_eq(&echoed, &payload, "echo");
        let total = payload.len() as u64;
        poll_until(WAIT, "bytes counted", || server.metrics().bytes_out == total);
        let m = server.metrics();
        assert!(
            m.bytes_written_through > 0 && m.bytes_written_through <= m.bytes_out,
            "{backend}: {} of {} bytes written through",
            m.bytes_written_through,
            m.bytes_out
        );
        server.stop().expect("server stop");
        event_loop.stop();
    }

    /// Frames written through, frames queued on the loop thread and frames queued from
    /// another thread reach the peer exactly in the order they were accepted.
    fn mixed_frames_keep_the_accepted_order(backend: Backend) {
        let event_loop = event_loop(backend);
        let log = Arc::new(Mutex::new(Vec::new()));
        let progress = Arc::new(Progress::default());
        let handler = Mixed {
            log: Arc::clone(&log),
            progress: Arc::clone(&progress),
        };
        // Far above everything the test sends: no frame is ever refused.
        let config = server_config()
            .high_watermark(64 << 20)
            .low_watermark(1 << 20)
            .build();
        let server = start_server(&event_loop, config, handler);
        let mut client = connect(addr_of(&server));
        let mut writer = client.try_clone().expect("clone");
        // Writes 60 KB pieces (so most chunks are the server's whole 8 KiB, whose second
        // half any backend writes through when the queue is empty) until told to stop or
        // 32 MiB are out (half the high watermark: never refused); returns the count.
        let stop = Arc::new(AtomicBool::new(false));
        let stop_feeding = Arc::clone(&stop);
        let mut feeder = Some(thread::spawn(move || {
            let mut fed = 0usize;
            let mut round = 0;
            while !stop_feeding.load(Ordering::Acquire) && fed < 32 << 20 {
                let piece = pattern(82 + round, 60_000);
                writer.write_all(&piece).expect("write");
                fed += piece.len();
                round += 1;
            }
            fed
        }));
        // Reading all along (so the server's queue stays short), until the side thread is
        // done and some frame was written through: whether the connection's queue is
        // empty when a chunk is answered depends on how the sends and receives interleave,
        // which differs between runs and backends. Then every fed byte must be answered.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        client
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .expect("timeout");
        let deadline = std::time::Instant::now() + WAIT;
        let mut fed = None;
        loop {
            let side_done = progress.side_sent.load(Ordering::Acquire) == SIDE_FRAMES;
            let through = server.metrics().bytes_written_through > 0;
            if fed.is_none() && side_done && through {
                stop.store(true, Ordering::Release);
            }
            if feeder.as_ref().is_some_and(|f| f.is_finished()) {
                let done = feeder.take().expect("checked");
                fed = Some(done.join().expect("feeder"));
            }
            if let Some(fed) = fed {
                if progress.answered.load(Ordering::Acquire) == fed && side_done {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{backend}: {} bytes answered (of {fed:?} fed), {} of {SIDE_FRAMES} side frames \
                 sent, {} bytes written through",
                progress.answered.load(Ordering::Acquire),
                progress.side_sent.load(Ordering::Acquire),
                server.metrics().bytes_written_through
            );
            match client.read(&mut buf) {
                Ok(0) => panic!("{backend}: the server closed the connection"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("{backend}: read: {e}"),
            }
        }
        let log = log.lock().unwrap().clone();
        assert!(got.len() <= log.len(), "{backend}: more arrived than was sent");
        let rest = read_exact_within(&mut client, log.len() - got.len(), WAIT);
        got.extend_from_slice(&rest);
        assert_bytes_eq(&got, &log, "the stream against the order frames were accepted in");
        server.stop().expect("server stop");
        event_loop.stop();
    }

    /// A peer that stops reading: writes through take less and less, then nothing, and
    /// the rest waits in the queue; once the peer reads again every byte arrives in order.
    fn a_peer_that_stops_reading_loses_nothing(backend: Backend) {
        let event_loop = event_loop(backend);
        let config = server_config()
            .high_watermark(64 << 20)
            .low_watermark(1 << 20)
            .build();
        let server = start_server(&event_loop, config, Echoing);
        let payload = pattern(83, 32 << 20);
        let mut client = connect(addr_of(&server));
        let mut writer = client.try_clone().expect("clone");
        let sent = payload.clone();
        let feeder = thread::spawn(move || {
            writer.write_all(&sent).expect("write");
        });
        // Not reading until three quarters of it have reached the server: its answers
        // fill the kernel's buffers (a few MiB each way on loopback), then the
        // connection's queue.
        let most = payload.len() as u64 / 4 * 3;
        poll_until(WAIT, "three quarters of the payload received", || {
            server.metrics().bytes_in >= most
        });
        let queued = server.metrics().bytes_in - server.metrics().bytes_out;
        let echoed = read_exact_within(&mut client, payload.len(), WAIT);
        feeder.join().expect("feeder");
        assert_bytes_eq(&echoed, &payload, "echo after the pause");
        assert!(queued > 0, "{backend}: nothing was waiting while the peer did not read");
        server.stop().expect("server stop");
        event_loop.stop();
    }
}
