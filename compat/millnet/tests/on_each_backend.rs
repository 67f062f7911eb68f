//! mill-net 4.0.0's test suite and examples, on io_uring and on mio.
//!
//! Not generated (ci/millnet-suite.sh leaves this file alone). mill-net's test files cannot
//! be edited and build their event loops with `EventLoop::new`, whose backend is `Auto`,
//! which honours `RINGMILL_BACKEND`. So each of them is also a test binary of its own
//! (`millnet_<file>`, which `cargo test` runs as a mill-net user would, on `Auto`), and
//! here one test per file and backend runs that binary again with `RINGMILL_BACKEND` set,
//! and fails with the binary's whole output if it fails. The examples are run the same
//! way, as the binaries `cargo test` builds, and driven by a real client.
//!
//! The io_uring arm prints `skipped: io_uring unavailable: <reason>` where io_uring cannot
//! run and `RINGMILL_TEST_ALLOW_MISSING_URING=1`, and fails otherwise, as ringmill's own
//! backend matrix does. The runs take turns (one lock), so each child has the machine's
//! cores to itself; the examples also take turns for the port they all bind (8080).

use ringmill::{Backend, EventLoop};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable that turns a missing io_uring into a reported skip.
const ALLOW_MISSING_URING: &str = "RINGMILL_TEST_ALLOW_MISSING_URING";
/// Longest one suite file may run.
const SUITE_DEADLINE: Duration = Duration::from_secs(600);
/// Longest an example may take to start, and a client to get its answer.
const EXAMPLE_WAIT: Duration = Duration::from_secs(20);
/// The address every mill-net example binds.
const EXAMPLE_ADDR: &str = "127.0.0.1:8080";

/// One run at a time.
fn take_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the `backend` arm should run: io_uring is probed once per process.
fn backend_available(backend: Backend) -> bool {
    if backend != Backend::Uring {
        return true;
    }
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        match EventLoop::builder()
            .threads(1)
            .backend(Backend::Uring)
            .build()
        {
            Ok(event_loop) => {
                event_loop.stop();
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    });
    match probe {
        Ok(()) => true,
        Err(reason) if std::env::var(ALLOW_MISSING_URING).as_deref() == Ok("1") => {
            println!("skipped: io_uring unavailable: {reason}");
            eprintln!("skipped: io_uring unavailable: {reason}");
            false
        }
        Err(reason) => panic!(
            "io_uring unavailable: {reason} (set {ALLOW_MISSING_URING}=1 to report this as a skip)"
        ),
    }
}

/// `RINGMILL_BACKEND`'s value for `backend`.
fn env_value(backend: Backend) -> &'static str {
    match backend {
        Backend::Uring => "uring",
        Backend::Mio => "mio",
        Backend::Auto => "auto",
    }
}

/// The directory cargo puts test binaries in (this binary's).
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .expect("the test binary's directory")
        .to_path_buf()
}

/// The `<name>-<hash>` executable in `dir` built like this runner: cargo keeps one per
/// feature set side by side (a `cargo test --no-default-features` leaves mio-only ones next
/// to the default ones, and a later `cargo test` may find them newer, since it rebuilds
/// only what changed). So the newest candidate whose io_uring build matches this binary's
/// is taken (see [`built_without_uring`]); the newest of all if none matches.
fn binary_for(dir: &Path, name: &str) -> PathBuf {
    let prefix = format!("{name}-");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let file = entry.file_name().into_string().ok()?;
            let hash = file.strip_prefix(&prefix)?;
            let hash = hash.strip_suffix(std::env::consts::EXE_SUFFIX)?;
            if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let meta = entry.metadata().ok()?;
            meta.is_file()
                .then_some((meta.modified().ok()?, entry.path()))
        })
        .collect();
    found.sort();
    let own = built_without_uring(&std::env::current_exe().expect("current_exe"));
    if let Some(i) = found
        .iter()
        .rposition(|(_, path)| built_without_uring(path) == own)
    {
        return found.swap_remove(i).1;
    }
    match found.pop() {
        Some((_, path)) => path,
        None => panic!(
            "no {name}-<hash> binary in {}: run through `cargo test`, which builds it",
            dir.display()
        ),
    }
}

