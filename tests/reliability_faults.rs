//! Issue 5, item 1: echo traffic through the loopback fault proxy, many connections at
//! once, each path with its own fault: writes split into 1-7 byte pieces, a throttled
//! path, a path stalled mid-transfer and released, resets after N bytes (several N), and
//! clients that read slowly while the server is pushed into backpressure.
//!
//! Pass criteria, per connection: every byte the client got back is exactly the byte it
//! sent at that offset (acknowledged bytes arrive intact); on the faultless paths every
//! byte comes back and the stream ends with a clean EOF; on reset paths what the server
//! saw is a prefix of what was sent, no longer than N. For the server as a whole: each
//! `on_connect` has exactly one `on_disconnect`, nothing out of order, no `on_error` other
//! than what a reset may cause, and nothing is left open.

mod common;
mod rel_support;

use common::proxy::{FaultProxy, Mode};
use common::*;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Bytes at the start of every stream that name it (its seed).
const HEADER: usize = 8;

/// The stream a client sends: the seed, then pseudo-random bytes.
fn stream_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = pattern(seed, len);
    v[..HEADER].copy_from_slice(&seed.to_le_bytes());
    v
}

/// How a client's connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Every byte came back, then EOF.
    Complete,
    /// Cut short (reset or early EOF) after this many verified bytes came back.
    Cut(usize, String),
}

/// How a client reads.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// As fast as it can.
    Fast,
    /// `chunk` bytes at a time with a pause between (pacing, not synchronisation).
    Slow { chunk: usize, pause: Duration },
}

