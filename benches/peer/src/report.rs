//! `report`: turns `raw.csv`, `idle.csv` and `machine.txt` into `BENCHMARKS.md` (medians,
//! ratios to tokio, the targets checked against the numbers) and `chart.svg`.

use crate::runner::{default_md, default_out};
use crate::servers::{BASELINE, KINDS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// `report [--out DIR] [--md PATH]`.
pub fn main(args: &[String]) -> Result<(), String> {
    let mut out = default_out();
    let mut md = default_md();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--out" => out = PathBuf::from(v),
            "--md" => md = PathBuf::from(v),
            other => return Err(format!("unknown option {other}")),
        }
    }
    generate(&out, &md)
}

/// A cell's key: mode, conns, size, depth.
type Key = (String, usize, usize, usize);

#[derive(Default, Clone, Copy)]
struct Med {
    rate: f64,
    cpu: f64,
    p50: f64,
    p99: f64,
    allocs: f64,
    client_cpu: f64,
    server_cpu: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Data {
    /// Cells in run order.
    cells: Vec<Key>,
    /// Servers in run order.
    servers: Vec<String>,
    med: BTreeMap<(Key, String), Med>,
    /// Median idle bytes per connection, per server.
    idle: Vec<(String, f64, usize)>,
    idle_conns: usize,
    machine: Vec<(String, String)>,
}

impl Data {
    fn get(&self, k: &Key, s: &str) -> Option<Med> {
        self.med.get(&(k.clone(), s.to_string())).copied()
    }
}

fn load(dir: &Path) -> Result<Data, String> {
    let raw = fs::read_to_string(dir.join("raw.csv"))
        .map_err(|e| format!("{}: {e}", dir.join("raw.csv").display()))?;
    let mut cells: Vec<Key> = Vec::new();
    let mut servers: Vec<String> = Vec::new();
    let mut samples: BTreeMap<(Key, String), Vec<[f64; 7]>> = BTreeMap::new();
    for line in raw.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 13 {
            return Err(format!("raw.csv: short line {line:?}"));
        }
        let num = |i: usize| {
            f[i].parse::<f64>()
                .map_err(|_| format!("raw.csv: {line:?}"))
        };
        let key: Key = (
            f[0].to_string(),
            num(1)? as usize,
            num(2)? as usize,
            num(3)? as usize,
        );
        if !cells.contains(&key) {
            cells.push(key.clone());
        }
        if !servers.iter().any(|s| s == f[4]) {
            servers.push(f[4].to_string());
        }
        samples.entry((key, f[4].to_string())).or_default().push([
            num(6)?,
            num(7)?,
            num(10)?,
            num(11)?,
            num(12)?,
            num(9)?,
            num(8)?,
        ]);
    }
    servers.sort_by_key(|s| KINDS.iter().position(|k| k == s).unwrap_or(usize::MAX));
    let med = samples
        .into_iter()
        .map(|(k, v)| {
            let col = |i: usize| median(v.iter().map(|r| r[i]).collect());
            let m = Med {
                rate: col(0),
                cpu: col(1),
                p50: col(2),
                p99: col(3),
                allocs: col(4),
                client_cpu: col(5),
                server_cpu: col(6),
            };
            (k, m)
        })
        .collect();
    let mut idle = Vec::new();
    let mut idle_conns = 0;
    if let Ok(text) = fs::read_to_string(dir.join("idle.csv")) {
        let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < 6 {
                return Err(format!("idle.csv: short line {line:?}"));
            }
            idle_conns = f[2].parse().unwrap_or(0);
            per.entry(f[0].to_string())
                .or_default()
                .push(f[5].parse().map_err(|_| format!("idle.csv: {line:?}"))?);
        }
        for s in KINDS {
            if let Some(v) = per.remove(s) {
                let n = v.len();
                idle.push((s.to_string(), median(v), n));
            }
        }
    }
    let machine = fs::read_to_string(dir.join("machine.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    Ok(Data {
        cells,
        servers,
        med,
        idle,
        idle_conns,
        machine,
    })
}

