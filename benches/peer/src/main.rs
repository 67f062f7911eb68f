//! Echo-server comparison: ringmill (io_uring and mio backends) against tokio, monoio,
//! mill-net 4.0 and a plain mio loop, measured by a load generator that is none of them.
//!
//! ```text
//! cargo run --release --manifest-path benches/peer/Cargo.toml -- all
//! ```
//!
//! `all` runs every cell, writes `results/raw.csv`, `results/idle.csv`, `results/chart.svg`
//! and the repository's `BENCHMARKS.md`; `all --help` lists its options (a subset of
//! servers and cells, repetitions, window, loop threads, another checkout of the library to
//! compare against). Subcommands:
//!
//! - `all [OPTIONS]`: measure and report;
//! - `report`: regenerate `BENCHMARKS.md` and the chart from the CSV files;
//! - `server KIND PORT [THREADS]`: run one echo server (the runner starts these as child
//!   processes);
//! - `load HOST:PORT CONNS SIZE DEPTH [blocking]`: run the load generator alone against any
//!   echo server for a few seconds and print what it measured;
//! - `recv-copy [OPTIONS]`: the kernel's receive copy into one buffer against several taken
//!   in turn, with no event loop around it.

mod alloc;
mod load;
mod plain;
mod proc;
mod recv_copy;
mod report;
mod runner;
mod servers;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(
    name = "ringmill-peer-bench",
    about = "Echo-server comparison of ringmill against tokio, monoio, mill-net and a plain mio loop"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure (every cell and server unless narrowed) and write the report.
    All(runner::Opts),
    /// Regenerate BENCHMARKS.md and the chart from the stored CSV files.
    Report(report::Opts),
    /// Run one echo server (the runner starts these as child processes).
    Server {
        /// Server kind: tokio, monoio, mill-net, plain-mio, ringmill-uring, ringmill-mio.
        kind: String,
        /// Port on 127.0.0.1.
        port: u16,
        /// Loop threads (ringmill) or workers (tokio); the others ignore it.
        #[arg(default_value_t = 1)]
        threads: usize,
    },
    /// Run the load generator alone against an echo server (1 s warm-up, 3 s window).
    Load {
        /// HOST:PORT of the echo server.
        addr: std::net::SocketAddr,
        /// Connections.
        conns: usize,
        /// Message size, bytes.
        size: usize,
        /// Messages in flight per connection.
        depth: usize,
        /// `blocking`: the thread-per-connection client instead of the mio one.
        mode: Option<String>,
    },
    /// Receiver CPU per byte when `recv(2)` fills one buffer against several taken in turn
    /// (as io_uring takes provided buffers), over loopback, with no event loop.
    RecvCopy(recv_copy::Opts),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Server {
            kind,
            port,
            threads,
        } => servers::main(&kind, port, threads),
        Cmd::All(o) => runner::main(o),
        Cmd::Report(o) => report::main(o),
        Cmd::RecvCopy(o) => recv_copy::main(o),
        Cmd::Load {
            addr,
            conns,
            size,
            depth,
            mode,
        } => match mode.as_deref() {
            None | Some("mio") => load::main(addr, conns, size, depth, false),
            Some("blocking") => load::main(addr, conns, size, depth, true),
            Some(other) => Err(format!("unknown load mode {other}: mio or blocking")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
