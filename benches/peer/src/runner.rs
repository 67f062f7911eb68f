//! `all`: starts each server as a child process pinned to CPU 0 (`taskset -c 0`; CPUs
//! 0..N-1 with `--threads N`), drives it from this process pinned to the next CPU,
//! interleaves the servers (A B C A B C ...) within each cell, repeats, and writes the raw
//! data and the report.

use crate::load::{self, Cell, Measured, Snap};
use crate::proc;
use crate::report;
use crate::servers::{workers, KINDS, RINGMILL};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the results go by default: `benches/peer/results`.
pub fn default_out() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}

/// The repository's `BENCHMARKS.md`.
pub fn default_md() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md")
}

/// Every cell: the one-thread mio client over conns x size x depth, then the
/// thread-per-connection blocking client at depth 1.
pub fn cells() -> Vec<Cell> {
    let mut out = Vec::new();
    for blocking in [false, true] {
        for conns in [1, 64, 512] {
            for size in [64, 4096] {
                for depth in [1, 16] {
                    if blocking && depth != 1 {
                        continue;
                    }
                    out.push(Cell {
                        conns,
                        size,
                        depth,
                        blocking,
                    });
                }
            }
        }
    }
    out
}

/// `all`'s options.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
A run narrowed by --servers, --cells, --mode, --threads, --client-cpu, --client-threads, \
--base, fewer than 5 --reps or --quick writes to a temporary folder (printed at the end) unless --out/--md are given, so the committed \
results stay as they are; a full run writes benches/peer/results and BENCHMARKS.md.

Examples:
  all                                          every cell and server, 5 repetitions
  all --servers ringmill-uring,ringmill-mio,plain-mio,tokio --cells 4k --reps 5
  all --cells 64x4kx16,512x4kx16 --secs 1 --reps 3
  all --base ../main --servers tokio,plain-mio,ringmill-uring,ringmill-mio --idle 0
  all --threads 4                              on a machine with at least 5 CPUs")]