fn size_name(size: usize) -> String {
    if size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn cell_name(k: &Key) -> String {
    format!("{} x {} x {}", k.1, size_name(k.2), k.3)
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn ratio(v: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 && v.is_finite() => format!(" ({:.2}x)", v / b),
        _ => String::new(),
    }
}

/// One markdown table: a row per cell of `mode`, a column per server, `f` formats a value
/// and its ratio to the baseline's.
fn table(d: &Data, mode: &str, title: &str, f: &dyn Fn(&Med, Option<&Med>) -> String) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {title} | {} |", d.servers.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(d.servers.len()));
    for k in d.cells.iter().filter(|k| k.0 == mode) {
        let base = d.get(k, BASELINE);
        let cols: Vec<String> = d
            .servers
            .iter()
            .map(|srv| match d.get(k, srv) {
                Some(m) => f(&m, base.as_ref()),
                None => "failed".into(),
            })
            .collect();
        let _ = writeln!(s, "| {} | {} |", cell_name(k), cols.join(" | "));
    }
    s
}

/// A target check: what was compared, the numbers, met or not.
struct Check {
    target: String,
    lines: Vec<(bool, String)>,
}

impl Check {
    fn met(&self) -> Option<bool> {
        if self.lines.is_empty() {
            None
        } else {
            Some(self.lines.iter().all(|(ok, _)| *ok))
        }
    }
}

fn cells_where(d: &Data, pred: impl Fn(&Key) -> bool) -> Vec<Key> {
    d.cells.iter().filter(|k| pred(k)).cloned().collect()
}

/// `server`'s metric over `other`'s in each of `cells`, checked with `ok(ratio)`.
fn compare(
    d: &Data,
    cells: &[Key],
    server: &str,
    other: &str,
    metric: &str,
    get: fn(&Med) -> f64,
    ok: &dyn Fn(f64) -> bool,
) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for k in cells {
        let (Some(a), Some(b)) = (d.get(k, server), d.get(k, other)) else {
            continue;
        };
        let r = get(&a) / get(&b);
        out.push((
            ok(r),
            format!(
                "{} client, {}: {server} {metric} {} vs {other} {} = {r:.2}x",
                k.0,
                cell_name(k),
                num(get(&a)),
                num(get(&b))
            ),
        ));
    }
    out
}

/// A measured value with as many digits as it needs.
fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn checks(d: &Data) -> Vec<Check> {
    let mut out = Vec::new();
    let cpu = |m: &Med| m.cpu;
    let rate_of = |m: &Med| m.rate;
    let p50 = |m: &Med| m.p50;
    let p99 = |m: &Med| m.p99;
    let uring = "ringmill-uring";
    let mio = "ringmill-mio";

    let c1 = cells_where(d, |k| k.0 == "mio" && k.3 == 1 && k.1 >= 64);
    let c16 = cells_where(d, |k| k.0 == "mio" && k.3 == 16 && k.1 >= 64);
    let mut lines = compare(d, &c1, uring, BASELINE, "CPU us/msg", cpu, &|r| r <= 0.85);
    lines.extend(compare(d, &c16, uring, BASELINE, "CPU us/msg", cpu, &|r| {
        r <= 0.80
    }));
    out.push(Check {
        target: "io_uring: server CPU per message <= 0.85x tokio's at 1 in flight (64 and 512 connections, both sizes), <= 0.8x at 16 in flight".into(),
        lines,
    });

    let all = d.cells.clone();
    let mut lines = compare(d, &all, uring, mio, "CPU us/msg", cpu, &|r| r <= 1.05);
    lines.extend(compare(d, &all, uring, mio, "msg/s", rate_of, &|r| {
        r >= 0.95
    }));
    out.push(Check {
        target: "io_uring never more than 5 % behind the mio backend in any cell (CPU per message and messages/s), blocking client included".into(),
        lines,
    });

    out.push(Check {
        target: "mio backend: server CPU per message <= 1.0x tokio's in every cell".into(),
        lines: compare(d, &all, mio, BASELINE, "CPU us/msg", cpu, &|r| r <= 1.0),
    });

    let big16 = cells_where(d, |k| k.0 == "mio" && k.2 == 4096 && k.3 == 16);
    let mut lines = Vec::new();
    for s in [uring, mio] {
        lines.extend(compare(d, &big16, s, BASELINE, "msg/s", rate_of, &|r| {
            r >= 4.0
        }));
    }
    out.push(Check {
        target: "both backends: 4 KiB x 16 in flight: >= 4x tokio's messages/s".into(),
        lines,
    });

    let c512 = cells_where(d, |k| k.0 == "mio" && k.1 == 512);
    let mut lines = Vec::new();
    for s in [uring, mio] {
        lines.extend(compare(d, &c512, s, BASELINE, "RTT p99 us", p99, &|r| {
            r <= 0.25
        }));
    }
    out.push(Check {
        target: "both backends: 512 connections: p99 RTT <= 0.25x tokio's".into(),
        lines,
    });

    let c64 = cells_where(d, |k| k.1 == 64);
    let mut lines = Vec::new();
    for s in [uring, mio] {
        lines.extend(compare(d, &c64, s, "mill-net", "msg/s", rate_of, &|r| {
            r >= 1.6
        }));
    }
    out.push(Check {
        target: "both backends: >= 1.6x mill-net 4.0 (pool mode) messages/s at 64 connections"
            .into(),
        lines,
    });

    let pp = cells_where(d, |k| k.1 == 1 && k.2 == 64 && k.3 == 1);
    let mut lines = Vec::new();
    for s in [uring, mio] {
        lines.extend(compare(d, &pp, s, BASELINE, "RTT p50 us", p50, &|r| {
            r <= 1.0
        }));
    }
    out.push(Check {
        target: "both backends: 1-connection ping-pong (64 B) p50 RTT <= tokio's".into(),
        lines,
    });

    let idle = |s: &str| d.idle.iter().find(|(k, _, _)| k == s).map(|(_, v, _)| *v);
    let mut lines = Vec::new();
    if let Some(u) = idle(uring) {
        lines.push((
            u <= 1024.0,
            format!("{uring}: {u:.0} B per idle connection (target <= 1024)"),
        ));
    }
    if let Some(t) = idle(BASELINE) {
        for s in [uring, mio] {
            if let Some(v) = idle(s) {
                lines.push((
                    v < t,
                    format!("{s}: {v:.0} B per idle connection vs tokio {t:.0} B"),
                ));
            }
        }
    }
    out.push(Check {
        target: format!(
            "idle memory: <= 1 KiB of server RSS per idle connection at {} connections on io_uring, and below tokio's on both backends",
            d.idle_conns
        ),
        lines,
    });

    let mut lines = Vec::new();
    for s in [uring, mio] {
        for k in cells_where(d, |k| k.0 == "mio") {
            if let Some(m) = d.get(&k, s) {
                lines.push((
                    m.allocs < 0.001,
                    format!(
                        "{s}, {}: {:.4} allocations per message",
                        cell_name(&k),
                        m.allocs
                    ),
                ));
            }
        }
    }
    out.push(Check {
        target: "zero allocations per message on the steady-state echo path (counting allocator in the server process, mio client cells)".into(),
        lines,
    });
    out
}

