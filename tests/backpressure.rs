//! Contract 4: while queued bytes are at or above the high watermark a send returns
//! `Backpressure` and queues nothing; `on_drained` fires once the queue falls to the low
//! watermark after a refusal; a slow reader never grows the queue past the high watermark
//! plus one frame.

mod common;

use common::*;
use std::io::Read;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const HIGH: usize = 256 * 1024;
const LOW: usize = 64 * 1024;
const MAX_FRAME: usize = 32 * 1024;
const TOTAL: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
struct Drains {
    drained: u64,
    refusals: u64,
}

/// Length of the block the transferred stream repeats: not a power of two, so a lost or
/// repeated frame (random sizes) cannot line the stream up with itself again.
const BLOCK: usize = 1024 * 1024 + 7;

/// The bytes of the stream from `pos` on, `len` of them.
fn stream_at(block: &[u8], pos: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut at = pos % BLOCK;
    while out.len() < len {
        let n = (len - out.len()).min(BLOCK - at);
        out.extend_from_slice(&block[at..at + n]);
        at = 0;
    }
    out
}

/// Whether `chunk` is the stream's bytes at `pos`.
fn matches_stream(block: &[u8], pos: usize, chunk: &[u8]) -> bool {
    let at = pos % BLOCK;
    let first = chunk.len().min(BLOCK - at);
    chunk[..first] == block[at..at + first]
        && (first == chunk.len() || chunk[first..] == stream_at(block, 0, chunk.len() - first)[..])
}

/// Sends the first `total` bytes of the stream as frames of random sizes up to
/// `MAX_FRAME` through `sender`, retrying each refused frame once `on_drained` has fired.
fn produce(sender: ConnSender, state: Arc<Shared<Drains>>, block: Arc<Vec<u8>>, total: usize) {
    let mut rng = Rng::new(7);
    let mut sent = 0;
    while sent < total {
        let len = rng.range(1, MAX_FRAME).min(total - sent);
        let at = sent % BLOCK;
        let owned;
        let frame: &[u8] = if at + len <= BLOCK {
            &block[at..at + len]
        } else {
            owned = stream_at(&block, sent, len);
            &owned
        };
        loop {
            let before = state.with(|s| s.drained);
            match sender.send(frame) {
                Ok(()) => break,
                Err(SendError::Backpressure) => {
                    state.update(|s| s.refusals += 1);
                    state.wait_until(WAIT, "on_drained after a refusal", |s| s.drained > before);
                }
                Err(e) => panic!("send failed after {sent} bytes: {e}"),
            }
        }
        sent += len;
    }
}