pub struct Opts {
    /// Measured window of each run, seconds [default: 2; --quick: 0.3].
    #[arg(long)]
    secs: Option<f64>,
    /// Warm-up before each window, seconds [default: 0.5; --quick: 0.1].
    #[arg(long)]
    warmup: Option<f64>,
    /// Repetitions of each cell, the servers interleaved within each [default: 5; --quick: 1].
    #[arg(long)]
    reps: Option<usize>,
    /// Connections of the idle-memory test, 0 to skip it [default: 10000; --quick: 1000].
    #[arg(long)]
    idle: Option<usize>,
    /// Servers to run, comma-separated, in the order they interleave (default: all; with
    /// --base, each ringmill server is followed by its twin from the other checkout, e.g.
    /// ringmill-uring@base, unless such twins are named here).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Cells to run, comma-separated specs: `CONNSxSIZExDEPTH` with `*` for any part
    /// (`*x4kx16`), a size alone (`4k`, `64b`), or `mio` / `blocking`, each optionally
    /// prefixed by the client mode (`blocking:64x*x1`). A spec with no `*` that is not in
    /// the standard grid adds that cell (`2048x4kx16`). Default: the whole grid.
    #[arg(long, value_delimiter = ',')]
    cells: Vec<String>,
    /// Only the cells of one load generator.
    #[arg(long, value_parser = ["mio", "blocking"])]
    mode: Option<String>,
    /// Loop threads of the ringmill servers (workers of tokio; the plain loop and monoio stay
    /// one thread). Servers are pinned to CPUs 0..N-1, the load generator to CPU N.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPU of the load generator [default: N, the one after the servers']. A CPU below N
    /// shares a core with the servers: for trying --threads on a small machine only, its
    /// numbers are no comparison (the report says so).
    #[arg(long)]
    client_cpu: Option<usize>,
    /// Threads of the mio load generator, on CPUs CLIENT_CPU.. (one each), each driving
    /// every n-th connection; the blocking client's threads share those CPUs. For a server
    /// with N loop threads one client thread is soon the limit.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Another checkout of the library, `[LABEL=]PATH` to its root (repeatable): its ringmill
    /// servers are built (this benchmark's server code against that library) and measured
    /// in the same run as `ringmill-uring@LABEL` and `ringmill-mio@LABEL` (LABEL: `base`).
    #[arg(long, value_name = "[LABEL=]PATH")]
    base: Vec<String>,
    /// Folder of the CSV files, machine.txt and chart.svg.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The markdown report to write [default: BENCHMARKS.md of the repository for a full
    /// run, OUT/BENCHMARKS.md otherwise].
    #[arg(long)]
    md: Option<PathBuf>,
    /// What to record as the library source (default: this checkout's git commit).
    #[arg(long)]
    source: Option<String>,
    /// A smoke run: short windows, 1 repetition, written to a temporary folder.
    #[arg(long)]
    quick: bool,
    /// Print the cells, servers, output and estimated time, and measure nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The options resolved.
struct Plan {
    secs: f64,
    warmup: f64,
    reps: usize,
    idle: usize,
    threads: usize,
    client_cpu: usize,
    client_threads: usize,
    servers: Vec<String>,
    cells: Vec<Cell>,
    bases: Vec<Base>,
    out: PathBuf,
    md: PathBuf,
    source: Option<String>,
    dry_run: bool,
}

/// Another checkout whose ringmill servers run beside this one's.
struct Base {
    label: String,
    root: PathBuf,
    exe: PathBuf,
    source: String,
}

fn parse_size(s: &str) -> Option<usize> {
    let l = s.to_ascii_lowercase();
    let l = l.trim_end_matches("ib");
    if let Some(k) = l.strip_suffix('k') {
        k.parse::<usize>().ok().map(|k| k * 1024)
    } else {
        l.trim_end_matches('b').parse().ok()
    }
}

/// One `--cells` spec: mode, conns, size, depth (`None`: any).
type Spec = (Option<bool>, Option<usize>, Option<usize>, Option<usize>);

fn parse_spec(spec: &str) -> Result<Spec, String> {
    let bad = || {
        format!(
            "bad cell spec {spec:?}: CONNSxSIZExDEPTH (`*` for any), a size like 4k or 64b, or \
             mio/blocking, optionally prefixed by mio: or blocking:"
        )
    };
    let (mode, rest) = match spec.split_once(':') {
        Some(("mio", r)) => (Some(false), r),
        Some(("blocking", r)) => (Some(true), r),
        Some(_) => return Err(bad()),
        None => match spec {
            "mio" => return Ok((Some(false), None, None, None)),
            "blocking" => return Ok((Some(true), None, None, None)),
            _ => (None, spec),
        },
    };
    let parts: Vec<&str> = rest.split('x').collect();
    let num = |p: &str, size: bool| -> Result<Option<usize>, String> {
        if p == "*" {
            return Ok(None);
        }
        let v = if size { parse_size(p) } else { p.parse().ok() };
        match v {
            Some(v) if v > 0 => Ok(Some(v)),
            _ => Err(bad()),
        }
    };
    match parts.as_slice() {
        [c, sz, d] => Ok((mode, num(c, false)?, num(sz, true)?, num(d, false)?)),
        [sz] if sz.ends_with(['k', 'K', 'b', 'B']) => Ok((mode, None, num(sz, true)?, None)),
        _ => Err(bad()),
    }
}

/// The cells `specs` select (all of the grid when empty), limited to `mode`.
fn select_cells(specs: &[String], mode: Option<&str>) -> Result<Vec<Cell>, String> {
    let in_mode = |c: &Cell| mode.is_none_or(|m| m == c.mode());
    let grid = cells();
    if specs.is_empty() {
        return Ok(grid.into_iter().filter(in_mode).collect());
    }
    let specs = specs
        .iter()
        .map(|s| parse_spec(s.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let matches = |c: &Cell, s: &Spec| {
        s.0.is_none_or(|b| b == c.blocking)
            && s.1.is_none_or(|v| v == c.conns)
            && s.2.is_none_or(|v| v == c.size)
            && s.3.is_none_or(|v| v == c.depth)
    };
    let mut out: Vec<Cell> = grid
        .iter()
        .filter(|c| specs.iter().any(|s| matches(c, s)))
        .copied()
        .collect();
    for s in &specs {
        if let (Some(conns), Some(size), Some(depth)) = (s.1, s.2, s.3) {
            let blocking = s.0.unwrap_or(mode == Some("blocking"));
            let c = Cell {
                conns,
                size,
                depth,
                blocking,
            };
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out.retain(in_mode);
    if out.is_empty() {
        return Err("--cells and --mode select no cell".into());
    }
    Ok(out)
}

fn plan(o: Opts) -> Result<Plan, String> {
    if o.threads == 0 || o.client_threads == 0 {
        return Err("--threads and --client-threads must be at least 1".into());
    }
    let narrowed = o.quick
        || !o.servers.is_empty()
        || !o.cells.is_empty()
        || o.mode.is_some()
        || o.threads != 1
        || o.client_cpu.is_some()
        || o.client_threads != 1
        || o.reps.is_some_and(|r| r < 5)
        || !o.base.is_empty();
    let secs = o.secs.unwrap_or(if o.quick { 0.3 } else { 2.0 });
    let warmup = o.warmup.unwrap_or(if o.quick { 0.1 } else { 0.5 });
    let reps = o.reps.unwrap_or(if o.quick { 1 } else { 5 });
    let idle = o.idle.unwrap_or(if o.quick { 1000 } else { 10_000 });
    if !(secs > 0.0 && secs.is_finite() && warmup >= 0.0 && warmup.is_finite()) {
        return Err("--secs must be above 0 and --warmup at least 0".into());
    }
    if reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    let (out, md) = match (o.out, o.md) {
        (Some(out), Some(md)) => (out, md),
        (Some(out), None) => {
            let md = if narrowed {
                out.join("BENCHMARKS.md")
            } else {
                default_md()
            };
            (out, md)
        }
        (None, md) => {
            let out = if narrowed {
                std::env::temp_dir().join("ringmill-peer-run")
            } else {
                default_out()
            };
            let md = md.unwrap_or_else(|| {
                if narrowed {
                    out.join("BENCHMARKS.md")
                } else {
                    default_md()
                }
            });
            (out, md)
        }
    };
    let mut bases: Vec<(String, PathBuf)> = Vec::new();
    for b in &o.base {
        let (label, path) = match b.split_once('=') {
            Some((l, p)) => (l.to_string(), p),
            None if o.base.len() == 1 => ("base".to_string(), b.as_str()),
            None => return Err("with several --base, give each a label: LABEL=PATH".into()),
        };
        if label.is_empty()
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "bad --base label {label:?}: letters, digits, - and _"
            ));
        }
        if bases.iter().any(|(l, _)| *l == label) {
            return Err(format!("--base label {label} given twice"));
        }
        let root = fs::canonicalize(path).map_err(|e| format!("--base {path}: {e}"))?;
        if !root.join("Cargo.toml").is_file() || !root.join("src/lib.rs").is_file() {
            return Err(format!(
                "--base {}: not the root of a ringmill checkout (no Cargo.toml and src/lib.rs)",
                root.display()
            ));
        }
        bases.push((label, root));
    }
    let mut servers: Vec<String> = if o.servers.is_empty() {
        KINDS.iter().map(|s| s.to_string()).collect()
    } else {
        o.servers.iter().map(|s| s.trim().to_string()).collect()
    };
    for s in &servers {
        let ok = match s.split_once('@') {
            None => KINDS.contains(&s.as_str()),
            Some((k, l)) => RINGMILL.contains(&k) && bases.iter().any(|(b, _)| b == l),
        };
        if !ok {
            return Err(format!(
                "unknown server {s}; one of {}{}",
                KINDS.join(", "),
                if bases.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", or {} followed by @ and a --base label",
                        RINGMILL.join(" or ")
                    )
                }
            ));
        }
        if servers.iter().filter(|t| *t == s).count() > 1 {
            return Err(format!("server {s} named twice"));
        }
    }
    if !bases.is_empty() && !servers.iter().any(|s| s.contains('@')) {
        let mut with = Vec::new();
        for s in servers {
            let twin = RINGMILL.contains(&s.as_str());
            with.push(s.clone());
            if twin {
                for (l, _) in &bases {
                    with.push(format!("{s}@{l}"));
                }
            }
        }
        servers = with;
    }
    if !bases.is_empty() && !servers.iter().any(|s| s.contains('@')) {
        return Err(format!(
            "--base builds {} only, and --servers names neither",
            RINGMILL.join(" and ")
        ));
    }
    let cells = select_cells(&o.cells, o.mode.as_deref())?;
    let bases = bases
        .into_iter()
        .map(|(label, root)| {
            let source = git_source(&root, &[]);
            Base {
                exe: PathBuf::new(),
                label,
                root,
                source,
            }
        })
        .collect();
    Ok(Plan {
        secs,
        warmup,
        reps,
        idle,
        threads: o.threads,
        client_cpu: o.client_cpu.unwrap_or(o.threads),
        client_threads: o.client_threads,
        servers,
        cells,
        bases,
        out,
        md,
        source: o.source,
        dry_run: o.dry_run,
    })
}

