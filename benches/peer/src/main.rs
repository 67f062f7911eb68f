//! Echo-server comparison: ringmill (io_uring and mio backends) against tokio, monoio and
//! mill-net 4.0, measured by a load generator that is none of them.
//!
//! ```text
//! cargo run --release --manifest-path benches/peer/Cargo.toml -- all
//! ```
//!
//! `all` runs every cell, writes `results/raw.csv`, `results/idle.csv`, `results/chart.svg`
//! and the repository's `BENCHMARKS.md`. Subcommands:
//!
//! - `all [--secs S] [--warmup S] [--reps N (default 5)] [--servers a,b] [--idle N] [--mode mio|blocking]
//!   [--out DIR] [--md PATH] [--source TEXT] [--quick]`: measure and report (`--quick`: a one-minute smoke
//!   run written to a temporary folder);
//! - `report`: regenerate `BENCHMARKS.md` and the chart from the CSV files;
//! - `server KIND PORT`: run one echo server (the runner starts these as child processes);
//! - `load HOST:PORT CONNS SIZE DEPTH [blocking]`: run the load generator alone against any
//!   echo server for a few seconds and print what it measured.

mod alloc;
mod load;
mod proc;
mod report;
mod runner;
mod servers;

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => servers::main(&args[1..]),
        Some("all") => runner::main(&args[1..]),
        Some("report") => report::main(&args[1..]),
        Some("load") => load::main(&args[1..]),
        _ => Err(format!(
            "usage: {} all | report | server KIND PORT | load ADDR CONNS SIZE DEPTH [blocking]\n\
             servers: {}",
            env!("CARGO_PKG_NAME"),
            servers::KINDS.join(", ")
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
