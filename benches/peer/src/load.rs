//! The load generator: none of the servers' code. Two modes:
//!
//! - `mio`: one thread (or one per client CPU, each with every n-th connection), one
//!   `mio::Poll` per thread, every connection non-blocking, `depth` messages in flight per
//!   connection (a new one is sent as soon as one is echoed);
//! - `blocking`: one blocking thread per connection, each writing `depth` messages then
//!   reading their echo, in a loop (the small-batch case).
//!
//! Both time every message from the moment it is queued for writing to the moment its last
//! byte is read back (RTT), and count echoed messages over a measured window that follows a
//! warm-up. Every byte that comes back is checked: each connection sends the stream whose
//! byte at offset `p` is `p % 251`, so a server that loses, repeats, reorders or corrupts a
//! byte, or mixes connections up, fails the run.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the load generator waits without any progress before it gives up.
const STALL: Duration = Duration::from_secs(10);

/// One measurement cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Concurrent connections.
    pub conns: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Messages in flight per connection.
    pub depth: usize,
    /// Thread-per-connection blocking client instead of the one-thread mio client.
    pub blocking: bool,
}

impl Cell {
    /// The load generator's name for the mode.
    pub fn mode(&self) -> &'static str {
        if self.blocking {
            "blocking"
        } else {
            "mio"
        }
    }
}

/// What the runner samples at the start and at the end of the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snap {
    /// Server utime + stime, clock ticks.
    pub server_ticks: u64,
    /// Allocations the server made so far.
    pub server_allocs: u64,
    /// Load generator process utime + stime, clock ticks.
    pub client_ticks: u64,
}

/// What one cell measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Messages echoed within the window.
    pub msgs: u64,
    /// Length of the window.
    pub elapsed: Duration,
    /// Samples at the window's start and end.
    pub start: Snap,
    /// See `start`.
    pub end: Snap,
    /// Round-trip times of messages completed within the window, nanoseconds.
    pub rtts: Vec<u32>,
}