/// Builds this benchmark's servers against `base`'s library: a copy of this package (named
/// `ringmill-peer-bench-LABEL`, its `ringmill` dependency pointing at the other checkout)
/// under this build's target folder, built into the same target folder so the peers'
/// dependencies are compiled once. Returns the binary.
fn build_base(base: &Base) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe.parent().ok_or("no folder of the runner binary")?;
    let target = profile_dir.parent().ok_or("no target folder")?;
    let release = profile_dir.file_name().and_then(|n| n.to_str()) == Some("release");
    let me = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = target.join("peer-base").join(&base.label);
    let name = format!("ringmill-peer-bench-{}", base.label);
    fs::create_dir_all(dir.join("src")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let manifest = fs::read_to_string(me.join("Cargo.toml")).map_err(|e| e.to_string())?;
    let root = base.root.display().to_string();
    if root.contains('"') || root.contains('\\') {
        return Err(format!("--base path {root} has a quote or backslash"));
    }
    let mut rewritten = String::new();
    let (mut named, mut pointed) = (false, false);
    for line in manifest.lines() {
        if line.starts_with("name = ") && !named {
            rewritten.push_str(&format!("name = \"{name}\"\n"));
            named = true;
        } else if line.starts_with("ringmill = ") {
            rewritten.push_str(&format!("ringmill = {{ path = \"{root}\" }}\n"));
            pointed = true;
        } else {
            rewritten.push_str(line);
            rewritten.push('\n');
        }
    }
    if !(named && pointed) {
        return Err("Cargo.toml of the peer benchmark has no name or ringmill line".into());
    }
    // Write only what changed, so an unchanged copy is not rebuilt.
    let put = |path: PathBuf, text: &[u8]| -> Result<(), String> {
        if fs::read(&path).ok().as_deref() != Some(text) {
            fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    };
    put(dir.join("Cargo.toml"), rewritten.as_bytes())?;
    if !dir.join("Cargo.lock").exists() {
        if let Ok(lock) = fs::read(me.join("Cargo.lock")) {
            put(dir.join("Cargo.lock"), &lock)?;
        }
    }
    for entry in fs::read_dir(me.join("src")).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let text = fs::read(entry.path()).map_err(|e| e.to_string())?;
        put(dir.join("src").join(entry.file_name()), &text)?;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building the ringmill servers against {} ({}) as {name}",
        base.root.display(),
        base.source
    );
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cargo build for --base {}: {e}", base.label))?;
    if !status.success() {
        return Err(format!(
            "building the servers against {} failed (see above); its library API may differ \
             from the one this benchmark's servers use",
            base.root.display()
        ));
    }
    let built = profile_dir.join(&name);
    if !built.is_file() {
        return Err(format!("{} was not built", built.display()));
    }
    Ok(built)
}