/// Whether the executable at `path` links a ringmill built without its io_uring driver:
/// only such a build holds the message ringmill gives for that case. The message is put
/// together here at run time, so that this binary does not hold it as a literal of its own.
fn built_without_uring(path: &Path) -> bool {
    // "cargo feature `uring` is off", reversed and with a capital, then turned back.
    let marker: String = "ffo si `gnirU` erutaef ograc".chars().rev().collect();
    let marker = marker.replace("Uring", "uring");
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .windows(marker.len())
        .any(|window| window == marker.as_bytes())
}

/// Collects `child`'s output until it exits or `deadline` passes (then kills it):
/// `(status, stdout, stderr, killed)`. The pipes close when the child exits, which is
/// what the wait is on.
fn wait_with_deadline(mut child: Child, deadline: Duration) -> (ExitStatus, String, String, bool) {
    fn drain(mut pipe: impl Read + Send + 'static, tx: mpsc::Sender<()>) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send(());
            bytes
        })
    }
    let (tx, closed) = mpsc::channel();
    let stdout = drain(child.stdout.take().expect("piped stdout"), tx.clone());
    let stderr = drain(child.stderr.take().expect("piped stderr"), tx);
    let until = Instant::now() + deadline;
    let mut killed = false;
    for _ in 0..2 {
        let left = until.saturating_duration_since(Instant::now());
        if closed.recv_timeout(left).is_err() && !killed {
            let _ = child.kill();
            killed = true;
        }
    }
    let status = child.wait().expect("waiting for the child");
    let text = |h: JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
    };
    (status, text(stdout), text(stderr), killed)
}

/// Runs mill-net's `tests/<file>.rs` (binary `millnet_<file>`) on `backend`.
fn run_suite_file(file: &str, backend: Backend) {
    let _turn = take_turn();
    if !backend_available(backend) {
        return;
    }
    let binary = binary_for(&deps_dir(), &format!("millnet_{file}"));
    let started = Instant::now();
    let child = Command::new(&binary)
        .env("RINGMILL_BACKEND", env_value(backend))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let (status, stdout, stderr, killed) = wait_with_deadline(child, SUITE_DEADLINE);
    let summary = stdout
        .lines()
        .filter(|l| l.starts_with("test result:"))
        .collect::<Vec<_>>()
        .join("; ");
    assert!(
        status.success() && !killed,
        "mill-net's tests/{file}.rs on {backend}: {} after {:?} ({})\n\
         ---- stdout ----\n{stdout}\n---- stderr ----\n{stderr}",
        if killed {
            "killed at the deadline".to_string()
        } else {
            status.to_string()
        },
        started.elapsed(),
        binary.display(),
    );
    println!("mill-net tests/{file}.rs on {backend}: {summary}");
}

macro_rules! suite_files {
    ($($file:ident)*) => {
        $(
            mod $file {
                use super::*;

                #[test]
                #[cfg_attr(
                    not(all(target_os = "linux", feature = "uring")),
                    ignore = "skipped: io_uring driver not built"
                )]
                fn uring() {
                    run_suite_file(stringify!($file), Backend::Uring);
                }

                #[test]
                fn mio() {
                    run_suite_file(stringify!($file), Backend::Mio);
                }
            }
        )*
    };
}

suite_files! {
    backpressure
    chaos_proxy
    connect
    layer
    lifecycle
    read_drain
    sender
}

// ---------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------

/// A running example, killed and reaped when dropped.
struct Example {
    child: Option<Child>,
    name: &'static str,
    lines: mpsc::Receiver<String>,
}