/// Opens `n` blocking connections, each checked with a one-byte echo.
pub fn connect_checked(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpStream>, String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = std::net::TcpStream::connect(addr)
            .map_err(|e| format!("connect #{i} to {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(STALL)).map_err(|e| e.to_string())?;
        s.write_all(b"x").map_err(|e| format!("write #{i}: {e}"))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .map_err(|e| format!("one-byte echo on connection #{i}: {e}"))?;
        out.push(s);
    }
    Ok(out)
}

/// Runs `cell` against the echo server at `addr`: `warmup`, then a window of `secs`, with
/// `snap` called at both ends of the window. The mio client runs one thread per entry of
/// `cpus`, each pinned to that CPU and driving every n-th connection (one unpinned thread
/// when `cpus` is empty); the blocking client runs where the caller's affinity allows.
pub fn run(
    addr: SocketAddr,
    cell: Cell,
    warmup: Duration,
    secs: Duration,
    snap: &mut dyn FnMut() -> Result<Snap, String>,
    cpus: &[usize],
) -> Result<Measured, String> {
    let streams = connect_checked(addr, cell.conns)?;
    if cell.blocking {
        run_blocking(streams, cell, warmup, secs, snap)
    } else {
        run_mio(streams, cell, warmup, secs, snap, cpus)
    }
}

/// Period of the byte pattern every connection sends (a prime, so it never lines up with
/// message or buffer sizes).
const PERIOD: usize = 251;

struct Conn {
    stream: TcpStream,
    unsent: usize,
    partial: usize,
    sent_at: VecDeque<Instant>,
    /// Stream offset of the next byte to send, modulo `PERIOD`.
    send_off: usize,
    /// Stream offset of the next byte expected back, modulo `PERIOD`.
    recv_off: usize,
    /// Bytes received so far (for the error message).
    received: u64,
}

/// `len + PERIOD` bytes of the pattern: any `len` bytes of the stream are a slice of it.
fn pattern(len: usize) -> Vec<u8> {
    (0..len + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

/// Checks `got` against the pattern at `off`; the error names the first wrong byte.
fn check(pat: &[u8], off: usize, got: &[u8], received: u64, conn: usize) -> Result<(), String> {
    let want = &pat[off..off + got.len()];
    if want == got {
        return Ok(());
    }
    let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    Err(format!(
        "wrong echo on connection #{conn}: byte {} is {} where {} was sent",
        received + i as u64,
        got[i],
        want[i]
    ))
}

/// What the runner's thread and the mio client threads share.
struct Ctl {
    phase: AtomicU8,
    /// Messages echoed so far, per client thread (each written by its thread only).
    done: Vec<Padded>,
    /// Set by a client thread that stopped on an error.
    failed: AtomicU8,
}

/// A counter on a cache line of its own.
#[repr(align(128))]
struct Padded(AtomicU64);

impl Ctl {
    fn done(&self) -> u64 {
        self.done.iter().map(|d| d.0.load(Ordering::Relaxed)).sum()
    }

    /// Sleeps for `d`, or less if a client thread failed.
    fn wait(&self, d: Duration) {
        let until = Instant::now() + d;
        while self.failed.load(Ordering::Relaxed) == 0 {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }
}

fn run_mio(
    streams: Vec<std::net::TcpStream>,
    cell: Cell,
    warmup: Duration,
    secs: Duration,
    snap: &mut dyn FnMut() -> Result<Snap, String>,
    cpus: &[usize],
) -> Result<Measured, String> {
    let threads = cpus.len().max(1);
    let mut parts: Vec<Vec<(usize, std::net::TcpStream)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in streams.into_iter().enumerate() {
        parts[i % threads].push((i, s));
    }
    let ctl = Arc::new(Ctl {
        phase: AtomicU8::new(WARMUP),
        done: (0..threads).map(|_| Padded(AtomicU64::new(0))).collect(),
        failed: AtomicU8::new(0),
    });
    let mut handles = Vec::with_capacity(threads);
    for (t, part) in parts.into_iter().enumerate() {
        let ctl = Arc::clone(&ctl);
        let cpu = cpus.get(t).copied();
        let h = std::thread::Builder::new()
            .name(format!("client-{t}"))
            .spawn(move || {
                let r = cpu
                    .map_or(Ok(()), crate::proc::pin_to)
                    .and_then(|()| mio_client(part, cell, &ctl, t));
                if r.is_err() {
                    ctl.failed.store(1, Ordering::Relaxed);
                }
                r
            })
            .map_err(|e| format!("spawn client thread: {e}"))?;
        handles.push(h);
    }
    let stop = |ctl: &Ctl| ctl.phase.store(STOP, Ordering::Relaxed);
    let join = |handles: Vec<std::thread::JoinHandle<Result<Vec<u32>, String>>>| {
        let mut rtts = Vec::new();
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(r)) => rtts.extend(r),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert("client thread panicked".to_string());
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(rtts),
        }
    };
    ctl.wait(warmup);
    let start = match snap() {
        Ok(s) => s,
        Err(e) => {
            stop(&ctl);
            let _ = join(handles);
            return Err(e);
        }
    };
    let window_start = Instant::now();
    let done_at_start = ctl.done();
    ctl.phase.store(MEASURE, Ordering::Relaxed);
    ctl.wait(secs);
    let done_at_end = ctl.done();
    stop(&ctl);
    let end = snap();
    let elapsed = window_start.elapsed();
    let rtts = join(handles)?;
    Ok(Measured {
        msgs: done_at_end - done_at_start,
        elapsed,
        start,
        end: end?,
        rtts,
    })
}

/// One mio client thread: drives `streams` (with their global numbers) until the phase is
/// `STOP`; returns the RTTs of the messages completed while it was `MEASURE`.
fn mio_client(
    streams: Vec<(usize, std::net::TcpStream)>,
    cell: Cell,
    ctl: &Ctl,
    me: usize,
) -> Result<Vec<u32>, String> {
    let size = cell.size;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut conns = Vec::with_capacity(streams.len());
    let mut ids = Vec::with_capacity(streams.len());
    for (i, (id, s)) in streams.into_iter().enumerate() {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = TcpStream::from_std(s);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| e.to_string())?;
        conns.push(Conn {
            stream,
            unsent: 0,
            partial: 0,
            sent_at: VecDeque::with_capacity(cell.depth),
            send_off: 0,
            recv_off: 0,
            received: 0,
        });
        ids.push(id);
    }
    let window = size * cell.depth;
    let mut inbuf = vec![0u8; 256 * 1024];
    let out = pattern(window.max(inbuf.len()));
    let mut events = Events::with_capacity(1024);
    let mut rtts = Vec::with_capacity(1 << 20);

    let begin = Instant::now();
    for c in conns.iter_mut() {
        for _ in 0..cell.depth {
            c.sent_at.push_back(begin);
        }
        c.unsent = size * cell.depth;
        flush(c, &out, window)?;
    }
    let mut done = 0u64;
    let mut last_progress = Instant::now();
    loop {
        let phase = ctl.phase.load(Ordering::Relaxed);
        if phase == STOP {
            return Ok(rtts);
        }
        let measuring = phase == MEASURE;
        poll.poll(&mut events, Some(Duration::from_millis(5)))
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        for ev in events.iter() {
            let now = Instant::now();
            let c = &mut conns[ev.token().0];
            let conn = ids[ev.token().0];
            if ev.is_writable() {
                flush(c, &out, window)?;
            }
            if !ev.is_readable() {
                continue;
            }
            loop {
                match c.stream.read(&mut inbuf) {
                    Ok(0) => return Err("server closed a connection".into()),
                    Ok(n) => {
                        check(&out, c.recv_off, &inbuf[..n], c.received, conn)?;
                        c.recv_off = (c.recv_off + n) % PERIOD;
                        c.received += n as u64;
                        c.partial += n;
                        let msgs = c.partial / size;
                        c.partial %= size;
                        for _ in 0..msgs {
                            let sent = c.sent_at.pop_front().ok_or("more bytes than sent")?;
                            if measuring {
                                let ns = now.duration_since(sent).as_nanos();
                                rtts.push(ns.min(u32::MAX as u128) as u32);
                            }
                            c.sent_at.push_back(now);
                        }
                        c.unsent += msgs * size;
                        done += msgs as u64;
                        if msgs > 0 {
                            last_progress = now;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            flush(c, &out, window)?;
        }
        ctl.done[me].0.store(done, Ordering::Relaxed);
        if now.duration_since(last_progress) > STALL {
            return Err(format!("no echo for {STALL:?}"));
        }
    }
}

/// Writes as much of `c`'s pending bytes as the socket takes, at most `window` per call
/// to `write`, continuing the pattern (`out`).
fn flush(c: &mut Conn, out: &[u8], window: usize) -> Result<(), String> {
    while c.unsent > 0 {
        let n = c.unsent.min(window);
        match c.stream.write(&out[c.send_off..c.send_off + n]) {
            Ok(w) => {
                c.unsent -= w;
                c.send_off = (c.send_off + w) % PERIOD;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

fn run_blocking(
    streams: Vec<std::net::TcpStream>,
    cell: Cell,
    warmup: Duration,
    secs: Duration,
    snap: &mut dyn FnMut() -> Result<Snap, String>,
) -> Result<Measured, String> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let done = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::with_capacity(streams.len());
    for (conn, mut s) in streams.into_iter().enumerate() {
        let phase = Arc::clone(&phase);
        let done = Arc::clone(&done);
        let (size, depth) = (cell.size, cell.depth);
        let t = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || -> Result<Vec<u32>, String> {
                // Each round sends and reads back whole windows, so the pattern restarts.
                let out: Vec<u8> = pattern(size * depth)[..size * depth].to_vec();
                let mut back = vec![0u8; size * depth];
                let mut received = 0u64;
                let mut rtts = Vec::new();
                while phase.load(Ordering::Relaxed) != STOP {
                    let t0 = Instant::now();
                    s.write_all(&out).map_err(|e| format!("write: {e}"))?;
                    s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
                    check(&out, 0, &back, received, conn)?;
                    received += back.len() as u64;
                    let ns = t0.elapsed().as_nanos().min(u32::MAX as u128) as u32;
                    if phase.load(Ordering::Relaxed) == MEASURE {
                        rtts.extend(std::iter::repeat_n(ns, depth));
                    }
                    done.fetch_add(depth as u64, Ordering::Relaxed);
                }
                Ok(rtts)
            })
            .map_err(|e| format!("spawn client thread: {e}"))?;
        threads.push(t);
    }
    std::thread::sleep(warmup);
    let start = snap()?;
    let window_start = Instant::now();
    let done_at_start = done.load(Ordering::Relaxed);
    phase.store(MEASURE, Ordering::Relaxed);
    std::thread::sleep(secs);
    let done_at_end = done.load(Ordering::Relaxed);
    phase.store(STOP, Ordering::Relaxed);
    let end = snap()?;
    let elapsed = window_start.elapsed();
    let mut rtts = Vec::new();
    for t in threads {
        rtts.extend(t.join().map_err(|_| "client thread panicked")??);
    }
    Ok(Measured {
        msgs: done_at_end - done_at_start,
        elapsed,
        start,
        end,
        rtts,
    })
}

/// The `q`-quantile (0..=1) of `samples`, which it sorts; 0 when empty.
pub fn quantile(samples: &mut [u32], q: f64) -> u32 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i]
}

/// `load ADDR CONNS SIZE DEPTH [blocking]`: the load generator alone, 1 s warm-up, 3 s window.
pub fn main(
    addr: SocketAddr,
    conns: usize,
    size: usize,
    depth: usize,
    blocking: bool,
) -> Result<(), String> {
    if conns == 0 || size == 0 || depth == 0 {
        return Err("CONNS, SIZE and DEPTH must be at least 1".into());
    }
    let cell = Cell {
        conns,
        size,
        depth,
        blocking,
    };
    crate::proc::raise_nofile();
    // For profiling (`benches/peer/profile.sh`): shell commands run to completion at the
    // start and at the end of the measured window, so a profiler attached to the server
    // covers exactly the messages counted here.
    let mut hooks = ["PEER_WINDOW_START", "PEER_WINDOW_END"].into_iter();
    let mut m = run(
        addr,
        cell,
        Duration::from_secs(1),
        Duration::from_secs(3),
        &mut || {
            if let Some(cmd) = hooks.next().and_then(|v| std::env::var(v).ok()) {
                let status = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .status()
                    .map_err(|e| format!("{cmd}: {e}"))?;
                if !status.success() {
                    return Err(format!("{cmd}: {status}"));
                }
            }
            Ok(Snap::default())
        },
        &[],
    )?;
    let rate = m.msgs as f64 / m.elapsed.as_secs_f64();
    let p50 = quantile(&mut m.rtts, 0.5) as f64 / 1e3;
    let p99 = quantile(&mut m.rtts, 0.99) as f64 / 1e3;
    println!(
        "{} {:?}: {rate:.0} msg/s, RTT p50 {p50:.1} us, p99 {p99:.1} us ({} messages in {:.3} s)",
        cell.mode(),
        cell,
        m.msgs,
        m.elapsed.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_names_the_first_wrong_byte() {
        let pat = pattern(1000);
        assert!(check(&pat, 7, &pat[7..500], 0, 3).is_ok());
        let mut got = pat[7..500].to_vec();
        got[100] ^= 0xff;
        let e = check(&pat, 7, &got, 4096, 3).unwrap_err();
        assert!(
            e.contains("connection #3: byte 4196"),
            "error names the connection and the stream offset: {e}"
        );
        // The same bytes one offset late (a lost byte) fail too.
        assert!(check(&pat, 8, &pat[7..500], 0, 0).is_err());
    }
}
