//! Real peers for the layer tests.
//!
//! Peers that cargo brings, so plain `cargo test` needs no system tool: an in-process SOCKS5
//! server ([`InProcessSocks5`], the `fast-socks5` crate on a tokio runtime of its own),
//! rustls's own blocking streams for TLS (in tests/tls.rs), and certificates committed in
//! `tests/data/tls` ([`Certs::committed`]).
//!
//! System peers, for the same behaviours against other implementations: a `microsocks`
//! SOCKS5 server and the `openssl` command line tool (certificates, `s_client`,
//! `s_server`); `ci/layer-tools.sh` installs them and CI runs their tests with
//! [`REQUIRE_TOOLS`]`=1`. Without that variable a test whose tool is missing prints
//! `skipped: <tool> not installed` and returns (never a silent pass); with it, a missing
//! tool fails the test.
//!
//! Also: child processes that are killed and reaped when dropped, a reader thread that
//! collects a child's output for waiting on, and, in [`setup`], the clients, proxies and
//! checks the layer tests share.
#![allow(dead_code)]

mod setup;

pub use setup::*;

use crate::common::{try_poll_until, Shared, WAIT};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Environment variable that makes the system tools (`microsocks`, `openssl`) required:
/// with `1`, a test whose tool is missing fails and names the script that installs it.
pub const REQUIRE_TOOLS: &str = "RINGMILL_TEST_REQUIRE_TOOLS";

/// Whether `tool` (a program on `PATH`) is there. If it is not, prints the skip and returns
/// `false`, or (with [`REQUIRE_TOOLS`]`=1`) panics naming the script that installs it.
pub fn require_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var(REQUIRE_TOOLS).as_deref() == Ok("1") {
        panic!("{tool} is not installed: run `bash ci/layer-tools.sh`");
    }
    // Straight to the process's stderr, past the test harness's capture, so the skip shows
    // in the run's log even though the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {tool} not installed (ci/layer-tools.sh installs it)"
    );
    false
}

/// A child process, killed and reaped when dropped.
pub struct Child {
    child: std::process::Child,
    what: String,
}

impl Child {
    /// Spawns `cmd` (described as `what` in messages).
    pub fn spawn(cmd: &mut Command, what: &str) -> Child {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Child {
            child,
            what: what.to_string(),
        }
    }

    /// The process.
    pub fn inner(&mut self) -> &mut std::process::Child {
        &mut self.child
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits (with `timeout`) for it to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut status = None;
        let exited = try_poll_until(timeout, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        assert!(exited, "{} did not exit within {timeout:?}", self.what);
        status.expect("exited")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects everything a child writes to one pipe, on a thread, for tests to wait on.
pub struct Output {
    bytes: Arc<Shared<(Vec<u8>, bool)>>,
}

impl Output {
    /// Starts reading `pipe` until EOF.
    pub fn collect(mut pipe: impl Read + Send + 'static) -> Output {
        let bytes = Arc::new(Shared::new((Vec::new(), false)));
        let sink = Arc::clone(&bytes);
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.update(|(v, _)| v.extend_from_slice(&buf[..n])),
                }
            }
            sink.update(|(_, eof)| *eof = true);
        });
        Output { bytes }
    }

    /// What was read so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes.with(|(v, _)| v.clone())
    }

    /// What was read so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until `cond` holds on the bytes read; panics after `timeout` naming `what`.
    pub fn wait(&self, timeout: Duration, what: &str, mut cond: impl FnMut(&[u8]) -> bool) {
        self.bytes.wait_until(timeout, what, |(v, _)| cond(v))
    }

    /// Waits for EOF; panics after `timeout`.
    pub fn wait_eof(&self, timeout: Duration) -> Vec<u8> {
        self.bytes
            .wait_until(timeout, "EOF on the child's output", |(_, eof)| *eof);
        self.bytes()
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound, then closed). A server started on
/// it may still lose a race for it: callers retry.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local_addr").port()
}

/// Which SOCKS5 server a test talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socks5Peer {
    /// [`InProcessSocks5`]: always there.
    InProcess,
    /// [`Microsocks`]: a system tool, skipped or required as [`require_tool`] says.
    Microsocks,
}

impl Socks5Peer {
    /// Starts this server on 127.0.0.1, with username/password authentication if
    /// `credentials` are given. `None` if it is a system tool that is missing and not
    /// required. The server runs until the returned value is dropped.
    pub fn start(self, credentials: Option<(&str, &str)>) -> Option<RunningSocks5> {
        match self {
            Socks5Peer::InProcess => Some(RunningSocks5::InProcess(InProcessSocks5::start(
                credentials,
            ))),
            Socks5Peer::Microsocks => Microsocks::start(credentials).map(RunningSocks5::Microsocks),
        }
    }
}

/// A SOCKS5 server started by [`Socks5Peer::start`].
pub enum RunningSocks5 {
    /// The in-process one.
    InProcess(InProcessSocks5),
    /// The microsocks child process.
    Microsocks(Microsocks),
}