backend_matrix! {
    /// 64 MiB to a reader that reads 64 KiB at a time with a pause between reads: the
    /// bytes arrive intact, the producer is refused and resumed through `on_drained`, and
    /// the queue never holds more than the high watermark plus one frame.
    fn slow_reader_bounded_queue(backend: Backend) {
        let event_loop = event_loop(backend);
        let state = Arc::new(Shared::new(Drains::default()));
        let rec = Arc::new(Recorder::counting());
        let st = Arc::clone(&state);
        let handler = Recording::new(&rec).on_drained(move |_, _| {
            st.update(|s| s.drained += 1);
            Ok(())
        });
        let config = server_config()
            .high_watermark(HIGH)
            .low_watermark(LOW)
            .max_frame(MAX_FRAME)
            .build();
        let server = start_server(&event_loop, config, handler);
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        let sender = server.context().sender(id).unwrap();
        let block = Arc::new(pattern(5, BLOCK));
        let producer = {
            let sender = sender.clone();
            let state = Arc::clone(&state);
            let block = Arc::clone(&block);
            thread::spawn(move || produce(sender, state, block, TOTAL))
        };

        // Reading starts only once the producer has been refused: the queue did fill.
        state.wait_until(WAIT, "a send refused with Backpressure", |s| s.refusals > 0);
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        client.set_read_timeout(Some(WAIT)).unwrap();
        while got < TOTAL {
            let n = match client.read(&mut buf) {
                Ok(0) => panic!("EOF after {got} of {TOTAL} bytes"),
                Ok(n) => n,
                Err(e) => panic!("read failed after {got} of {TOTAL} bytes: {e}"),
            };
            assert!(
                matches_stream(&block, got, &buf[..n]),
                "bytes {got}..{} differ from what was sent",
                got + n
            );
            got += n;
            assert!(
                sender.queued_bytes() <= HIGH + MAX_FRAME,
                "queue at {} bytes, past the high watermark plus one frame",
                sender.queued_bytes()
            );
            // Pacing: this reader is slower than the producer.
            thread::sleep(Duration::from_millis(1));
        }
        producer.join().expect("producer");
        assert_eq!(got, TOTAL);
        let peak = sender.peak_queued_bytes();
        assert!(
            peak <= HIGH + MAX_FRAME,
            "peak queue {peak} bytes, past the high watermark ({HIGH}) plus one frame"
        );
        assert!(peak >= HIGH, "the reader was slow enough to fill the queue: peak {peak}");
        let (drained, refusals) = state.with(|s| (s.drained, s.refusals));
        assert!(refusals > 0, "a slow reader must cause Backpressure");
        assert!(drained > 0, "on_drained must follow Backpressure");
        assert!(
            drained <= refusals,
            "on_drained fires only after a refusal ({drained} drains, {refusals} refusals)"
        );
        rec.assert_no_violations();
    }

    /// `on_drained` does not fire without a refusal; after a refusal it fires once the
    /// reader empties the queue to the low watermark. A refused frame is not queued.
    fn drained_follows_refusal_only(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config()
            .high_watermark(64 * 1024)
            .low_watermark(16 * 1024)
            .build();
        let server = start_server(&event_loop, config, Recording::new(&rec));

        // Below the watermark: on_writable, never on_drained.
        let mut quiet = connect(addr_of(&server));
        let quiet_id = rec.wait_peer(quiet.local_addr().unwrap(), WAIT);
        server.context().send_to(quiet_id, &pattern(1, 10_000)).unwrap();
        rec.wait(WAIT, "on_writable after the queue emptied", |r| {
            r.trace(quiet_id).events.contains(&Ev::Writable)
        });
        assert_eq!(read_exact_within(&mut quiet, 10_000, WAIT), pattern(1, 10_000));

        // Fill past the high watermark while the client does not read.
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        let sender = server.context().sender(id).unwrap();
        let frame = pattern(2, 8 * 1024);
        let mut accepted = 0usize;
        loop {
            match sender.send(&frame) {
                Ok(()) => accepted += 1,
                Err(SendError::Backpressure) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(accepted < 100_000, "never refused");
        }
        // Refused only once the queue reached the high watermark, and never past it by
        // more than one frame. (The loop may be writing meanwhile, so the queue is read
        // through its peak.)
        let peak = sender.peak_queued_bytes();
        assert!(
            peak >= 64 * 1024 && peak <= 64 * 1024 + frame.len(),
            "refused with a peak of {peak} queued bytes"
        );
        // Whatever is refused is never queued: the client gets exactly the accepted
        // frames (checked below, up to EOF).
        for _ in 0..3 {
            if sender.send(&frame).is_ok() {
                accepted += 1;
            }
        }

        let got = read_exact_within(&mut client, accepted * frame.len(), WAIT);
        for (i, chunk) in got.chunks(frame.len()).enumerate() {
            assert_bytes_eq(chunk, &frame, &format!("frame {i}"));
        }
        rec.wait(WAIT, "on_drained after the reader emptied the queue", |r| {
            r.trace(id).events.contains(&Ev::Drained)
        });
        let trace = rec.trace(id);
        assert_eq!(
            trace.events.iter().filter(|e| **e == Ev::Drained).count(),
            1,
            "one on_drained per refusal episode: {:?}",
            trace.events
        );
        // Nothing beyond the accepted frames (refused ones were not queued).
        sender.close();
        assert_eq!(read_to_eof(&mut client, WAIT), b"");
        rec.wait_closed(id, WAIT);
        drop(quiet);
        rec.wait_closed(quiet_id, WAIT);
        assert!(
            !rec.trace(quiet_id).events.contains(&Ev::Drained),
            "on_drained without a refusal: {:?}",
            rec.trace(quiet_id).events
        );
        rec.assert_all_closed_once();
    }

    /// `low_watermark > high_watermark` is rejected with `WatermarksInverted`, by the
    /// builder, the server and the client; equal watermarks are fine.
    fn inverted_watermarks_rejected(backend: Backend) {
        let event_loop = event_loop(backend);
        let inverted = server_config().high_watermark(1000).low_watermark(2000);
        assert_eq!(
            inverted.clone().try_build().unwrap_err(),
            ConfigError::WatermarksInverted { low: 2000, high: 1000 }
        );
        let e = TcpServer::new(inverted.build(), Silent).expect_err("inverted watermarks");
        assert!(
            matches!(
                network_error(&*e),
                NetworkError::Configuration(ConfigError::WatermarksInverted { low: 2000, high: 1000 })
            ),
            "{e}"
        );
        let client_config = TcpClientConfig {
            high_watermark: 1000,
            low_watermark: 2000,
            ..TcpClientConfig::default()
        };
        let e = TcpClient::connect(addr_of(&start_server(
            &event_loop,
            server_config().build(),
            Silent,
        )), client_config, Silent)
        .expect_err("inverted client watermarks");
        assert!(
            matches!(
                network_error(&*e),
                NetworkError::Configuration(ConfigError::WatermarksInverted { low: 2000, high: 1000 })
            ),
            "{e}"
        );
        // Equal watermarks work.
        let rec = Recorder::shared();
        let config = server_config().high_watermark(4096).low_watermark(4096).build();
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let mut client = connect(addr_of(&server));
        std::io::Write::write_all(&mut client, b"ok").unwrap();
        assert_eq!(read_exact_within(&mut client, 2, WAIT), b"ok");
    }
}
