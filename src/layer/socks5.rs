//! [`Socks5`]: the client side of a SOCKS5 proxy handshake (RFC 1928), with
//! username/password authentication (RFC 1929).

use super::Layer;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// Where the proxy should connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socks5Target {
    /// An IPv4 or IPv6 address and port.
    Addr(SocketAddr),
    /// A host name, resolved by the proxy (so a `.onion` name works through Tor), and port.
    Host(String, u16),
}

impl From<SocketAddr> for Socks5Target {
    fn from(addr: SocketAddr) -> Self {
        Socks5Target::Addr(addr)
    }
}

impl fmt::Display for Socks5Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socks5Target::Addr(addr) => addr.fmt(f),
            Socks5Target::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a SOCKS5 handshake failed: the error inside the [`io::Error`] that the connection
/// fails with (reported as [`NetworkError::Connect`](crate::errors::NetworkError::Connect)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Socks5Error {
    /// The proxy accepts none of the offered authentication methods (for example, it
    /// wants a username and password and none were given).
    NoAcceptableMethod,
    /// The proxy refused the username and password.
    AuthenticationFailed,
    /// The proxy answered the CONNECT with this non-zero reply code (RFC 1928 §6:
    /// 1 general failure, 2 not allowed by ruleset, 3 network unreachable, 4 host
    /// unreachable, 5 connection refused, 6 TTL expired, 7 command not supported,
    /// 8 address type not supported).
    Reply(u8),
    /// The proxy sent something that is not SOCKS5.
    Protocol(&'static str),
    /// A username, password or host name longer than the 255 bytes SOCKS5 allows.
    TooLong(&'static str),
}

impl fmt::Display for Socks5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socks5Error::NoAcceptableMethod => {
                f.write_str("SOCKS5 proxy accepts none of the offered authentication methods")
            }
            Socks5Error::AuthenticationFailed => {
                f.write_str("SOCKS5 proxy refused the username and password")
            }
            Socks5Error::Reply(code) => {
                let what = match code {
                    1 => "general SOCKS server failure",
                    2 => "connection not allowed by ruleset",
                    3 => "network unreachable",
                    4 => "host unreachable",
                    5 => "connection refused",
                    6 => "TTL expired",
                    7 => "command not supported",
                    8 => "address type not supported",
                    _ => "unknown reply code",
                };
                write!(f, "SOCKS5 proxy: {what} (reply {code})")
            }
            Socks5Error::Protocol(what) => write!(f, "SOCKS5 protocol error: {what}"),
            Socks5Error::TooLong(what) => write!(f, "SOCKS5: {what} is longer than 255 bytes"),
        }
    }
}

impl std::error::Error for Socks5Error {}

impl Socks5Error {
    fn kind(&self) -> io::ErrorKind {
        match self {
            Socks5Error::NoAcceptableMethod | Socks5Error::AuthenticationFailed => {
                io::ErrorKind::PermissionDenied
            }
            Socks5Error::Reply(2) => io::ErrorKind::PermissionDenied,
            Socks5Error::Reply(5) => io::ErrorKind::ConnectionRefused,
            Socks5Error::Reply(6) => io::ErrorKind::TimedOut,
            Socks5Error::Reply(7 | 8) => io::ErrorKind::Unsupported,
            Socks5Error::Reply(_) => io::ErrorKind::Other,
            Socks5Error::Protocol(_) => io::ErrorKind::InvalidData,
            Socks5Error::TooLong(_) => io::ErrorKind::InvalidInput,
        }
    }
}

