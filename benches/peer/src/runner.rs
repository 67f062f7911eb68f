//! `all`: starts each server as a child process pinned to CPU 0 (`taskset -c 0`), drives it
//! from this process pinned to CPU 1, interleaves the servers (A B C A B C ...) within each
//! cell, repeats, and writes the raw data and the report.

use crate::load::{self, Cell, Measured, Snap};
use crate::proc;
use crate::report;
use crate::servers::KINDS;
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

struct Opts {
    secs: f64,
    warmup: f64,
    reps: usize,
    idle: usize,
    servers: Vec<String>,
    out: PathBuf,
    md: PathBuf,
    only_mode: Option<String>,
    source: Option<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        secs: 2.0,
        warmup: 0.5,
        reps: 5,
        idle: 10_000,
        servers: KINDS.iter().map(|s| s.to_string()).collect(),
        out: default_out(),
        md: default_md(),
        only_mode: None,
        source: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--secs" => o.secs = val()?.parse().map_err(|_| "bad --secs")?,
            "--warmup" => o.warmup = val()?.parse().map_err(|_| "bad --warmup")?,
            "--reps" => o.reps = val()?.parse().map_err(|_| "bad --reps")?,
            "--idle" => o.idle = val()?.parse().map_err(|_| "bad --idle")?,
            "--servers" => o.servers = val()?.split(',').map(str::to_string).collect(),
            "--out" => o.out = val()?.into(),
            "--md" => o.md = val()?.into(),
            "--mode" => o.only_mode = Some(val()?),
            "--source" => o.source = Some(val()?),
            "--quick" => {
                o.secs = 0.3;
                o.warmup = 0.1;
                o.reps = 1;
                o.idle = 1000;
                o.out = std::env::temp_dir().join("ringmill-peer-quick");
                o.md = o.out.join("BENCHMARKS.md");
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    for s in &o.servers {
        if !KINDS.contains(&s.as_str()) {
            return Err(format!("unknown server {s}; one of {}", KINDS.join(", ")));
        }
    }
    Ok(o)
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
    fn spawn(kind: &str, taskset: bool) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let port = free_port()?;
        let mut cmd = if taskset {
            let mut c = Command::new("taskset");
            c.arg("-c").arg("0").arg(&exe);
            c
        } else {
            let mut c = Command::new(&exe);
            c.env("PEER_PIN_CPU", "0");
            c
        };
        cmd.arg("server").arg(kind).arg(port.to_string());
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

/// `all [options]`.
pub fn main(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    // Taken before measuring: the server binary was built from this state just now, and
    // commits or edits made while the run goes on are not part of it.
    let source = o.source.clone().unwrap_or_else(source_label);
    let (model, cores, kernel) = proc::machine();
    if cores < 2 {
        return Err("needs at least 2 CPUs (server on CPU 0, load generator on CPU 1)".into());
    }
    let nofile = proc::raise_nofile();
    if (nofile as usize) < o.idle + 100 {
        return Err(format!(
            "open-file limit {nofile} is too low for {} idle connections (raise the hard limit)",
            o.idle
        ));
    }
    proc::pin_to(1)?;
    let taskset = taskset_available();
    fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let all_cells: Vec<Cell> = cells()
        .into_iter()
        .filter(|c| o.only_mode.as_deref().is_none_or(|m| m == c.mode()))
        .collect();
    let total = all_cells.len() * o.reps * o.servers.len();
    eprintln!(
        "{} cells x {} servers x {} reps, {:.1} s each (+{:.1} s warm-up); idle: {} connections",
        all_cells.len(),
        o.servers.len(),
        o.reps,
        o.secs,
        o.warmup,
        o.idle
    );
    let began = Instant::now();
    let mut descriptions: Vec<(String, String)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let mut n = 0;
    for cell in &all_cells {
        for rep in 0..o.reps {
            for kind in &o.servers {
                n += 1;
                let result = ServerProc::spawn(kind, taskset).and_then(|mut server| {
                    if !descriptions.iter().any(|(k, _)| k == kind) {
                        descriptions.push((kind.clone(), server.description.clone()));
                    }
                    let addr = server.addr;
                    load::run(
                        addr,
                        *cell,
                        Duration::from_secs_f64(o.warmup),
                        Duration::from_secs_f64(o.secs),
                        &mut || server.snap(),
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
    if o.idle > 0 {
        for rep in 0..o.reps {
            for kind in &o.servers {
                let result = ServerProc::spawn(kind, taskset)
                    .and_then(|mut server| idle_run(&mut server, o.idle));
                match result {
                    Ok((before, after)) => {
                        let row = IdleRow {
                            server: kind.clone(),
                            rep,
                            conns: o.idle,
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
    write(&o.out.join("raw.csv"), &raw)?;
    let mut idle = String::from(IdleRow::HEADER);
    idle.push('\n');
    for r in &idle_rows {
        idle.push_str(&r.csv());
        idle.push('\n');
    }
    write(&o.out.join("idle.csv"), &idle)?;
    let mut machine = String::new();
    machine.push_str(&format!("cpu: {model}\ncores: {cores}\nkernel: {kernel}\n"));
    machine.push_str(&format!(
        "run: {} cells x {} servers x {} reps, {} s window after {} s warm-up; {} idle connections; pinned with {}; took {:.0} s\n",
        all_cells.len(), o.servers.len(), o.reps, o.secs, o.warmup, o.idle,
        if taskset { "taskset" } else { "sched_setaffinity" },
        began.elapsed().as_secs_f64()
    ));
    machine.push_str(&format!("source: {source}\n"));
    for (k, d) in &descriptions {
        machine.push_str(&format!("server {k}: {d}\n"));
    }
    for f in &failures {
        machine.push_str(&format!("failure: {f}\n"));
    }
    write(&o.out.join("machine.txt"), &machine)?;
    report::generate(&o.out, &o.md)?;
    eprintln!(
        "wrote {} and {} in {:.0} s",
        o.out.display(),
        o.md.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The library source measured: the git commit of this checkout, and whether it has
/// uncommitted changes (outside the files this runner writes itself).
fn source_label() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
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
            let dirty = git(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
                ":(top,exclude)BENCHMARKS.md",
                ":(top,exclude)benches/peer/results",
            ])
            .is_some_and(|s| !s.is_empty());
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
