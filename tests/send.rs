//! Contract 3: a sent frame is queued whole or refused whole; frames from one thread arrive
//! in order; frames from different threads never interleave on the wire; an empty frame is
//! a no-op. Plus the refusals: `FrameTooLarge`, `Closed`, `ConnectionNotFound`.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::thread;

const SENDERS: usize = 8;
const MIN_FRAMES: u32 = 300;
const HEADER: usize = 9;

/// Frame `seq` of sender `thread`: `[thread][seq u32][len u32][payload]`, the payload a
/// pattern only that frame has.
fn frame(thread: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER + len);
    f.push(thread);
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&(len as u32).to_le_bytes());
    f.extend_from_slice(&pattern(((thread as u64) << 32) | seq as u64, len));
    f
}

#[derive(Debug, Default)]
struct SendState {
    /// `on_drained` calls so far.
    drained: u64,
    /// Sender threads that have been refused with `Backpressure` at least once.
    refused_threads: usize,
    /// Frames each finished sender thread sent.
    totals: Vec<Option<u32>>,
}

backend_matrix! {
    /// Eight threads send numbered frames of random sizes through one connection's
    /// `ConnSender`, retrying on `Backpressure` once `on_drained` fires. The client holds
    /// off reading until every thread has been refused at least once, then checks that
    /// every frame arrives whole, uninterleaved, and in each thread's order.
    fn eight_threads_frames_whole_and_in_order(backend: Backend) {
        let event_loop = event_loop(backend);
        let state = Arc::new(Shared::new(SendState {
            totals: vec![None; SENDERS],
            ..SendState::default()
        }));
        let rec = Recorder::shared();
        let st = Arc::clone(&state);
        let handler = Recording::new(&rec).on_drained(move |_, _| {
            st.update(|s| s.drained += 1);
            Ok(())
        });
        let config = server_config()
            .high_watermark(64 * 1024)
            .low_watermark(16 * 1024)
            .build();
        let server = start_server(&event_loop, config, handler);
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        let sender = server.context().sender(id).expect("sender of an open connection");

        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                let sender = sender.clone();
                let state = Arc::clone(&state);
                thread::spawn(move || {
                    let mut rng = Rng::new(t as u64);
                    let mut refused = false;
                    let mut seq = 0u32;
                    while seq < MIN_FRAMES || !refused {
                        let f = frame(t as u8, seq, rng.range(0, 3000));
                        loop {
                            let before = state.with(|s| s.drained);
                            match sender.send(&f) {
                                Ok(()) => break,
                                Err(SendError::Backpressure) => {
                                    if !refused {
                                        refused = true;
                                        state.update(|s| s.refused_threads += 1);
                                    }
                                    state.wait_until(WAIT, "on_drained after Backpressure", |s| {
                                        s.drained > before
                                    });
                                }
                                Err(e) => panic!("thread {t} frame {seq}: {e}"),
                            }
                        }
                        seq += 1;
                    }
                    state.update(|s| s.totals[t] = Some(seq));
                })
            })
            .collect();

        // Not reading lets the queue fill up: every sender meets Backpressure.
        state.wait_until(WAIT, "every sender refused with Backpressure", |s| {
            s.refused_threads == SENDERS
        });
        assert!(
            sender.peak_queued_bytes() < 64 * 1024 + HEADER + 3000,
            "queue grew past the high watermark plus one frame: {}",
            sender.peak_queued_bytes()
        );

        let mut next = vec![0u32; SENDERS];
        let mut header = [0u8; HEADER];
        loop {
            let done = state.with(|s| {
                s.totals
                    .iter()
                    .zip(&next)
                    .all(|(total, got)| *total == Some(*got))
            });
            if done {
                break;
            }
            read_into_within(&mut client, &mut header, WAIT);
            let t = header[0] as usize;
            let seq = u32::from_le_bytes(header[1..5].try_into().unwrap());
            let len = u32::from_le_bytes(header[5..9].try_into().unwrap()) as usize;
            assert!(t < SENDERS && len <= 3000, "corrupt frame header {header:?}");
            assert_eq!(seq, next[t], "frames of thread {t} out of order");
            let payload = read_exact_within(&mut client, len, WAIT);
            assert_bytes_eq(
                &payload,
                &frame(t as u8, seq, len)[HEADER..],
                &format!("payload of thread {t} frame {seq}"),
            );
            next[t] += 1;
        }
        for s in senders {
            s.join().expect("sender thread");
        }
        // Nothing more than the counted frames.
        client.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
        let mut extra = [0u8; 1];
        match client.read(&mut extra) {
            Err(e) if is_timeout(&e) => {}
            other => panic!("unexpected bytes after the last frame: {other:?}"),
        }
        let drained = state.with(|s| s.drained);
        assert!(drained >= 1, "on_drained must fire after Backpressure");
        assert!(
            sender.peak_queued_bytes() < 64 * 1024 + HEADER + 3000,
            "queue grew past the high watermark plus one frame: {}",
            sender.peak_queued_bytes()
        );
        rec.assert_no_violations();
    }

    /// An empty frame queues nothing and sends nothing.
    fn empty_frame_is_a_no_op(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        let sender = server.context().sender(id).unwrap();
        sender.send(&[]).expect("an empty frame is accepted");
        server.context().send_to(id, &[]).expect("an empty frame is accepted");
        assert_eq!(sender.queued_bytes(), 0);
        assert_eq!(sender.peak_queued_bytes(), 0, "an empty frame must not be queued");
        sender.send(b"x").unwrap();
        assert_eq!(read_exact_within(&mut client, 1, WAIT), b"x");
        sender.close();
        assert_eq!(read_to_eof(&mut client, WAIT), b"", "nothing but the one byte");
        rec.wait_closed(id, WAIT);
        assert!(
            !rec.trace(id).events.is_empty() && rec.trace(id).errors().is_empty(),
            "{:?}",
            rec.trace(id).events
        );
    }

    /// A frame over `max_frame` is refused whole with `FrameTooLarge` and leaves nothing
    /// in the queue; a frame of exactly `max_frame` goes through.
    fn frame_too_large_is_refused_whole(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config().max_frame(1000).build();
        let server = start_server(&event_loop, config, Recording::new(&rec));
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        let sender = server.context().sender(id).unwrap();
        let big = pattern(1, 1001);
        match sender.send(&big) {
            Err(SendError::FrameTooLarge { len, max }) => {
                assert_eq!((len, max), (1001, 1000));
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        // As in mill-net, `send_to` fails with the `SendError` itself.
        let e = server.context().send_to(id, &big).expect_err("send_to of a large frame");
        assert!(
            matches!(
                e.downcast_ref::<SendError>(),
                Some(SendError::FrameTooLarge { len: 1001, max: 1000 })
            ),
            "{e:?}"
        );
        assert_eq!(sender.queued_bytes(), 0, "a refused frame must queue nothing");
        assert_eq!(sender.peak_queued_bytes(), 0, "a refused frame must queue nothing");
        let exact = pattern(2, 1000);
        sender.send(&exact).expect("a frame of exactly max_frame");
        sender.send(b"end").unwrap();
        sender.close_gracefully();
        let got = read_to_eof(&mut client, WAIT);
        let mut want = exact.clone();
        want.extend_from_slice(b"end");
        assert_bytes_eq(&got, &want, "only the accepted frames reach the peer");
    }

    /// After `close`, sends fail with `Closed`; after the connection is gone, `send_to`
    /// fails with `ConnectionNotFound`, also for an id that never existed, and never
    /// reaches a newer connection.
    fn send_after_close_and_stale_ids(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let ctx = server.context();
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        let sender = ctx.sender(id).unwrap();
        sender.send(b"last").unwrap();
        // Written at once (the socket has room), then closed without lingering.
        sender.close();
        assert!(sender.is_closed());
        assert!(
            matches!(sender.send(b"more"), Err(SendError::Closed)),
            "send after close must be refused with Closed"
        );
        assert!(
            matches!(sender.send(b""), Err(SendError::Closed)),
            "an empty send after close must be refused with Closed too, as in mill-net"
        );
        assert_eq!(read_to_eof(&mut client, WAIT), b"last");
        rec.wait_closed(id, WAIT);
        assert!(matches!(sender.send(b"more"), Err(SendError::Closed)));
        let e = ctx.send_to(id, b"more").expect_err("send_to a closed id");
        assert!(
            matches!(network_error(&*e), NetworkError::ConnectionNotFound(x) if *x == id),
            "{e}"
        );
        assert!(ctx.sender(id).is_none(), "no sender for a closed id");

        // A newer connection never receives what is sent to the old id.
        let mut newer = connect(addr_of(&server));
        let newer_id = rec.wait_peer(newer.local_addr().unwrap(), WAIT);
        assert_ne!(newer_id, id, "ids are never reused");
        assert!(ctx.send_to(id, b"stale").is_err());
        let never = ConnectionId::new(u64::MAX);
        let e = ctx.send_to(never, b"x").expect_err("send_to an id that never existed");
        assert!(matches!(network_error(&*e), NetworkError::ConnectionNotFound(_)), "{e}");
        ctx.send_to(newer_id, b"fresh").unwrap();
        assert_eq!(read_exact_within(&mut newer, 5, WAIT), b"fresh");
        newer.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
        let mut extra = [0u8; 8];
        match newer.read(&mut extra) {
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            other => panic!("the newer connection got unexpected bytes: {other:?}"),
        }
        newer.write_all(b"bye").unwrap();
        rec.wait_bytes(newer_id, 3, WAIT);
    }
}