impl Example {
    /// Starts example `name` on `backend` once 127.0.0.1:8080 is free, and waits for its
    /// first line on stdout (printed after `start`, when it is listening).
    fn start(name: &'static str, backend: Backend) -> Example {
        wait_for_free_port();
        let binary = binary_for(
            &deps_dir()
                .parent()
                .expect("target directory")
                .join("examples"),
            name,
        );
        assert!(
            binary.is_file(),
            "{} missing: run through `cargo test`, which builds the examples",
            binary.display()
        );
        let mut child = Command::new(&binary)
            .env("RINGMILL_BACKEND", env_value(backend))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let example = Example {
            child: Some(child),
            name,
            lines,
        };
        let first = example
            .lines
            .recv_timeout(EXAMPLE_WAIT)
            .unwrap_or_else(|_| {
                panic!("{name} on {backend}: printed nothing within {EXAMPLE_WAIT:?}")
            });
        assert!(
            first.contains("127.0.0.1:8080"),
            "{name} on {backend}: unexpected first line {first:?}"
        );
        example
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(EXAMPLE_ADDR)
            .unwrap_or_else(|e| panic!("{}: connecting to {EXAMPLE_ADDR}: {e}", self.name));
        stream.set_read_timeout(Some(EXAMPLE_WAIT)).unwrap();
        stream
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until nothing holds 127.0.0.1:8080 (an example of an earlier test may still be
/// closing), failing clearly if something else keeps it.
fn wait_for_free_port() {
    let deadline = Instant::now() + EXAMPLE_WAIT;
    loop {
        match TcpListener::bind(EXAMPLE_ADDR) {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                // Another process holds the port: nothing to wait on but time.
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!(
                "{EXAMPLE_ADDR} stayed in use for {EXAMPLE_WAIT:?} ({e}); mill-net's examples \
                 bind it, so another program on it makes them untestable here"
            ),
        }
    }
}

/// Reads until `done` accepts what came, or the read timeout fails the test.
fn read_until(stream: &mut TcpStream, what: &str, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) {
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "{what}: connection closed after {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{what}: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

fn echo_server(backend: Backend) {
    let _turn = take_turn();
    if !backend_available(backend) {
        return;
    }
    let example = Example::start("tcp_echo_server", backend);
    let mut a = example.connect();
    let mut b = example.connect();
    for (i, stream) in [&mut a, &mut b].into_iter().enumerate() {
        let message = format!("hello from client {i}\n");
        stream.write_all(message.as_bytes()).unwrap();
        let got = read_until(stream, "echo", |g| g.len() >= message.len());
        assert_eq!(String::from_utf8_lossy(&got), message, "{backend}");
    }
}

fn http_server(backend: Backend) {
    let _turn = take_turn();
    if !backend_available(backend) {
        return;
    }
    let example = Example::start("tcp_http_server", backend);
    for (path, status, body) in [
        ("/", "200 OK", "Welcome to Mill-IO HTTP Server!"),
        ("/health", "200 OK", "Server is running!"),
        ("/nowhere", "404 Not Found", "404 Not Found"),
    ] {
        let mut stream = example.connect();
        // One write: mill-net's example answers each read as a whole request, so a request
        // written in pieces (`write!` on an unbuffered stream writes each one) gets a 404
        // for its first piece when the server reads before the rest arrives.
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let got = read_until(&mut stream, path, |g| {
            let text = String::from_utf8_lossy(g);
            let Some((head, rest)) = text.split_once("\r\n\r\n") else {
                return false;
            };
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            length.is_some_and(|n| rest.len() >= n)
        });
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{backend} {path}: {text}"
        );
        assert!(text.contains(body), "{backend} {path}: {text}");
    }
}

fn jsonrpc_server(backend: Backend) {
    let _turn = take_turn();
    if !backend_available(backend) {
        return;
    }
    let example = Example::start("tcp_jsonrpc_server", backend);
    let mut stream = example.connect();
    let calls = [
        (r#""Ping""#, serde_json::json!("Pong")),
        (
            r#"{"Add":{"a":2,"b":40}}"#,
            serde_json::json!({"Sum": {"result": 42}}),
        ),
        (
            r#"{"SetValue":{"key":"k","value":"v"}}"#,
            serde_json::json!({"ValueSet": {"key": "k"}}),
        ),
        (
            r#"{"GetValue":{"key":"k"}}"#,
            serde_json::json!({"Value": {"key": "k", "value": "v"}}),
        ),
    ];
    for (request, want) in calls {
        stream.write_all(request.as_bytes()).unwrap();
        let got = read_until(&mut stream, request, |g| {
            serde_json::from_slice::<serde_json::Value>(g).is_ok()
        });
        let got: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(got, want, "{backend}: {request}");
    }
}

macro_rules! examples {
    ($($example:ident)*) => {
        $(
            mod $example {
                use super::*;

                #[test]
                #[cfg_attr(
                    not(all(target_os = "linux", feature = "uring")),
                    ignore = "skipped: io_uring driver not built"
                )]
                fn uring() {
                    super::$example(Backend::Uring);
                }

                #[test]
                fn mio() {
                    super::$example(Backend::Mio);
                }
            }
        )*
    };
}

examples! {
    echo_server
    http_server
    jsonrpc_server
}
