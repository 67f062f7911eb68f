//! Issue 5, item 3: slow readers at scale. 200 connections whose clients never read while
//! the server floods them with 16 KiB frames (from another thread, through `ConnSender`),
//! round after round, long after every queue is full.
//!
//! Pass criteria: every connection reaches backpressure, and its queue never holds more
//! than the high watermark plus one frame (`peak_queued_bytes`); frames one byte over
//! `max_frame` are refused whole with `FrameTooLarge`; the process's resident memory is
//! bounded by the watermarks once the queues are full and stays flat while the flood goes
//! on; when the clients finally read, each gets exactly the frames that were accepted, in
//! order, then EOF.

mod common;
mod rel_support;

use common::*;
use rel_support::*;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

const CONNS: usize = 200;
const FRAME: usize = 16 * 1024;
const HIGH: usize = 256 * 1024;
const LOW: usize = 64 * 1024;

/// Frame `k` of connection `c`: (c, k) as 8 bytes, repeated (cheap to make and check).
fn frame(c: usize, k: usize) -> Vec<u8> {
    let tag = (((c as u64) << 32) | k as u64).to_le_bytes();
    tag.repeat(FRAME / tag.len())
}

backend_matrix! {
    fn never_reading_clients_cannot_grow_memory_past_the_watermark(backend: Backend) {
        let _alone = exclusive();
        ensure_nofile(8192, 2048);
        let event_loop = event_loop_with(backend, |b| b.close_linger(Duration::from_secs(60)));
        let rec = Arc::new(Recorder::counting());
        let config = server_config().high_watermark(HIGH).low_watermark(LOW).max_frame(FRAME).build();
        let server = start_server(&event_loop, config, Recording::new(&rec));
        let addr = addr_of(&server);
        let ctx = server.context();

        // Clients with a small receive buffer, so the kernel holds little of the flood.
        let clients: Vec<TcpStream> = (0..CONNS)
            .map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                s.set_recv_buffer_size(8 * 1024).unwrap();
                s.connect_timeout(&addr.into(), WAIT).unwrap();
                let s: TcpStream = s.into();
                s.set_read_timeout(Some(WAIT)).unwrap();
                s
            })
            .collect();
        rec.wait(WAIT, "every connection established", |r| {
            r.conns.values().filter(|t| t.peer.is_some()).count() == CONNS
        });
        let by_peer: std::collections::HashMap<std::net::SocketAddr, ConnectionId> =
            rec.with(|r| r.conns.iter().map(|(id, t)| (t.peer.unwrap(), *id)).collect());
        let senders: Vec<ConnSender> = clients
            .iter()
            .map(|c| ctx.sender(by_peer[&c.local_addr().unwrap()]).expect("sender"))
            .collect();
        let rss_start = rss_kib();

        // Flood until the path is saturated (five paced rounds in a row in which every
        // connection refused every frame, then every loop thread made to finish a turn,
        // then one more such round: queues at the watermark, kernel buffers full; one
        // such round alone can come while the loop is still handing queued bytes to the
        // kernel, after which the queues take frames again, and on a busy machine the
        // loop may not have run at all during five rounds, which a full queue does not
        // show); then 20 more rounds.
        let mut loops_synced = false;
        let mut accepted = vec![0usize; CONNS];
        let mut refused = [false; CONNS];
        let oversized = vec![0u8; FRAME + 1];
        let mut round = 0;
        let mut rss_full = None;
        let mut full_rounds = 0;
        let mut refused_rounds = 0;
        while full_rounds < 20 {
            round += 1;
            assert!(round < 10_000, "the flood never saturated");
            let mut taken = 0;
            for (c, sender) in senders.iter().enumerate() {
                match sender.send(&oversized) {
                    Err(SendError::FrameTooLarge { len, max }) => assert_eq!((len, max), (FRAME + 1, FRAME)),
                    other => panic!("a frame over max_frame: {other:?}"),
                }
                // A few frames per round and connection, until refused.
                for _ in 0..4 {
                    match sender.send(&frame(c, accepted[c])) {
                        Ok(()) => {
                            accepted[c] += 1;
                            taken += 1;
                        }
                        Err(SendError::Backpressure) => {
                            refused[c] = true;
                            break;
                        }
                        Err(e) => panic!("connection {c}: {e:?}"),
                    }
                }
            }
            if taken == 0 && refused.iter().all(|r| *r) {
                refused_rounds += 1;
            } else {
                refused_rounds = 0;
                loops_synced = false;
            }
            if rss_full.is_none() && refused_rounds >= 5 {
                if loops_synced {
                    rss_full = Some(rss_kib());
                } else {
                    finish_a_turn_on_every_loop(&event_loop);
                    loops_synced = true;
                }
            }
            if rss_full.is_some() {
                full_rounds += 1;
            } else {
                // Pacing: let the kernel take what it will before the next round.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let rss_full = rss_full.unwrap();
        let rss_end = rss_kib();
        for (c, s) in senders.iter().enumerate() {
            assert!(
                s.peak_queued_bytes() <= HIGH + FRAME,
                "connection {c}: {} bytes queued, watermark {HIGH} + frame {FRAME}",
                s.peak_queued_bytes()
            );
            assert!(s.queued_bytes() >= HIGH - FRAME, "connection {c} not full: {}", s.queued_bytes());
        }
        // A queue holds at most the watermark plus a frame, in at most two buffers (the
        // one being sent and the one filling), each at most the next power of two.
        let bound_kib = (CONNS * 2 * (HIGH + FRAME).next_power_of_two() / 1024) as u64;
        let grown = rss_full.saturating_sub(rss_start);
        assert!(
            grown <= bound_kib + 32 * 1024,
            "RSS grew {grown} KiB while filling, bound {bound_kib} KiB (+32 MiB)"
        );
        let flood_growth = rss_end.saturating_sub(rss_full);
        assert!(
            flood_growth <= 4 * 1024,
            "RSS grew {flood_growth} KiB over 20 rounds of refused sends (flat expected)"
        );
        println!(
            "{backend}: {CONNS} never-reading clients, {} frames accepted, {round} rounds; \
             RSS {rss_start} -> {rss_full} KiB when full (bound +{bound_kib}), {rss_end} KiB \
             after 20 more rounds; peak queue {} bytes",
            accepted.iter().sum::<usize>(),
            senders.iter().map(|s| s.peak_queued_bytes()).max().unwrap()
        );

        // Now the clients read: each gets exactly its accepted frames, in order, then EOF.
        for s in &senders {
            s.close_gracefully();
        }
        let readers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .collect::<Vec<_>>()
            .chunks(CONNS / 8)
            .map(|chunk| {
                let chunk: Vec<(usize, TcpStream)> = chunk.iter().map(|(c, s)| (*c, s.try_clone().unwrap())).collect();
                let accepted = accepted.clone();
                std::thread::spawn(move || {
                    for (c, mut s) in chunk {
                        let got = read_to_eof(&mut s, WAIT);
                        assert_eq!(got.len(), accepted[c] * FRAME, "connection {c}: bytes delivered");
                        for (k, f) in got.chunks(FRAME).enumerate() {
                            assert_bytes_eq(f, &frame(c, k), &format!("connection {c}, frame {k}"));
                        }
                    }
                })
            })
            .collect();
        for r in readers {
            r.join().expect("reader");
        }
        rec.wait_disconnects(CONNS, WAIT);
        rec.assert_all_closed_once();
        assert!(rec.errors().is_empty(), "{:?}", rec.errors());
        server.stop().unwrap();
    }
}

/// Returns once every loop thread of `event_loop` has finished a whole turn (its flush
/// included) that began after this call: a posted closure runs among a turn's commands,
/// before its flush, so the second of two closures posted one after the other runs in a
/// later turn than the first.
fn finish_a_turn_on_every_loop(event_loop: &ringmill::EventLoop) {
    for handle in event_loop.handles() {
        for _ in 0..2 {
            let (ran, wait) = std::sync::mpsc::channel();
            handle
                .post(move || {
                    let _ = ran.send(());
                })
                .expect("the loop takes a closure");
            wait.recv_timeout(WAIT).unwrap_or_else(|_| {
                panic!(
                    "loop {} ran no posted closure within {WAIT:?}",
                    handle.index()
                )
            });
        }
    }
}
