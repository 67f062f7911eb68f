//! Issue 5, item 11: property tests (proptest, with shrinking) over the code that cuts
//! and joins bytes, and a differential property test of both backends.
//!
//! - `pool_ops_keep_buffers_apart`: random take/give/write sequences on the receive
//!   buffer pool against a model: a buffer is never handed out twice, the free count is
//!   exact, buffers are aligned and never overlap (each keeps what was written to it).
//! - `framing_round_trip` (per backend): random `on_data` chunk limits (`buffer_size`),
//!   random client write sizes and random server re-framing of the echo: every chunk
//!   respects the limit, and the bytes come back intact and in order.
//! - `random_scripts_give_the_same_traces` (both backends at once): random client
//!   scripts (writes, echo reads, pipelining, half-close, FIN, RST after the echo) run
//!   against an io_uring server and a mio server; the per-connection traces (callback
//!   order, concatenated bytes, errors) must be identical.
//!
//! Cases per run: `RINGMILL_FUZZ_CASES` (default small, for `cargo test`; `ci/fuzz.sh`
//! runs a larger fixed budget in release).

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ringmill_core::pool::{BufferPool, BUF_ALIGN};
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

fn cases(default: u32) -> u32 {
    std::env::var("RINGMILL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: cases(default_cases),
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------------------------------
// The buffer pool
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum PoolOp {
    Take,
    /// Give back the taken buffer at this index (modulo the number taken).
    Give(usize),
}

#[test]
fn pool_ops_keep_buffers_apart() {
    let strategy = (
        1usize..5000,
        1usize..70,
        prop::collection::vec(
            prop_oneof![3 => Just(PoolOp::Take), 2 => any::<usize>().prop_map(PoolOp::Give)],
            1..200,
        ),
    );
    runner(256)
        .run(&strategy, |(buf_size, count, ops)| {
            let mut pool = BufferPool::new(buf_size, count).expect("pool");
            prop_assert_eq!(pool.count(), count);
            let mut taken: Vec<(ringmill_core::pool::BufId, u8)> = Vec::new();
            let mut stamp = 0u8;
            for op in ops {
                match op {
                    PoolOp::Take => match pool.take() {
                        Some(id) => {
                            prop_assert!(
                                taken.iter().all(|(t, _)| *t != id),
                                "{:?} handed out twice",
                                id
                            );
                            prop_assert!(pool.is_taken(id));
                            prop_assert_eq!(pool.as_ptr(id) as usize % BUF_ALIGN, 0);
                            stamp = stamp.wrapping_add(1);
                            pool.slice_mut(id).fill(stamp);
                            taken.push((id, stamp));
                        }
                        None => prop_assert_eq!(taken.len(), count, "pool empty with buffers free"),
                    },
                    PoolOp::Give(i) if !taken.is_empty() => {
                        let (id, _) = taken.swap_remove(i % taken.len());
                        pool.give(id);
                        prop_assert!(!pool.is_taken(id));
                    }
                    PoolOp::Give(_) => {}
                }
                prop_assert_eq!(pool.available(), count - taken.len());
                // Every taken buffer still holds its own stamp: no two overlap.
                for (id, s) in &taken {
                    let bytes = pool.slice(*id, buf_size);
                    prop_assert!(
                        bytes.iter().all(|b| b == s),
                        "buffer {:?} was overwritten",
                        id
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Framing through a server
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Framing {
    chunk_limit: usize,
    writes: Vec<usize>,
    frames: Vec<usize>,
    seed: u64,
}

fn framing() -> impl Strategy<Value = Framing> {
    (
        prop_oneof![1usize..16, 16usize..9000, Just(65536)],
        prop::collection::vec(1usize..6000, 1..24),
        prop::collection::vec(1usize..3000, 1..8),
        any::<u64>(),
    )
        .prop_map(|(chunk_limit, writes, frames, seed)| Framing {
            chunk_limit,
            writes,
            frames,
            seed,
        })
}

/// What the framing server saw: bytes, the largest chunk, callbacks.
#[derive(Debug, Default)]
struct Seen {
    bytes: Vec<u8>,
    largest: usize,
    smallest: usize,
    connects: usize,
    disconnects: usize,
    errors: Vec<String>,
}

/// Echoes, cutting the echo again into `frames` sizes (cycled); records what it saw.
/// (Not `Recording`: with one-byte chunks a connection has tens of thousands of callbacks.)
struct Reframe {
    frames: Vec<usize>,
    seen: Arc<Shared<Seen>>,
}

impl NetworkHandler for Reframe {
    fn on_connect(&self, _: &ServerContext, _: ConnectionId) -> Result<()> {
        self.seen.update(|s| {
            s.connects += 1;
            s.smallest = usize::MAX;
        });
        Ok(())
    }
    fn on_data(&self, ctx: &ServerContext, id: ConnectionId, data: &[u8]) -> Result<()> {
        self.seen.update(|s| {
            s.bytes.extend_from_slice(data);
            s.largest = s.largest.max(data.len());
            s.smallest = s.smallest.min(data.len());
        });
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = self.frames[i % self.frames.len()].min(rest.len());
            ctx.send_to(id, &rest[..n])?;
            rest = &rest[n..];
            i += 1;
        }
        Ok(())
    }
    fn on_disconnect(&self, _: &ServerContext, _: ConnectionId) -> Result<()> {
        self.seen.update(|s| s.disconnects += 1);
        Ok(())
    }
    fn on_error(&self, _: &ServerContext, _: Option<ConnectionId>, e: NetworkError) {
        self.seen.update(|s| s.errors.push(format!("{e:?}")));
    }
}

fn framing_case(event_loop: &EventLoop, case: &Framing) -> std::result::Result<(), TestCaseError> {
    let seen: Arc<Shared<Seen>> = Arc::default();
    let handler = Reframe {
        frames: case.frames.clone(),
        seen: Arc::clone(&seen),
    };
    let config = server_config()
        .buffer_size(case.chunk_limit)
        .high_watermark(1 << 20)
        .low_watermark(1 << 10)
        .build();
    let server = start_server(event_loop, config, handler);
    let total: usize = case.writes.iter().sum();
    let data = pattern(case.seed, total);
    let mut stream = connect(addr_of(&server));
    let mut writer = stream.try_clone().unwrap();
    let (out, writes) = (data.clone(), case.writes.clone());
    let w = std::thread::spawn(move || {
        let mut off = 0;
        for n in writes {
            writer.write_all(&out[off..off + n]).unwrap();
            off += n;
        }
    });
    let got = read_exact_within(&mut stream, total, WAIT);
    w.join().unwrap();
    drop(stream);
    seen.wait_until(WAIT, "the connection to close", |s| s.disconnects == 1);
    server.stop().unwrap();
    prop_assert!(got == data, "echo differs from what was sent");
    seen.with(|s| {
        prop_assert_eq!(s.connects, 1);
        prop_assert!(s.bytes == data, "on_data bytes differ from what was sent");
        prop_assert!(
            s.smallest >= 1 && s.largest <= case.chunk_limit,
            "chunks of {}..={} bytes, limit {}",
            s.smallest,
            s.largest,
            case.chunk_limit
        );
        prop_assert!(s.errors.is_empty(), "errors: {:?}", s.errors);
        Ok(())
    })
}

backend_matrix! {
    fn framing_round_trip(backend: Backend) {
        let event_loop = event_loop(backend);
        runner(24)
            .run(&framing(), |case| framing_case(&event_loop, &case))
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Differential: random client scripts on both backends
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    /// Write this many bytes.
    Write(usize),
    /// Read back everything written so far.
    ReadEcho,
}

#[derive(Debug, Clone, Copy)]
enum End {
    /// Half-close, read the rest of the echo and EOF.
    HalfClose,
    /// Read the echo, then close.
    Fin,
    /// Read the echo, then reset.
    Rst,
}

#[derive(Debug, Clone)]
struct Script {
    steps: Vec<Step>,
    end: End,
    seed: u64,
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec(
            prop_oneof![3 => (1usize..20000).prop_map(Step::Write), 1 => Just(Step::ReadEcho)],
            0..8,
        ),
        prop_oneof![Just(End::HalfClose), Just(End::Fin), Just(End::Rst)],
        any::<u64>(),
    )
        .prop_map(|(steps, end, seed)| Script { steps, end, seed })
}

/// One connection's trace, normalised: callbacks in order with consecutive data chunks
/// joined, `on_writable`/`on_drained` left out (they follow the kernel's pace).
#[derive(Debug, PartialEq, Eq)]
struct Trace {
    events: Vec<String>,
    bytes: Vec<u8>,
}

fn run_script(event_loop: &EventLoop, script: &Script) -> Trace {
    let rec = Recorder::shared();
    let server = start_server(event_loop, server_config().build(), Recording::echo(&rec));
    let mut stream = connect(addr_of(&server));
    // The server has the connection before the script goes on: a reset racing the accept
    // may give no callbacks at all (both backends keep the contract, not the same way).
    let id = rec.wait_conn(0, WAIT);
    let mut rng = common::Rng::new(script.seed);
    let (mut written, mut echoed) = (Vec::new(), 0usize);
    let read_echo = |stream: &mut TcpStream, written: &[u8], echoed: &mut usize| {
        let got = read_exact_within(stream, written.len() - *echoed, WAIT);
        assert_bytes_eq(&got, &written[*echoed..], "echo");
        *echoed = written.len();
    };
    for step in &script.steps {
        match step {
            Step::Write(n) => {
                let bytes = rng.bytes(*n);
                stream.write_all(&bytes).unwrap();
                written.extend_from_slice(&bytes);
                // Keep what is in flight bounded, so a script never deadlocks on full
                // buffers in both directions.
                if written.len() - echoed > 64 * 1024 {
                    read_echo(&mut stream, &written, &mut echoed);
                }
            }
            Step::ReadEcho => read_echo(&mut stream, &written, &mut echoed),
        }
    }
    match script.end {
        End::HalfClose => {
            shutdown_write(&stream);
            let rest = read_to_eof(&mut stream, WAIT);
            assert_bytes_eq(&rest, &written[echoed..], "echo after the half-close");
        }
        End::Fin => {
            read_echo(&mut stream, &written, &mut echoed);
            drop(stream);
        }
        End::Rst => {
            read_echo(&mut stream, &written, &mut echoed);
            reset_close(stream);
        }
    }
    rec.wait_closed(id, WAIT);
    let t = rec.trace(id);
    server.stop().unwrap();
    let mut events: Vec<String> = Vec::new();
    for e in &t.events {
        let name = match e {
            Ev::Connect => "connect".to_string(),
            Ev::Data(_) => "data".to_string(),
            Ev::Error(k) => format!("error {k}"),
            Ev::Disconnect => "disconnect".to_string(),
            Ev::Writable | Ev::Drained => continue,
        };
        if name == "data" && events.last().is_some_and(|l| l == "data") {
            continue;
        }
        events.push(name);
    }
    Trace {
        events,
        bytes: t.data,
    }
}

#[test]
#[cfg_attr(
    not(all(target_os = "linux", feature = "uring")),
    ignore = "skipped: io_uring driver not built"
)]
fn random_scripts_give_the_same_traces() {
    if !require_backend(Backend::Uring) {
        return;
    }
    let uring = event_loop(Backend::Uring);
    let mio = event_loop(Backend::Mio);
    let uring = Arc::new(uring);
    runner(32)
        .run(&prop::collection::vec(script(), 1..4), |scripts| {
            for s in &scripts {
                let a = run_script(&uring, s);
                let b = run_script(&mio, s);
                prop_assert_eq!(&a, &b, "io_uring and mio traces differ for {:?}", s);
                prop_assert_eq!(a.events.first().map(String::as_str), Some("connect"));
                prop_assert_eq!(a.events.last().map(String::as_str), Some("disconnect"));
            }
            Ok(())
        })
        .unwrap();
}