impl RunningSocks5 {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        match self {
            RunningSocks5::InProcess(s) => s.addr(),
            RunningSocks5::Microsocks(s) => s.addr(),
        }
    }
}

/// A SOCKS5 server (the `fast-socks5` crate: CONNECT, no authentication or
/// username/password) on 127.0.0.1, run on a one-thread tokio runtime on a thread of its
/// own; stopped and joined when dropped.
pub struct InProcessSocks5 {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessSocks5 {
    /// Starts it on a port of its own; it listens when this returns.
    pub fn start(credentials: Option<(&str, &str)>) -> InProcessSocks5 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SOCKS5 server");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("socks5-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("register the listener with tokio");
                    let accept = async {
                        loop {
                            let Ok((socket, _)) = listener.accept().await else {
                                continue;
                            };
                            let credentials = credentials.clone();
                            tokio::spawn(async move {
                                // A failed session (refused target, wrong password) has
                                // already answered the client with its error reply.
                                let _ = serve_socks5(socket, credentials).await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime cancels the sessions still running.
            })
            .expect("spawn the SOCKS5 server thread");
        InProcessSocks5 {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for InProcessSocks5 {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One SOCKS5 session: authentication, the command, and for CONNECT the relay until
/// either side ends.
async fn serve_socks5(
    socket: tokio::net::TcpStream,
    credentials: Option<(String, String)>,
) -> Result<(), fast_socks5::SocksError> {
    use fast_socks5::server::{run_tcp_proxy, DnsResolveHelper as _, Socks5ServerProtocol};
    use fast_socks5::{ReplyError, Socks5Command};
    let proto = match credentials {
        None => Socks5ServerProtocol::accept_no_auth(socket).await?,
        Some((user, password)) => {
            Socks5ServerProtocol::accept_password_auth(socket, move |u, p| {
                u == user && p == password
            })
            .await?
            .0
        }
    };
    let (proto, cmd, target) = proto.read_command().await?.resolve_dns().await?;
    match cmd {
        Socks5Command::TCPConnect => {
            run_tcp_proxy(proto, &target, WAIT, false).await?;
        }
        _ => proto.reply_error(&ReplyError::CommandNotSupported).await?,
    }
    Ok(())
}

/// A `microsocks` SOCKS5 server on 127.0.0.1, killed when dropped.
pub struct Microsocks {
    child: Child,
    addr: SocketAddr,
}

impl Microsocks {
    /// Starts microsocks on a free port, with username/password authentication if
    /// `credentials` are given. `None` if microsocks is missing and that is allowed.
    pub fn start(credentials: Option<(&str, &str)>) -> Option<Microsocks> {
        if !require_tool("microsocks") {
            return None;
        }
        for _ in 0..10 {
            let port = free_port();
            let mut cmd = Command::new("microsocks");
            cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
            if let Some((user, password)) = credentials {
                cmd.args(["-u", user, "-P", password]);
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = Child::spawn(&mut cmd, "microsocks");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Listening once a connect succeeds (the probe connection is dropped unused);
            // an exit means the port was taken meanwhile: try another.
            let mut up = false;
            try_poll_until(WAIT, || {
                up = TcpStream::connect(addr).is_ok();
                up || child.exited()
            });
            if up {
                return Some(Microsocks { child, addr });
            }
        }
        panic!("microsocks did not start listening on any of 10 ports");
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(prefix: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringmill-{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `openssl` with `args` in `dir`; panics with its output if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a certificate it signed for `localhost` and 127.0.0.1 (P-256 keys): the
/// committed ones or fresh ones made with the openssl CLI.
pub struct Certs {
    dir: PathBuf,
    /// The CA that did not sign the server certificate (committed set only).
    other_ca: Option<PathBuf>,
    /// Holds a generated set's directory until the certificates are dropped.
    _temp: Option<TempDir>,
}

impl Certs {
    /// The certificates committed in `tests/data/tls` (made by `make-certs.sh` there, valid
    /// for 100 years), which need no tool.
    pub fn committed() -> Certs {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
        Certs {
            other_ca: Some(dir.join("other-ca.pem")),
            dir,
            _temp: None,
        }
    }

    /// A CA of the committed set that did not sign [`Certs::server_cert`].
    pub fn other_ca(&self) -> PathBuf {
        self.other_ca
            .clone()
            .expect("only the committed certificates have a second CA")
    }

    /// Makes the CA and the server certificate. `None` if openssl is missing and that is
    /// allowed.
    pub fn generate() -> Option<Certs> {
        if !require_tool("openssl") {
            return None;
        }
        let dir = TempDir::new("certs");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend_from_slice(&ec);
        ca.extend_from_slice(&[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ringmill test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(d, &ca);
        let mut req = vec!["req", "-new"];
        req.extend_from_slice(&ec);
        req.extend_from_slice(&[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(d, &req);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("write server.ext");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "2",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Some(Certs {
            dir: d.to_path_buf(),
            other_ca: None,
            _temp: Some(dir),
        })
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate (PEM), signed by the CA.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server's private key (PKCS#8 PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}