/// Writes `BENCHMARKS.md` to `md` and `chart.svg` into `dir`, from the CSV files in `dir`.
pub fn generate(dir: &Path, md: &Path) -> Result<(), String> {
    let d = load(dir)?;
    let svg = chart(&d);
    fs::write(dir.join("chart.svg"), svg).map_err(|e| e.to_string())?;
    let text = markdown(&d, dir, md);
    fs::write(md, text).map_err(|e| format!("{}: {e}", md.display()))
}

/// Geometric mean over the cells of `mode` of `server`'s metric over tokio's.
fn geomean_ratio(d: &Data, mode: &str, server: &str, get: fn(&Med) -> f64) -> Option<f64> {
    let logs: Vec<f64> = d
        .cells
        .iter()
        .filter(|k| k.0 == mode)
        .filter_map(|k| Some(get(&d.get(k, server)?) / get(&d.get(k, BASELINE)?)))
        .filter(|r| r.is_finite() && *r > 0.0)
        .map(f64::ln)
        .collect();
    if logs.is_empty() {
        None
    } else {
        Some((logs.iter().sum::<f64>() / logs.len() as f64).exp())
    }
}

fn rel(from_md: &Path, target: &Path) -> String {
    // Both live in the repository; express `target` relative to the markdown's folder.
    let base = from_md
        .parent()
        .and_then(|p| fs::canonicalize(p).ok())
        .unwrap_or_default();
    let t = fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    t.strip_prefix(&base)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| t.display().to_string())
}