/// One echo server child process.
struct ServerProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    addr: SocketAddr,
    description: String,
}

fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl ServerProc {
    /// Starts `kind` (`KIND` or `KIND@LABEL`) pinned to CPUs `0..threads`.
    fn spawn(kind: &str, p: &Plan, taskset: bool) -> Result<Self, String> {
        let (exe, what) = match kind.split_once('@') {
            None => (std::env::current_exe().map_err(|e| e.to_string())?, kind),
            Some((k, label)) => (
                p.bases
                    .iter()
                    .find(|b| b.label == label)
                    .map(|b| b.exe.clone())
                    .ok_or_else(|| format!("no --base labelled {label}"))?,
                k,
            ),
        };
        let port = free_port()?;
        let mut cmd = if taskset {
            let mut c = Command::new("taskset");
            let cpus = if p.threads == 1 {
                "0".to_string()
            } else {
                format!("0-{}", p.threads - 1)
            };
            c.arg("-c").arg(cpus).arg(&exe);
            c
        } else {
            let mut c = Command::new(&exe);
            c.env("PEER_PIN_CPUS", p.threads.to_string());
            c
        };
        cmd.arg("server")
            .arg(what)
            .arg(port.to_string())
            .arg(p.threads.to_string());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {kind}: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .map_err(|e| format!("{kind}: {e}"))?;
        let Some(description) = line.trim().strip_prefix("READY ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{kind} did not start (see its error above)"));
        };
        Ok(ServerProc {
            pid: child.id(),
            description: description.to_string(),
            child,
            stdin,
            stdout,
            addr: ([127, 0, 0, 1], port).into(),
        })
    }

    fn allocs(&mut self) -> Result<u64, String> {
        writeln!(self.stdin, "stats").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        line.trim()
            .strip_prefix("allocs ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad stats reply {line:?}"))
    }

    fn snap(&mut self) -> Result<Snap, String> {
        Ok(Snap {
            server_ticks: proc::cpu_ticks(self.pid)?,
            server_allocs: self.allocs()?,
            client_ticks: proc::self_cpu_ticks(),
        })
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured run of one server in one cell: a line of `raw.csv`.
#[derive(Debug, Clone)]
pub struct Row {
    /// The cell.
    pub cell: Cell,
    /// Server kind.
    pub server: String,
    /// Repetition (0-based).
    pub rep: usize,
    /// Echoed messages per second.
    pub msgs_per_s: f64,
    /// Server CPU time (user + system) per echoed message, microseconds.
    pub cpu_us_per_msg: f64,
    /// Server CPU time over wall time in the window (1.0 = one core busy).
    pub server_cpu: f64,
    /// Load generator CPU time over wall time.
    pub client_cpu: f64,
    /// RTT median, microseconds.
    pub p50_us: f64,
    /// RTT 99th percentile, microseconds.
    pub p99_us: f64,
    /// Server allocations per echoed message.
    pub allocs_per_msg: f64,
}

impl Row {
    /// The CSV header matching [`Row::csv`].
    pub const HEADER: &'static str = "mode,conns,size,depth,server,rep,msgs_per_s,cpu_us_per_msg,server_cpu,client_cpu,rtt_p50_us,rtt_p99_us,allocs_per_msg";

    /// One CSV line.
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{:.1},{:.4},{:.3},{:.3},{:.2},{:.2},{:.4}",
            self.cell.mode(),
            self.cell.conns,
            self.cell.size,
            self.cell.depth,
            self.server,
            self.rep,
            self.msgs_per_s,
            self.cpu_us_per_msg,
            self.server_cpu,
            self.client_cpu,
            self.p50_us,
            self.p99_us,
            self.allocs_per_msg
        )
    }

    fn from(cell: Cell, server: &str, rep: usize, mut m: Measured) -> Row {
        let secs = m.elapsed.as_secs_f64();
        let msgs = m.msgs.max(1) as f64;
        let tck = proc::clk_tck();
        let server_s = (m.end.server_ticks - m.start.server_ticks) as f64 / tck;
        let client_s = (m.end.client_ticks - m.start.client_ticks) as f64 / tck;
        // The `stats` requests at both ends allocate nothing in the server (a reused line
        // buffer, a formatted line into the already allocated stdout buffer).
        let allocs = m.end.server_allocs.saturating_sub(m.start.server_allocs);
        Row {
            cell,
            server: server.to_string(),
            rep,
            msgs_per_s: m.msgs as f64 / secs,
            cpu_us_per_msg: server_s * 1e6 / msgs,
            server_cpu: server_s / secs,
            client_cpu: client_s / secs,
            p50_us: load::quantile(&mut m.rtts, 0.5) as f64 / 1e3,
            p99_us: load::quantile(&mut m.rtts, 0.99) as f64 / 1e3,
            allocs_per_msg: allocs as f64 / msgs,
        }
    }
}

