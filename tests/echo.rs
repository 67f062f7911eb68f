//! Echo under load: 1,000 connections open at once, each echoing messages of 1 B to
//! 256 KiB; every byte that comes back is compared with what was sent.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;

const CONNECTIONS: usize = 1000;
const CLIENT_THREADS: usize = 8;
const ROUNDS: usize = 4;
const MAX_MESSAGE: usize = 256 * 1024;

/// Size of message `round` on connection `conn`: log-uniform over 1 B..=256 KiB (mean about
/// 20 KiB), with the two extremes always present.
fn message_size(conn: usize, round: usize) -> usize {
    match (conn, round) {
        (0, 0) => 1,
        (1, 0) => MAX_MESSAGE,
        _ => {
            let mut rng = Rng::new((conn * ROUNDS + round) as u64 * 7919 + 17);
            let k = rng.range(0, 18) as u32;
            rng.range(1usize << k, (1usize << (k + 1)) - 1)
                .min(MAX_MESSAGE)
        }
    }
}

fn message(conn: usize, round: usize) -> Vec<u8> {
    pattern((conn * ROUNDS + round) as u64, message_size(conn, round))
}

backend_matrix! {
    /// 1,000 connections at once, each sending `ROUNDS` random-sized messages and
    /// checking every byte of the echo; the server sees every connection open, receives
    /// exactly what was sent, and every connection ends with one `on_disconnect`.
    fn thousand_connections_echo_every_byte(backend: Backend) {
        raise_nofile_limit(4 * CONNECTIONS as u64 + 256);
        let event_loop = event_loop(backend);
        let rec = Arc::new(Recorder::counting());
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let addr = addr_of(&server);

        let all_connected = Arc::new(Barrier::new(CLIENT_THREADS + 1));
        let go = Arc::new(Barrier::new(CLIENT_THREADS + 1));
        let per_thread = CONNECTIONS / CLIENT_THREADS;
        let workers: Vec<_> = (0..CLIENT_THREADS)
            .map(|t| {
                let all_connected = Arc::clone(&all_connected);
                let go = Arc::clone(&go);
                thread::spawn(move || -> (usize, u64) {
                    let first = t * per_thread;
                    let mut conns: Vec<(usize, TcpStream)> = (first..first + per_thread)
                        .map(|c| (c, connect(addr)))
                        .collect();
                    all_connected.wait();
                    go.wait();
                    let mut bytes = 0usize;
                    let mut digest = Fnv::new();
                    for round in 0..ROUNDS {
                        // Every connection of this thread has a message in flight at once.
                        let sent: Vec<Vec<u8>> = conns
                            .iter_mut()
                            .map(|(c, s)| {
                                let m = message(*c, round);
                                s.write_all(&m).unwrap_or_else(|e| {
                                    panic!("conn {c} round {round}: write failed: {e}")
                                });
                                m
                            })
                            .collect();
                        for ((c, s), want) in conns.iter_mut().zip(&sent) {
                            let got = read_exact_within(s, want.len(), WAIT);
                            assert_eq!(
                                Fnv::of(&got),
                                Fnv::of(want),
                                "conn {c} round {round}: echo of {} bytes differs",
                                want.len()
                            );
                            assert_bytes_eq(&got, want, &format!("conn {c} round {round}"));
                            digest.update(&got);
                            bytes += got.len();
                        }
                    }
                    drop(conns);
                    (bytes, digest.0)
                })
            })
            .collect();

        all_connected.wait();
        // Every connection is open at the same time before any byte moves.
        rec.wait_connects(CONNECTIONS, WAIT);
        assert_eq!(server.connection_count(), CONNECTIONS, "all connections open at once");
        assert_eq!(rec.disconnects(), 0);
        go.wait();

        let mut total = 0usize;
        for w in workers {
            let (bytes, _) = w.join().expect("client thread failed");
            total += bytes;
        }
        let expected: usize = (0..CONNECTIONS)
            .flat_map(|c| (0..ROUNDS).map(move |r| message_size(c, r)))
            .sum();
        assert_eq!(total, expected, "bytes echoed");

        rec.wait_disconnects(CONNECTIONS, WAIT);
        rec.assert_all_closed_once();
        rec.with(|r| {
            assert_eq!(r.connects, CONNECTIONS);
            let received: usize = r.conns.values().map(|t| t.bytes).sum();
            assert_eq!(received, expected, "bytes the server received");
            assert!(
                r.errors.is_empty(),
                "no errors expected: {:?}",
                &r.errors[..r.errors.len().min(10)]
            );
        });
        // Nothing notifies when the count drops, so it is polled.
        poll_until(SHORT_WAIT, "connection_count() to fall to 0", || {
            server.connection_count() == 0
        });
    }

    /// One connection, many frames pipelined without waiting for the echo: the echo is
    /// the exact concatenation, whatever the chunking.
    fn pipelined_echo_is_exact(backend: Backend) {
        let event_loop = event_loop(backend);
        let server = start_server(&event_loop, server_config().build(), Echo::new());
        let mut stream = connect(addr_of(&server));
        let mut writer = stream.try_clone().unwrap();
        let mut rng = Rng::new(99);
        let frames: Vec<Vec<u8>> = (0..2000).map(|_| {
            let len = rng.range(1, 3000);
            rng.bytes(len)
        }).collect();
        let want: Vec<u8> = frames.concat();
        let w = thread::spawn(move || {
            for f in &frames {
                writer.write_all(f).unwrap();
            }
            shutdown_write(&writer);
        });
        let got = read_to_eof(&mut stream, WAIT);
        w.join().unwrap();
        assert_bytes_eq(&got, &want, "pipelined echo");
    }
}
