//! `recv-copy`: what the kernel's copy of received bytes costs as a function of how many
//! receive buffers take turns, with no event loop around it.
//!
//! A sender thread pinned to one CPU writes `chunk`-byte pieces over loopback TCP as fast
//! as it can; the receiver, pinned to another, reads with `recv(2)` of up to `size` bytes
//! into buffer `i % count` of `count` buffers laid out `size` bytes apart (the pool's
//! layout), the way io_uring's provided buffers are taken in ring order. Its thread CPU
//! time per received byte is the cost: the socket work is the same for every count, so
//! what differs between counts is how warm the destination of the copy is. Counts are
//! interleaved within each repetition, and the medians are printed with their ratio to
//! the first count. `--offsets` puts the buffers that many bytes past a page boundary
//! (the pool's buffers start on one), to tell alignment from temperature.

use crate::proc;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

/// Options of `recv-copy`.
#[derive(clap::Args)]
pub struct Opts {
    /// Buffer counts to compare, comma-separated; the first (at the first offset) is the
    /// reference.
    #[arg(long, default_value = "1,64,256", value_delimiter = ',')]
    counts: Vec<usize>,
    /// Bytes per buffer (and most bytes per `recv`).
    #[arg(long, default_value_t = 64 * 1024)]
    size: usize,
    /// Bytes per write of the sender.
    #[arg(long, default_value_t = 4096)]
    chunk: usize,
    /// Seconds of receiving per count and repetition.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Repetitions.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Where each buffer starts, in bytes past a page boundary, comma-separated: every
    /// count is measured at every offset.
    #[arg(long, default_value = "0", value_delimiter = ',')]
    offsets: Vec<usize>,
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One measurement: receiver CPU nanoseconds per byte, and bytes per `recv`.
fn measure(count: usize, offset: usize, o: &Opts) -> Result<(f64, f64), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let chunk = o.chunk;
    let sender = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || -> Result<(), String> {
            proc::pin_to(1)?;
            let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            let piece = vec![7u8; chunk];
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&piece).is_err() {
                    break;
                }
            }
            Ok(())
        })
    };
    proc::pin_to(0)?;
    let (mut conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    // Buffers `stride` bytes apart, the first `offset` bytes past a page boundary.
    let stride = (o.size + offset).next_multiple_of(PAGE);
    let mut memory = vec![0u8; count * stride + PAGE];
    let base = memory.as_ptr().align_offset(PAGE) + offset;
    let window = Duration::from_secs_f64(o.secs);
    let (start, cpu0) = (Instant::now(), thread_cpu());
    let (mut bytes, mut reads) = (0u64, 0u64);
    while start.elapsed() < window {
        let at = base + (reads as usize % count) * stride;
        match conn.read(&mut memory[at..at + o.size]) {
            Ok(0) => return Err("the sender closed early".into()),
            Ok(n) => {
                bytes += n as u64;
                reads += 1;
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    let cpu = thread_cpu() - cpu0;
    stop.store(true, Ordering::Relaxed);
    drop(conn);
    sender
        .join()
        .map_err(|_| "the sender panicked".to_string())??;
    Ok((
        cpu.as_nanos() as f64 / bytes as f64,
        bytes as f64 / reads as f64,
    ))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the comparison and prints one line per count.
pub fn main(o: Opts) -> Result<(), String> {
    if o.counts.is_empty() || o.counts.contains(&0) || o.size == 0 || o.chunk == 0 {
        return Err("counts, size and chunk must be above 0".into());
    }
    if o.reps == 0 || o.secs.is_nan() || o.secs <= 0.0 {
        return Err("reps and secs must be above 0".into());
    }
    if o.offsets.is_empty() || o.offsets.iter().any(|&off| off >= PAGE) {
        return Err(format!("offsets must be below {PAGE}"));
    }
    let cases: Vec<(usize, usize)> = o
        .counts
        .iter()
        .flat_map(|&count| o.offsets.iter().map(move |&offset| (count, offset)))
        .collect();
    let mut cost = vec![Vec::new(); cases.len()];
    let mut per_read = vec![Vec::new(); cases.len()];
    for rep in 0..o.reps {
        for (i, &(count, offset)) in cases.iter().enumerate() {
            let (ns, avg) = measure(count, offset, &o)?;
            eprintln!(
                "rep {rep} count {count} offset {offset}: {ns:.3} ns/byte, {avg:.0} bytes/recv"
            );
            cost[i].push(ns);
            per_read[i].push(avg);
        }
    }
    let reference = median(&mut cost[0].clone());
    println!(
        "receiver CPU per byte, {} B writes, recv up to {} B, medians of {} reps of {} s:",
        o.chunk, o.size, o.reps, o.secs
    );
    for (i, &(count, offset)) in cases.iter().enumerate() {
        let (lo, hi) = (
            cost[i].iter().copied().fold(f64::INFINITY, f64::min),
            cost[i].iter().copied().fold(0.0, f64::max),
        );
        let m = median(&mut cost[i]);
        println!(
            "  {count:>5} buffers ({:>6} KiB) at page offset {offset:>4}: {m:.3} ns/byte ({lo:.3}-{hi:.3}), {:.2}x, {:.0} B/recv",
            count * o.size / 1024,
            m / reference,
            median(&mut per_read[i]),
        );
    }
    Ok(())
}
