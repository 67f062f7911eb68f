//! Runs one test of the current test binary again in a child process, for what must not
//! happen in the shared test process: process-wide settings (environment, resource
//! limits, signal dispositions) and outcomes that kill the process (`SIGPIPE`).
//!
//! The parent re-executes `std::env::current_exe()` with `--exact <test> --nocapture` and
//! [`ROLE_ENV`] set; the same test function sees the variable and plays the child's part.
//! The child reports to the parent with [`report`] (lines on stdout), the parent answers
//! with [`ChildTest::send`] (lines on the child's stdin, read with [`ParentLink`]). Every
//! wait has a deadline and panics with the child's whole output when it passes.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in the child's environment: the part it plays.
pub const ROLE_ENV: &str = "RINGMILL_TEST_CHILD_ROLE";
/// Prefix of the lines the child reports on stdout (everything else is libtest's output).
const PREFIX: &str = "ringmill-child: ";

/// The role this process plays, if it is a child started by [`ChildTest::spawn`].
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// Child side: reports `key value` to the parent.
pub fn report(key: &str, value: impl Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{PREFIX}{key} {value}").expect("child: write to stdout");
    out.flush().expect("child: flush stdout");
}

enum Output {
    Stdout(String),
    Stderr(String),
    Closed,
}

/// Parent side: a running child test.
pub struct ChildTest {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    output: mpsc::Receiver<Output>,
    transcript: Vec<String>,
    open_streams: usize,
}

impl ChildTest {
    /// Starts the test `test` (its full path inside this test binary) in a child process
    /// with `role` in [`ROLE_ENV`] and the extra environment `envs`.
    pub fn spawn(test: &str, role: &str, envs: &[(&str, &str)]) -> Self {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the child test process");
        let (tx, output) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(Output::Stdout(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Output::Closed);
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx2.send(Output::Stderr(line)).is_err() {
                    return;
                }
            }
            let _ = tx2.send(Output::Closed);
        });
        let stdin = child.stdin.take();
        Self {
            name: format!("{test} [{role}]"),
            child: Some(child),
            stdin,
            output,
            transcript: Vec::new(),
            open_streams: 2,
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        let mut exit = String::new();
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                exit = format!(" (child {})", describe(status));
            } else {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        while let Ok(o) = self.output.try_recv() {
            self.record(o);
        }
        panic!(
            "child {}: {why}{exit}\n--- child output ---\n{}\n--- end ---",
            self.name,
            self.transcript.join("\n")
        );
    }

    fn record(&mut self, o: Output) -> Option<String> {
        match o {
            Output::Stdout(line) => {
                // libtest prints "test name ... " without a newline before the test runs, so
                // the first report shares its line.
                let reported = line
                    .find(PREFIX)
                    .map(|at| line[at + PREFIX.len()..].to_string());
                self.transcript.push(line);
                reported
            }
            Output::Stderr(line) => {
                self.transcript.push(format!("[stderr] {line}"));
                None
            }
            Output::Closed => {
                self.open_streams -= 1;
                None
            }
        }
    }

    /// Waits until the child reports `key` and returns the value it reported with it.
    pub fn expect(&mut self, key: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if self.open_streams == 0 {
                self.fail(&format!("exited without reporting {key:?}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(o) => {
                    if let Some(reported) = self.record(o) {
                        let (k, v) = reported.split_once(' ').unwrap_or((&reported, ""));
                        if k == key {
                            return v.to_string();
                        }
                    }
                }
                Err(_) => self.fail(&format!("did not report {key:?} within {within:?}")),
            }
        }
    }

    /// Sends one line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("child stdin");
        if writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .is_err()
        {
            self.fail(&format!("could not send {line:?} (child gone?)"));
        }
    }

    fn wait_inner(&mut self, within: Duration) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + within;
        // Collect the rest of the output, then reap.
        while self.open_streams > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(o) => {
                    self.record(o);
                }
                Err(_) => self.fail(&format!("did not exit within {within:?}")),
            }
        }
        let mut child = self.child.take().expect("child");
        loop {
            match child.try_wait().expect("try_wait") {
                Some(status) => return status,
                None if Instant::now() >= deadline => {
                    self.child = Some(child);
                    self.fail(&format!("did not exit within {within:?}"));
                }
                // Both pipes are closed, so the child is exiting: reap it.
                None => std::thread::yield_now(),
            }
        }
    }

    /// Waits for the child to exit and returns its status (the child is killed and the
    /// test fails if it takes longer than `within`).
    pub fn wait(mut self, within: Duration) -> ExitStatus {
        self.wait_inner(within)
    }

    /// Waits for the child to exit and fails the test, showing the child's output, unless
    /// the child's test passed.
    pub fn wait_success(mut self, within: Duration) {
        let status = self.wait_inner(within);
        if !status.success() {
            self.fail(&format!("failed: {}", describe(status)));
        }
    }

    /// Everything the child printed so far.
    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }
}

impl Drop for ChildTest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An exit status in words, naming the signal that killed the process if one did.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        _ => format!("{status:?}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        _ => "",
    }
}

/// Child side: the lines the parent sends on stdin.
pub struct ParentLink {
    lines: mpsc::Receiver<String>,
}

impl ParentLink {
    /// Starts reading stdin.
    pub fn new() -> Self {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { lines }
    }

    /// Waits for the parent to send `expected`.
    pub fn expect(&self, expected: &str, within: Duration) {
        match self.lines.recv_timeout(within) {
            Ok(line) if line == expected => {}
            Ok(line) => panic!("child: expected {expected:?} from the parent, got {line:?}"),
            Err(_) => panic!("child: no {expected:?} from the parent within {within:?}"),
        }
    }
}