impl From<Socks5Error> for io::Error {
    fn from(e: Socks5Error) -> Self {
        io::Error::new(e.kind(), e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the proxy's choice of method.
    Method,
    /// Waiting for the answer to the username and password.
    Auth,
    /// Waiting for the answer to CONNECT.
    Reply,
    /// Connected: bytes pass through.
    Ready,
}

/// A client layer that asks a SOCKS5 proxy to connect to a target, then passes bytes
/// through. Use it as the bottom layer of a [`TcpClient`](crate::tcp::TcpClient) that
/// connects to the *proxy*:
///
/// ```no_run
/// use ringmill::layer::Socks5;
/// use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpClient, TcpClientConfig};
/// use ringmill::errors::Result;
/// use ringmill::EventLoop;
/// use std::time::Duration;
///
/// struct Print;
///
/// impl NetworkHandler for Print {
///     fn on_data(&self, _: &ServerContext, _: ConnectionId, data: &[u8]) -> Result<()> {
///         print!("{}", String::from_utf8_lossy(data));
///         Ok(())
///     }
/// }
///
/// # fn main() -> Result<()> {
/// let event_loop = EventLoop::builder().threads(1).build()?;
/// let config = TcpClientConfig {
///     // Covers the TCP connect to the proxy and the whole SOCKS5 handshake.
///     connect_timeout: Duration::from_secs(10),
///     ..TcpClientConfig::default()
/// };
/// let proxy = "127.0.0.1:9050".parse()?;
/// let mut client = TcpClient::connect(proxy, config, Print)?
///     .with_layer(Socks5::to_host("example.org", 80).with_credentials("user", "secret"))?;
/// client.send(b"GET / HTTP/1.0\r\nHost: example.org\r\n\r\n")?;
/// client.start(&event_loop)?;
/// # Ok(())
/// # }
/// ```
///
/// `on_connect` fires once the proxy reports the target connected. A failure (refused
/// credentials, the proxy's error reply, a connect timeout) is reported as
/// `on_error(Some(id), NetworkError::Connect(e))`, with a [`Socks5Error`] inside `e` for
/// the proxy's answers, and no `on_connect` or `on_disconnect`; the proxy closing the
/// connection before it answered is `Io(e)` (`UnexpectedEof`), as for any layer.
#[derive(Debug, Clone)]
pub struct Socks5 {
    target: Socks5Target,
    credentials: Option<(Vec<u8>, Vec<u8>)>,
    step: Step,
    /// Bytes of the proxy's current answer received so far.
    buf: Vec<u8>,
}

impl Socks5 {
    /// Connects through the proxy to `target` (an IPv4 or IPv6 address).
    pub fn to_addr(target: SocketAddr) -> Self {
        Self::new(Socks5Target::Addr(target))
    }

    /// Connects through the proxy to `host:port`, the name resolved by the proxy.
    pub fn to_host(host: impl Into<String>, port: u16) -> Self {
        Self::new(Socks5Target::Host(host.into(), port))
    }

    /// Connects through the proxy to `target`.
    pub fn new(target: impl Into<Socks5Target>) -> Self {
        Self {
            target: target.into(),
            credentials: None,
            step: Step::Method,
            buf: Vec::new(),
        }
    }

    /// Offers username/password authentication (RFC 1929) besides none.
    pub fn with_credentials(mut self, user: impl AsRef<[u8]>, password: impl AsRef<[u8]>) -> Self {
        self.credentials = Some((user.as_ref().to_vec(), password.as_ref().to_vec()));
        self
    }

    /// The target the proxy is asked to connect to.
    pub fn target(&self) -> &Socks5Target {
        &self.target
    }

    fn connect_request(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(&[5, 1, 0]);
        let port = match &self.target {
            Socks5Target::Addr(addr) => {
                match addr.ip() {
                    IpAddr::V4(ip) => {
                        out.push(1);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(4);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                addr.port()
            }
            Socks5Target::Host(host, port) => {
                let len =
                    u8::try_from(host.len()).map_err(|_| Socks5Error::TooLong("the host name"))?;
                out.push(3);
                out.push(len);
                out.extend_from_slice(host.as_bytes());
                *port
            }
        };
        out.extend_from_slice(&port.to_be_bytes());
        Ok(())
    }

    /// Takes bytes of the current answer into `buf` until it holds `want` bytes; returns
    /// whether it does.
    fn fill(&mut self, input: &mut &[u8], want: usize) -> bool {
        let take = want.saturating_sub(self.buf.len()).min(input.len());
        self.buf.extend_from_slice(&input[..take]);
        *input = &input[take..];
        self.buf.len() >= want
    }
}

impl Layer for Socks5 {
    fn start(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if let Some((user, password)) = &self.credentials {
            if user.len() > 255 {
                return Err(Socks5Error::TooLong("the username").into());
            }
            if password.len() > 255 {
                return Err(Socks5Error::TooLong("the password").into());
            }
            // No authentication, or username/password.
            out.extend_from_slice(&[5, 2, 0, 2]);
        } else {
            out.extend_from_slice(&[5, 1, 0]);
        }
        Ok(())
    }

    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        let mut input = input;
        while !input.is_empty() {
            match self.step {
                Step::Ready => {
                    up.extend_from_slice(input);
                    return Ok(());
                }
                Step::Method => {
                    if !self.fill(&mut input, 2) {
                        return Ok(());
                    }
                    if self.buf[0] != 5 {
                        return Err(Socks5Error::Protocol("not a SOCKS5 method reply").into());
                    }
                    let method = self.buf[1];
                    self.buf.clear();
                    match (method, &self.credentials) {
                        (0, _) => {
                            self.connect_request(out)?;
                            self.step = Step::Reply;
                        }
                        (2, Some((user, password))) => {
                            out.push(1);
                            out.push(user.len() as u8);
                            out.extend_from_slice(user);
                            out.push(password.len() as u8);
                            out.extend_from_slice(password);
                            self.step = Step::Auth;
                        }
                        (0xff, _) => return Err(Socks5Error::NoAcceptableMethod.into()),
                        _ => {
                            return Err(Socks5Error::Protocol(
                                "the proxy chose a method that was not offered",
                            )
                            .into())
                        }
                    }
                }
                Step::Auth => {
                    if !self.fill(&mut input, 2) {
                        return Ok(());
                    }
                    if self.buf[0] != 1 {
                        return Err(Socks5Error::Protocol("not a username/password reply").into());
                    }
                    let status = self.buf[1];
                    self.buf.clear();
                    if status != 0 {
                        return Err(Socks5Error::AuthenticationFailed.into());
                    }
                    self.connect_request(out)?;
                    self.step = Step::Reply;
                }
                Step::Reply => {
                    // VER REP RSV ATYP, then the bound address, then the port. A failure
                    // is reported as soon as its code is in.
                    if !self.fill(&mut input, 2) {
                        return Ok(());
                    }
                    if self.buf[0] != 5 {
                        return Err(Socks5Error::Protocol("not a SOCKS5 reply").into());
                    }
                    if self.buf[1] != 0 {
                        return Err(Socks5Error::Reply(self.buf[1]).into());
                    }
                    if !self.fill(&mut input, 5) {
                        return Ok(());
                    }
                    let addr_len = match self.buf[3] {
                        1 => 4,
                        4 => 16,
                        3 => 1 + usize::from(self.buf[4]),
                        _ => {
                            return Err(
                                Socks5Error::Protocol("unknown address type in reply").into()
                            )
                        }
                    };
                    if !self.fill(&mut input, 4 + addr_len + 2) {
                        return Ok(());
                    }
                    self.buf = Vec::new();
                    self.step = Step::Ready;
                }
            }
        }
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(frame);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.step == Step::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `layer` against a scripted proxy: `answers` are the proxy's replies, fed at
    /// every split point; returns what the layer sent and passed up.
    fn run(layer: &Socks5, answers: &[u8]) -> io::Result<(Vec<u8>, Vec<u8>, bool)> {
        let mut outcome = None;
        for cut in 0..=answers.len() {
            let mut l = layer.clone();
            let mut sent = Vec::new();
            l.start(&mut sent)?;
            let mut up = Vec::new();
            let result = l
                .decode(&answers[..cut], &mut up, &mut sent)
                .and_then(|()| l.decode(&answers[cut..], &mut up, &mut sent));
            let this = result.map(|()| (sent, up, l.is_ready()));
            let shown = this.as_ref().map_err(|e| e.to_string()).cloned();
            match &outcome {
                None => outcome = Some((shown, this)),
                Some((first, _)) => assert_eq!(&shown, first, "differs when cut at {cut}"),
            }
        }
        outcome.expect("at least one run").1
    }

    #[test]
    fn no_auth_connect_to_ipv4_then_pass_through() {
        let layer = Socks5::to_addr("10.1.2.3:8080".parse().unwrap());
        let answers = [5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, b'h', b'i'];
        let (sent, up, ready) = run(&layer, &answers).unwrap();
        assert_eq!(sent, [5, 1, 0, 5, 1, 0, 1, 10, 1, 2, 3, 0x1f, 0x90]);
        assert_eq!(up, b"hi", "bytes after the reply go up");
        assert!(ready);
    }

    #[test]
    fn auth_connect_to_ipv6_and_host() {
        let layer = Socks5::to_addr("[::1]:7".parse().unwrap()).with_credentials("u", "pw");
        let answers = [
            5, 2, 1, 0, 5, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 7,
        ];
        let (sent, up, ready) = run(&layer, &answers).unwrap();
        let mut want = vec![5, 2, 0, 2, 1, 1, b'u', 2, b'p', b'w', 5, 1, 0, 4];
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(&[1, 0, 7]);
        assert_eq!(sent, want);
        assert!(up.is_empty());
        assert!(ready);

        let layer = Socks5::to_host("example.org", 443);
        let answers = [5, 0, 5, 0, 0, 3, 4, b'h', b'o', b's', b't', 1, 187];
        let (sent, _, ready) = run(&layer, &answers).unwrap();
        let mut want = vec![5, 1, 0, 5, 1, 0, 3, 11];
        want.extend_from_slice(b"example.org");
        want.extend_from_slice(&[1, 187]);
        assert_eq!(sent, want);
        assert!(ready, "a reply with a domain address is taken whole");
    }

    #[test]
    fn failures_are_named() {
        let refused = run(
            &Socks5::to_addr("127.0.0.1:1".parse().unwrap()),
            &[5, 0, 5, 5, 0, 1],
        )
        .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            refused.to_string(),
            "SOCKS5 proxy: connection refused (reply 5)"
        );

        let no_method = run(&Socks5::to_host("h", 1), &[5, 0xff]).unwrap_err();
        assert_eq!(
            no_method
                .get_ref()
                .and_then(|e| e.downcast_ref::<Socks5Error>()),
            Some(&Socks5Error::NoAcceptableMethod)
        );

        let bad_auth = run(
            &Socks5::to_host("h", 1).with_credentials("u", "p"),
            &[5, 2, 1, 1],
        )
        .unwrap_err();
        assert_eq!(bad_auth.kind(), io::ErrorKind::PermissionDenied);

        let not_offered = run(&Socks5::to_host("h", 1), &[5, 2]).unwrap_err();
        assert_eq!(not_offered.kind(), io::ErrorKind::InvalidData);

        let socks4 = run(&Socks5::to_host("h", 1), &[4, 0]).unwrap_err();
        assert_eq!(socks4.kind(), io::ErrorKind::InvalidData);

        let long = "x".repeat(256);
        let mut sent = Vec::new();
        let mut l = Socks5::to_host(long, 1);
        l.start(&mut sent).unwrap();
        let e = l.decode(&[5, 0], &mut Vec::new(), &mut sent).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn partial_answers_wait_for_more() {
        let mut l = Socks5::to_host("h", 1);
        let mut sent = Vec::new();
        l.start(&mut sent).unwrap();
        l.decode(&[5], &mut Vec::new(), &mut sent).unwrap();
        assert_eq!(
            sent,
            [5, 1, 0],
            "nothing more until the method reply is whole"
        );
        assert!(!l.is_ready());
    }
}