/// One idle-memory run: a line of `idle.csv`.
#[derive(Debug, Clone)]
pub struct IdleRow {
    /// Server kind.
    pub server: String,
    /// Repetition (0-based).
    pub rep: usize,
    /// Idle connections held open.
    pub conns: usize,
    /// Server RSS before they were opened, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with all of them open, KiB.
    pub rss_after_kib: u64,
}

impl IdleRow {
    /// The CSV header matching [`IdleRow::csv`].
    pub const HEADER: &'static str = "server,rep,conns,rss_before_kib,rss_after_kib,bytes_per_conn";

    /// RSS growth per connection, bytes.
    pub fn bytes_per_conn(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0 / self.conns as f64
    }

    /// One CSV line.
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{:.0}",
            self.server,
            self.rep,
            self.conns,
            self.rss_before_kib,
            self.rss_after_kib,
            self.bytes_per_conn()
        )
    }
}

fn idle_run(server: &mut ServerProc, n: usize) -> Result<(u64, u64), String> {
    // One connection first, so lazily built state is there before the baseline.
    drop(load::connect_checked(server.addr, 1)?);
    settle();
    let before = proc::rss_kib(server.pid)?;
    let conns = load::connect_checked(server.addr, n)?;
    settle();
    let after = proc::rss_kib(server.pid)?;
    for c in &conns {
        // Reset rather than FIN: no TIME_WAIT sockets pile up across runs.
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `c` is an open socket; `l` is a valid linger struct of the size passed.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(c),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
    drop(conns);
    Ok((before, after))
}

/// Lets the server finish what the last exchange started (freeing, accounting) before RSS
/// is read. This is part of the measurement, not a synchronisation.
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

/// Seconds one run takes besides its window and warm-up (server start, connects, checks).
const RUN_OVERHEAD_S: f64 = 0.35;

/// One line: what the run does and about how long it takes (without a `--base` build).
fn summary(p: &Plan) -> String {
    let total = p.cells.len() * p.reps * p.servers.len();
    let estimate = total as f64 * (p.secs + p.warmup + RUN_OVERHEAD_S)
        + if p.idle > 0 {
            (p.reps * p.servers.len()) as f64 * (0.6 + p.idle as f64 * 1e-4)
        } else {
            0.0
        };
    format!(
        "{} cells x {} servers x {} reps, {} s each (+{} s warm-up); idle: {} connections; \
         {} loop thread(s), {} client thread(s); about {:.0} min",
        p.cells.len(),
        p.servers.len(),
        p.reps,
        p.secs,
        p.warmup,
        p.idle,
        p.threads,
        p.client_threads,
        (estimate / 60.0).ceil()
    )
}

/// `--dry-run`'s account of the plan.
fn describe(p: &Plan) -> String {
    let mut s = summary(p);
    s.push_str(&format!("\nservers: {}", p.servers.join(", ")));
    let cells: Vec<String> = p
        .cells
        .iter()
        .map(|c| format!("{}:{}x{}x{}", c.mode(), c.conns, c.size, c.depth))
        .collect();
    s.push_str(&format!("\ncells: {}", cells.join(", ")));
    for b in &p.bases {
        s.push_str(&format!(
            "\nbase {}: {} ({}), built before measuring",
            b.label,
            b.root.display(),
            b.source
        ));
    }
    s.push_str(&format!(
        "\nwrites: {} and {}",
        p.out.display(),
        p.md.display()
    ));
    s
}

/// `all [options]`.
pub fn main(o: Opts) -> Result<(), String> {
    let mut p = plan(o)?;
    // Taken before measuring: the server binary was built from this state just now, and
    // commits or edits made while the run goes on are not part of it.
    let source = p.source.clone().unwrap_or_else(source_label);
    let (model, cores, kernel) = proc::machine();
    let client_end = p.client_cpu + p.client_threads;
    if cores < p.threads.max(client_end) {
        return Err(format!(
            "needs at least {} CPUs (server on CPUs 0..{}, load generator on CPUs {}..{}); this machine has {cores}",
            p.threads.max(client_end),
            p.threads - 1,
            p.client_cpu,
            client_end - 1
        ));
    }
    let client_cpus: Vec<usize> = (p.client_cpu..client_end).collect();
    let nofile = proc::raise_nofile();
    if (nofile as usize) < p.idle + 100 {
        return Err(format!(
            "open-file limit {nofile} is too low for {} idle connections (raise the hard limit)",
            p.idle
        ));
    }
    if p.dry_run {
        eprintln!("{}", describe(&p));
        return Ok(());
    }
    for i in 0..p.bases.len() {
        let exe = build_base(&p.bases[i])?;
        p.bases[i].exe = exe;
    }
    proc::pin_set(p.client_cpu..client_end)?;
    let taskset = taskset_available();
    fs::create_dir_all(&p.out).map_err(|e| format!("{}: {e}", p.out.display()))?;
    let total = p.cells.len() * p.reps * p.servers.len();
    eprintln!("{}", summary(&p));
    let began = Instant::now();
    let mut descriptions: Vec<(String, String)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let mut n = 0;
    for cell in &p.cells {
        for rep in 0..p.reps {
            for kind in &p.servers {
                n += 1;
                let result = ServerProc::spawn(kind, &p, taskset).and_then(|mut server| {
                    if !descriptions.iter().any(|(k, _)| k == kind) {
                        descriptions.push((kind.clone(), server.description.clone()));
                    }
                    let addr = server.addr;
                    load::run(
                        addr,
                        *cell,
                        Duration::from_secs_f64(p.warmup),
                        Duration::from_secs_f64(p.secs),
                        &mut || server.snap(),
                        &client_cpus,
                    )
                });
                match result {
                    Ok(m) => {
                        let row = Row::from(*cell, kind, rep, m);
                        eprintln!(
                            "[{n}/{total} {:>4.0} s] {} conns={} size={} depth={} {kind}: {:.0} msg/s, {:.2} us cpu/msg, p50 {:.0} us, p99 {:.0} us, server cpu {:.2}, client cpu {:.2}",
                            began.elapsed().as_secs_f64(),
                            cell.mode(), cell.conns, cell.size, cell.depth,
                            row.msgs_per_s, row.cpu_us_per_msg, row.p50_us, row.p99_us,
                            row.server_cpu, row.client_cpu
                        );
                        rows.push(row);
                    }
                    Err(e) => {
                        let msg = format!(
                            "{} conns={} size={} depth={} {kind} rep {rep}: {e}",
                            cell.mode(),
                            cell.conns,
                            cell.size,
                            cell.depth
                        );
                        eprintln!("FAILED {msg}");
                        failures.push(msg);
                    }
                }
            }
        }
    }
    let mut idle_rows = Vec::new();
    if p.idle > 0 {
        for rep in 0..p.reps {
            for kind in &p.servers {
                let result = ServerProc::spawn(kind, &p, taskset)
                    .and_then(|mut server| idle_run(&mut server, p.idle));
                match result {
                    Ok((before, after)) => {
                        let row = IdleRow {
                            server: kind.clone(),
                            rep,
                            conns: p.idle,
                            rss_before_kib: before,
                            rss_after_kib: after,
                        };
                        eprintln!(
                            "idle {kind} rep {rep}: {} -> {} KiB, {:.0} B/conn",
                            before,
                            after,
                            row.bytes_per_conn()
                        );
                        idle_rows.push(row);
                    }
                    Err(e) => {
                        let msg = format!("idle {kind} rep {rep}: {e}");
                        eprintln!("FAILED {msg}");
                        failures.push(msg);
                    }
                }
            }
        }
    }
    let mut raw = String::from(Row::HEADER);
    raw.push('\n');
    for r in &rows {
        raw.push_str(&r.csv());
        raw.push('\n');
    }
    write(&p.out.join("raw.csv"), &raw)?;
    let mut idle = String::from(IdleRow::HEADER);
    idle.push('\n');
    for r in &idle_rows {
        idle.push_str(&r.csv());
        idle.push('\n');
    }
    write(&p.out.join("idle.csv"), &idle)?;
    let mut machine = String::new();
    machine.push_str(&format!("cpu: {model}\ncores: {cores}\nkernel: {kernel}\n"));
    machine.push_str(&format!(
        "run: {} cells x {} servers x {} reps, {} s window after {} s warm-up; {} idle connections; pinned with {}; took {:.0} s\n",
        p.cells.len(), p.servers.len(), p.reps, p.secs, p.warmup, p.idle,
        if taskset { "taskset" } else { "sched_setaffinity" },
        began.elapsed().as_secs_f64()
    ));
    machine.push_str(&format!("threads: {}\n", p.threads));
    machine.push_str(&format!("client cpu: {}\n", p.client_cpu));
    machine.push_str(&format!("client threads: {}\n", p.client_threads));
    machine.push_str(&format!("source: {source}\n"));
    for b in &p.bases {
        machine.push_str(&format!(
            "base {}: {}, {}\n",
            b.label,
            b.root.display(),
            b.source
        ));
    }
    for (k, d) in &descriptions {
        machine.push_str(&format!("server {k}: {d}\n"));
    }
    for k in &p.servers {
        machine.push_str(&format!("workers {k}: {}\n", workers(k, p.threads)));
    }
    for f in &failures {
        machine.push_str(&format!("failure: {f}\n"));
    }
    write(&p.out.join("machine.txt"), &machine)?;
    report::generate(&p.out, &p.md)?;
    eprintln!(
        "wrote {} and {} in {:.0} s",
        p.out.display(),
        p.md.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The library source measured: the git commit of this checkout, and whether it has
/// uncommitted changes (outside the files this runner writes itself).
fn source_label() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    git_source(
        &root,
        &[
            ":(top,exclude)BENCHMARKS.md",
            ":(top,exclude)benches/peer/results",
        ],
    )
}

/// `commit X` (with "with uncommitted changes" when the tracked files outside `exclude`
/// differ from it) of the git checkout at `dir`.
fn git_source(dir: &Path, exclude: &[&str]) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let mut args = vec![
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
            ];
            args.extend_from_slice(exclude);
            let dirty = git(&args).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("commit {commit} with uncommitted changes")
            } else {
                format!("commit {commit}")
            }
        }
        None => "unknown (not a git checkout; pass --source)".into(),
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(conns: usize, size: usize, depth: usize, blocking: bool) -> Cell {
        Cell {
            conns,
            size,
            depth,
            blocking,
        }
    }

    #[test]
    fn cell_specs_select_from_the_grid_and_add_exact_cells() {
        let specs = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        // A size alone: every cell of that size, both clients.
        let c = select_cells(&specs("4k"), None).unwrap();
        assert_eq!(c.len(), 9, "{c:?}");
        assert!(c.iter().all(|c| c.size == 4096));
        // Wildcards and a mode prefix.
        let c = select_cells(&specs("mio:*x4kx16"), None).unwrap();
        assert_eq!(
            c,
            vec![
                cell(1, 4096, 16, false),
                cell(64, 4096, 16, false),
                cell(512, 4096, 16, false)
            ]
        );
        // An exact cell outside the grid is added, once.
        let c = select_cells(&specs("2048x4kx16,2048x4096x16"), None).unwrap();
        assert_eq!(c, vec![cell(2048, 4096, 16, false)]);
        // --mode limits what the specs select.
        let c = select_cells(&specs("64x64bx1"), Some("blocking")).unwrap();
        assert_eq!(c, vec![cell(64, 64, 1, true)]);
        assert_eq!(select_cells(&[], Some("mio")).unwrap().len(), 12);
        assert_eq!(select_cells(&[], None).unwrap(), cells());
    }

    #[test]
    fn bad_cell_specs_are_refused_with_the_syntax() {
        for bad in [
            "64x4k",
            "x4kx16",
            "0x4kx16",
            "64x4kx16x2",
            "fast:4k",
            "64",
            "4q",
        ] {
            let e = select_cells(&[bad.to_string()], None).unwrap_err();
            assert!(e.contains("CONNSxSIZExDEPTH"), "{bad}: {e}");
        }
        let e = select_cells(&["blocking:*x4kx16".to_string()], None).unwrap_err();
        assert!(e.contains("select no cell"), "{e}");
    }
}