fn markdown(d: &Data, dir: &Path, md: &Path) -> String {
    let machine = |k: &str| {
        d.machine
            .iter()
            .filter(|(a, _)| a == k)
            .map(|(_, b)| b.clone())
            .collect::<Vec<_>>()
    };
    let one = |k: &str| machine(k).into_iter().next().unwrap_or_else(|| "?".into());
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "This file is generated by the peer comparison; do not edit it by hand. Regenerate it \
         (about 22 minutes, on an otherwise idle machine with at least 2 cores) with:\n\n\
         ```sh\ncargo run --release --manifest-path benches/peer/Cargo.toml -- all\n```\n\n\
         `-- report` rebuilds this file and the chart from the stored CSV files without \
         measuring. The criterion benches of the library itself (both backends, plus the \
         connection map and buffer pool) run with `cargo bench`; see the end of this file.\n"
    );
    let _ = writeln!(s, "## Summary\n");
    let _ = writeln!(
        s,
        "Geometric means over the cells of each load generator of the ratio to tokio \
         (messages/s: higher is better; server CPU per message: lower is better). The tables \
         below have every cell, and the targets section says which targets hold.\n"
    );
    let _ = writeln!(
        s,
        "| server | mio client: msg/s | mio client: CPU/msg | blocking client: msg/s | blocking client: CPU/msg |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for srv in &d.servers {
        let cols: Vec<String> = ["mio", "blocking"]
            .iter()
            .flat_map(|mode| {
                [
                    geomean_ratio(d, mode, srv, |m| m.rate),
                    geomean_ratio(d, mode, srv, |m| m.cpu),
                ]
            })
            .map(|g| g.map_or("-".into(), |g| format!("{g:.2}x")))
            .collect();
        let _ = writeln!(s, "| {srv} | {} |", cols.join(" | "));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "- CPU: {} ({} cores)", one("cpu"), one("cores"));
    let _ = writeln!(s, "- kernel: {}", one("kernel"));
    let _ = writeln!(s, "- library source: {}", one("source"));
    let _ = writeln!(s, "- run: {}", one("run"));
    for (k, v) in d.machine.iter().filter(|(k, _)| k.starts_with("server ")) {
        let _ = writeln!(s, "- {}: {v}", k.trim_start_matches("server "));
    }
    for f in machine("failure") {
        let _ = writeln!(s, "- **failed run**: {f}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "{}", METHOD);

    for (mode, what) in [
        ("mio", "one-thread mio load generator"),
        ("blocking", "blocking client, one thread per connection"),
    ] {
        if !d.cells.iter().any(|k| k.0 == mode) {
            continue;
        }
        let _ = writeln!(s, "## Results: {what}\n");
        let _ = writeln!(
            s,
            "Medians over the repetitions; ratios are to tokio. Rows: connections x message \
             size x messages in flight per connection.\n"
        );
        let _ = writeln!(s, "### Messages per second (higher is better)\n");
        s.push_str(&table(d, mode, "cell", &|m, b| {
            format!("{}{}", rate(m.rate), ratio(m.rate, b.map(|b| b.rate)))
        }));
        let _ = writeln!(
            s,
            "\n### Server CPU microseconds per message (lower is better)\n"
        );
        s.push_str(&table(d, mode, "cell", &|m, b| {
            format!("{:.2}{}", m.cpu, ratio(m.cpu, b.map(|b| b.cpu)))
        }));
        let _ = writeln!(s, "\n### RTT p50 / p99, microseconds (lower is better)\n");
        s.push_str(&table(d, mode, "cell", &|m, _| {
            format!("{:.0} / {:.0}", m.p50, m.p99)
        }));
        let _ = writeln!(
            s,
            "\n### Server / load-generator CPU use (1.00 = one core busy)\n\n\
             A load generator near 1.00 means the cell measured the client's limit for \
             messages/s; CPU per message stays valid either way.\n"
        );
        s.push_str(&table(d, mode, "cell", &|m, _| {
            format!("{:.2} / {:.2}", m.server_cpu, m.client_cpu)
        }));
        let _ = writeln!(s, "\n### Server allocations per message\n");
        s.push_str(&table(d, mode, "cell", &|m, _| format!("{:.3}", m.allocs)));
        let _ = writeln!(s);
    }

    if !d.idle.is_empty() {
        let _ = writeln!(
            s,
            "## Server memory per idle connection\n\n\
             RSS growth (VmRSS) while {} connections are open and idle, divided by {}; median \
             over the repetitions.\n",
            d.idle_conns, d.idle_conns
        );
        let _ = writeln!(s, "| server | bytes per idle connection | runs |");
        let _ = writeln!(s, "|---|---:|---:|");
        for (srv, v, n) in &d.idle {
            let _ = writeln!(s, "| {srv} | {v:.0} | {n} |");
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(
        s,
        "Each target checked against the medians above, cell by cell. A target is met only \
         when every comparison it covers is; the misses are listed with their numbers.\n"
    );
    for c in checks(d) {
        let verdict = match c.met() {
            Some(true) => "**met**",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let _ = writeln!(s, "- {}: {verdict}", c.target);
        let failed: Vec<_> = c.lines.iter().filter(|(ok, _)| !ok).collect();
        let passed = c.lines.len() - failed.len();
        if !c.lines.is_empty() {
            let _ = writeln!(s, "  - {passed} of {} comparisons meet it", c.lines.len());
        }
        for (_, l) in failed {
            let _ = writeln!(s, "  - missed: {l}");
        }
    }
    let _ = writeln!(s);
    // Hand-written analysis of a run (profiles, causes of misses), kept beside the raw data
    // so that regenerating the tables never drops it; it names the run it is about.
    if let Ok(findings) = fs::read_to_string(dir.join("FINDINGS.md")) {
        s.push_str(findings.trim_end());
        let _ = writeln!(s, "\n");
    }
    let _ = writeln!(s, "## Raw data and chart\n");
    let _ = writeln!(
        s,
        "- every run: [{raw}]({raw}); idle memory: [{idle}]({idle}); machine and setup: \
         [{m}]({m})",
        raw = rel(md, &dir.join("raw.csv")),
        idle = rel(md, &dir.join("idle.csv")),
        m = rel(md, &dir.join("machine.txt")),
    );
    let chart = rel(md, &dir.join("chart.svg"));
    let _ = writeln!(s, "- chart: [{chart}]({chart})\n\n![chart]({chart})\n");
    let _ = writeln!(s, "{}", CRITERION);
    s
}

const METHOD: &str = "## Method

- **Servers** (`benches/peer/src/servers.rs`), each an echo server with one thread doing the
  work: tokio (multi-thread runtime, 1 worker, a task per connection with an 8 KiB buffer and
  `write_all`), monoio (io_uring driver, one runtime, 8 KiB owned buffer: its own echo
  example), mill-net 4.0 on mill-io 4.0 (`EventLoop::default()`, its default pool mode, one
  worker under `taskset -c 0`; the README's echo handler, `ctx.send_to(conn, data)`),
  ringmill on io_uring and on mio (1 loop thread, default configuration, the same
  handler). Every server sets TCP_NODELAY, and mill-net and ringmill allow 20,000
  connections (for the idle test); every other setting is the library's default. The
  exact setup of each server, as it reported itself, is under Machine above.
- **Processes and cores**: each server is a child process of the runner, started as
  `taskset -c 0 <runner> server KIND PORT`; the runner (the load generator) pins itself to
  CPU 1. So the server's CPU time is its own and the two never share a core.
- **Load generators**, neither of them any of the servers' code: (1) one thread with one
  `mio::Poll` driving every connection, keeping `depth` messages in flight per connection
  (a new message is queued as soon as one is echoed back); (2) a blocking client with one
  thread per connection, each writing `depth` messages and reading their echo in a loop
  (small batches: the server sees one message per wake-up). Each connection is opened and
  checked with a one-byte echo before the cell starts.
- **Cells**: connections {1, 64, 512} x message size {64 B, 4 KiB} x in flight {1, 16} with
  the mio client; connections {1, 64, 512} x size {64 B, 4 KiB} at 1 in flight with the
  blocking client.
- **Measurement**: a fresh server per run; a warm-up, then the measured window. Messages/s
  counts messages fully echoed within the window. **Server CPU per message** is the
  server's `utime + stime` from `/proc/PID/stat` (all threads, clock-tick resolution) over
  the window, divided by the messages echoed in it. RTT is per message, from the moment it
  is queued for writing to the moment its last byte is read back (with 16 in flight it
  includes the wait behind the other 15). Allocations per message come from a counting
  global allocator in the server process, read at both ends of the window.
- **Repetition**: within each cell the servers run interleaved (A B C D E, A B C D E, ...),
  and each cell is repeated; the tables show medians of each metric separately.
- **Idle memory**: a fresh server; one connection is opened, echoed and closed; after a
  moment VmRSS is read; then 10,000 connections are opened, each checked with a one-byte
  echo, and left idle; after a moment VmRSS is read again. The growth divided by the number
  of connections is the cost of one idle connection (shared pools touched by the first
  exchanges are included in the growth).
- Loopback only; a 2-core machine, so the load generator has exactly one core: in the cells
  where its CPU use is near 1.00, messages/s is the client's limit, and the comparison that
  still holds is CPU per message.
";

const CRITERION: &str = "## Criterion benches (`cargo bench`)

The library's own benches, each on both backends where it involves the network, with plain
mio or std clients on the bench thread (not ringmill):

- `cargo bench --bench echo`: ping-pong latency (1 connection, 64 B); echo throughput with
  64 connections x 64 B and x 4 KiB at 1 in flight, 64 x 64 B at 16 in flight, and 1,000
  connections x 64 B; connect + one-byte echo + close churn (connections/s); a broadcast of
  one 64 B message to 1,000 connections.
- `cargo bench --bench map`: the connection map (`ConnMap`) against `Mutex<HashMap>` for
  lookups and insert/lookup/remove, on one and two threads; the buffer pool's take/return.

They use short measurement times (10-20 samples, 2 s) so the whole suite takes a few
minutes; on a busy machine their numbers are noisy, the peer comparison above is the
reference.
";

// ---------------------------------------------------------------------------------------
// The chart: hand-written SVG (no plotting dependency).

const COLORS: [&str; 5] = ["#4e79a7", "#f28e2b", "#76b7b2", "#e15759", "#59a14f"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel: grouped bars on a log scale.
#[allow(clippy::too_many_arguments)]
fn panel(
    svg: &mut String,
    d: &Data,
    top: f64,
    height: f64,
    left: f64,
    width: f64,
    title: &str,
    value: &dyn Fn(&Key, &str) -> Option<f64>,
    ticks: &[f64],
    reference: Option<f64>,
) {
    let (lo, hi) = (ticks[0], *ticks.last().unwrap());
    let y = |v: f64| {
        let v = v.clamp(lo, hi);
        top + height - (v.ln() - lo.ln()) / (hi.ln() - lo.ln()) * height
    };
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        top - 8.0,
        esc(title)
    );
    for t in ticks {
        let ty = y(*t);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{ty:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{t}</text>"##,
            left + width,
            left - 4.0,
            ty + 3.0
        );
    }
    if let Some(r) = reference {
        let ry = y(r);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{ry:.1}" y2="{ry:.1}" stroke="#333" stroke-dasharray="4 3"/>"##,
            left + width
        );
    }
    let groups = d.cells.len().max(1) as f64;
    let gw = width / groups;
    let bw = (gw - 8.0) / d.servers.len().max(1) as f64;
    for (gi, k) in d.cells.iter().enumerate() {
        let gx = left + gi as f64 * gw + 4.0;
        for (si, srv) in d.servers.iter().enumerate() {
            if let Some(v) = value(k, srv).filter(|v| v.is_finite() && *v > 0.0) {
                let by = y(v);
                let _ = writeln!(
                    svg,
                    r#"<rect x="{:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {v:.3}</title></rect>"#,
                    gx + si as f64 * bw,
                    (bw - 1.0).max(1.0),
                    (top + height - by).max(0.5),
                    COLORS[KINDS.iter().position(|k| k == srv).unwrap_or(0) % COLORS.len()],
                    esc(srv),
                    esc(&format!("{} {}", k.0, cell_name(k)))
                );
            }
        }
        let lx = gx + gw / 2.0 - 4.0;
        let ly = top + height + 12.0;
        let _ = writeln!(
            svg,
            r#"<text x="{lx:.1}" y="{ly:.1}" font-size="9" text-anchor="end" transform="rotate(-40 {lx:.1} {ly:.1})">{}</text>"#,
            esc(&format!("{} {}", k.0, cell_name(k)))
        );
    }
}

fn chart(d: &Data) -> String {
    let (w, left, pw) = (1300.0, 60.0, 1220.0);
    let ph = 260.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="860" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, srv) in d.servers.iter().enumerate() {
        let x = left + i as f64 * 170.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="12" width="12" height="12" fill="{}"/><text x="{}" y="22" font-size="12">{}</text>"#,
            COLORS[KINDS.iter().position(|k| k == srv).unwrap_or(0) % COLORS.len()],
            x + 16.0,
            esc(srv)
        );
    }
    panel(
        &mut svg,
        d,
        60.0,
        ph,
        left,
        pw,
        "Server CPU microseconds per message (log scale, lower is better)",
        &|k, s| d.get(k, s).map(|m| m.cpu),
        &[0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0],
        None,
    );
    panel(
        &mut svg,
        d,
        470.0,
        ph,
        left,
        pw,
        "Messages per second relative to tokio (log scale, higher is better; dashed: 1.0)",
        &|k, s| {
            let b = d.get(k, BASELINE)?.rate;
            d.get(k, s).map(|m| m.rate / b)
        },
        &[0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0],
        Some(1.0),
    );
    let _ = writeln!(svg, "</svg>");
    svg
}