/// Writes `data` in random pieces from a helper thread while verifying the echo; at the
/// end half-closes and expects EOF.
fn echo_client(addr: SocketAddr, data: Arc<Vec<u8>>, seed: u64, reader: Reader) -> End {
    let mut stream = match TcpStream::connect_timeout(&addr, WAIT) {
        Ok(s) => s,
        Err(e) => return End::Cut(0, format!("connect: {e}")),
    };
    stream.set_nodelay(true).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let out = Arc::clone(&data);
    let w = thread::spawn(move || {
        let mut rng = Rng::new(seed ^ 0xabcdef);
        let mut off = 0;
        while off < out.len() {
            let n = rng.range(1, 8192).min(out.len() - off);
            match writer.write(&out[off..off + n]) {
                Ok(k) => off += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        off
    });
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        if got == data.len() {
            break End::Complete;
        }
        let want = match reader {
            Reader::Fast => buf.len(),
            Reader::Slow { chunk, pause } => {
                thread::sleep(pause);
                chunk
            }
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
        match stream.read(&mut buf[..want.min(data.len() - got)]) {
            Ok(0) => break End::Cut(got, "EOF".into()),
            Ok(n) => {
                assert_bytes_eq(
                    &buf[..n],
                    &data[got..got + n],
                    &format!("echo of stream {seed} at offset {got}"),
                );
                got += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                panic!("stream {seed}: no echo within {WAIT:?} after {got} bytes")
            }
            Err(e) => break End::Cut(got, format!("{:?}", e.kind())),
        }
    };
    let written = w.join().expect("writer thread");
    if end == End::Complete {
        assert_eq!(written, data.len());
        let _ = stream.shutdown(std::net::Shutdown::Write);
        match try_read_to_eof(&mut stream, WAIT) {
            Ok(rest) => assert!(
                rest.is_empty(),
                "stream {seed}: {} bytes after the echo",
                rest.len()
            ),
            Err((_, e)) => panic!("stream {seed}: no clean EOF after the echo: {e}"),
        }
    }
    end
}

/// One group of clients behind one path.
struct Group {
    name: &'static str,
    proxy: Option<FaultProxy>,
    clients: usize,
    len: usize,
    reader: Reader,
    /// The reset limit of the path, if it resets.
    reset_after: Option<usize>,
}

backend_matrix! {
    /// Forty connections at once over seven faulty paths; see the module docs.
    fn echo_survives_every_fault_at_once(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config()
            .high_watermark(32 * 1024)
            .low_watermark(8 * 1024)
            .build();
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let addr = addr_of(&server);
        let path = |mode: Mode| {
            let p = FaultProxy::start(addr);
            p.set_mode(mode);
            Some(p)
        };
        let groups = vec![
            Group { name: "split 1-7", proxy: path(Mode::Split { min: 1, max: 7 }), clients: 6, len: 24_000, reader: Reader::Fast, reset_after: None },
            Group { name: "throttled", proxy: path(Mode::Throttle { bytes_per_sec: 400_000 }), clients: 4, len: 60_000, reader: Reader::Fast, reset_after: None },
            Group { name: "stalled", proxy: path(Mode::Pass), clients: 6, len: 400_000, reader: Reader::Fast, reset_after: None },
            Group { name: "reset after 16", proxy: path(Mode::ResetAfter(16)), clients: 6, len: 100_000, reader: Reader::Fast, reset_after: Some(16) },
            Group { name: "reset after 5000", proxy: path(Mode::ResetAfter(5000)), clients: 6, len: 100_000, reader: Reader::Fast, reset_after: Some(5000) },
            Group { name: "reset after 150000", proxy: path(Mode::ResetAfter(150_000)), clients: 6, len: 400_000, reader: Reader::Fast, reset_after: Some(150_000) },
            Group { name: "slow readers", proxy: None, clients: 6, len: 300_000, reader: Reader::Slow { chunk: 16 * 1024, pause: Duration::from_millis(2) }, reset_after: None },
        ];

        // The stalled path holds everything from the start: each client gets its first
        // piece out and is then pushed back by flow control, mid-transfer.
        let stalled = groups[2].proxy.as_ref().unwrap();
        stalled.stall();

        let mut handles = Vec::new();
        let mut seed = 1000u64;
        for (g, group) in groups.iter().enumerate() {
            let target = group.proxy.as_ref().map_or(addr, |p| p.addr());
            for _ in 0..group.clients {
                seed += 1;
                let data = Arc::new(stream_bytes(seed, group.len));
                let reader = group.reader;
                let s = seed;
                handles.push((g, seed, Arc::clone(&data), thread::spawn(move || echo_client(target, data, s, reader))));
            }
        }

        stalled.wait(WAIT, "every client of the stalled path to be held", |s| s.accepted == 6 && s.stalled_pumps == 6);
        assert_eq!(stalled.stats().up_written, 0, "bytes passed a stalled path");
        let stalled_seeds: Vec<u64> = (1..=6).map(|i| 1000 + groups[0].clients as u64 + groups[1].clients as u64 + i).collect();
        rec.with(|r| {
            for t in r.conns.values().filter(|t| t.data.len() >= HEADER) {
                let seed = u64::from_le_bytes(t.data[..HEADER].try_into().unwrap());
                assert!(!stalled_seeds.contains(&seed), "stream {seed} reached the server through a stalled path");
            }
        });
        stalled.release();

        let mut ends = Vec::new();
        for (g, seed, data, h) in handles {
            let end = h.join().unwrap_or_else(|_| panic!("client {seed} ({}) failed", groups[g].name));
            ends.push((g, seed, data, end));
        }

        for (g, seed, _, end) in &ends {
            let group = &groups[*g];
            match (group.reset_after, end) {
                (None, End::Complete) => {}
                (None, End::Cut(n, why)) => panic!("{}: stream {seed} cut after {n} bytes ({why}) on a path that does not reset", group.name),
                (Some(limit), End::Cut(n, _)) => assert!(*n <= limit, "{}: {n} bytes echoed past the reset at {limit}", group.name),
                (Some(limit), End::Complete) => assert!(group.len <= limit, "{}: stream {seed} complete past a reset", group.name),
            }
        }

        // Every connection the server saw ends exactly once; none is left open.
        let expected_complete = ends.iter().filter(|(_, _, _, e)| *e == End::Complete).count();
        rec.wait(WAIT, "every connection closed", |r| {
            r.connects >= expected_complete && r.disconnects == r.connects
        });
        rec.assert_all_closed_once();
        poll_until(WAIT, "connection_count() to reach 0", || server.connection_count() == 0);

        // What the server received on each connection is a prefix of one client's stream
        // (all of it for complete ones), no longer than the reset limit of its path.
        let by_seed: std::collections::HashMap<u64, (usize, Arc<Vec<u8>>, End)> = ends
            .iter()
            .map(|(g, s, d, e)| (*s, (*g, Arc::clone(d), e.clone())))
            .collect();
        let mut seen_complete = 0;
        rec.with(|r| {
            for (id, t) in &r.conns {
                if t.data.len() < HEADER {
                    // Only a reset path can cut a stream that short.
                    assert!(
                        ends.iter().any(|(g, _, d, _)| groups[*g].reset_after.is_some() && d.starts_with(&t.data)),
                        "{id}: {} bytes that start no reset stream", t.data.len()
                    );
                    continue;
                }
                let seed = u64::from_le_bytes(t.data[..HEADER].try_into().unwrap());
                let (g, data, end) = by_seed.get(&seed).unwrap_or_else(|| panic!("{id}: unknown stream {seed}"));
                assert_bytes_eq(&t.data, &data[..t.data.len().min(data.len())], &format!("{id}: bytes of stream {seed}"));
                if let Some(limit) = groups[*g].reset_after {
                    assert!(t.data.len() <= limit, "{id}: {} bytes passed a reset at {limit}", t.data.len());
                }
                if *end == End::Complete {
                    assert_eq!(t.data.len(), data.len(), "{id}: stream {seed} incomplete at the server");
                    seen_complete += 1;
                }
                for e in t.errors() {
                    assert!(groups[*g].reset_after.is_some(), "{id} on {}: unexpected error {e}", groups[*g].name);
                }
            }
            let server_errors: Vec<_> = r.errors.iter().filter(|e| e.conn.is_none()).collect();
            assert!(server_errors.is_empty(), "server-level errors: {server_errors:?}");
        });
        assert_eq!(seen_complete, expected_complete, "every complete stream seen once by the server");
        // The slow readers pushed the server into backpressure (and out again).
        rec.with(|r| {
            assert!(
                r.conns.values().any(|t| t.events.contains(&Ev::Drained)),
                "no connection ever went through backpressure"
            )
        });
        // The reset paths did reset.
        for group in groups.iter().filter(|g| g.reset_after.is_some()) {
            let stats = group.proxy.as_ref().unwrap().stats();
            assert_eq!(stats.resets, group.clients, "{}: {stats:?}", group.name);
        }
        println!(
            "{backend}: {} connections, {} complete, {} cut by resets",
            ends.len(),
            expected_complete,
            ends.len() - expected_complete
        );
        drop(groups);
        server.stop().unwrap();
    }
}
