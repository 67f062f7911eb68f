//! TLS echo server (the `tls` feature): every byte received, decrypted, is sent back
//! encrypted. The TLS layer sits under the handler, which sees plaintext only.
//!
//! ```text
//! cargo run --release --features tls --example tls_echo [ADDR [CERT.pem KEY.pem]]
//! openssl s_client -connect 127.0.0.1:7443 -servername localhost -CAfile tests/data/tls/ca.pem
//! ```
//!
//! ADDR defaults to 127.0.0.1:7443. Without CERT and KEY it uses the test certificate
//! committed in `tests/data/tls` (for `localhost` and 127.0.0.1, signed by the test CA
//! `tests/data/tls/ca.pem`): for trying it out only, since its private key is public.
//!
//! The rustls configuration names its crypto provider (ring, the one ringmill's `tls`
//! feature enables) instead of relying on a process-wide default, so it keeps working
//! when another crate in the program enables a second provider.

use ringmill::errors::{NetworkError, Result};
use ringmill::layer::tls::{rustls, TlsServer};
use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
use ringmill::EventLoop;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The echo handler: plaintext in, plaintext out.
pub struct Echo;

impl NetworkHandler for Echo {
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        ctx.send_to(conn, data)
    }

    fn on_error(&self, _ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError) {
        // Failed handshakes (a client that does not trust the certificate, say) land here.
        eprintln!("tls_echo: {conn:?}: {error}");
    }
}

/// A rustls server configuration from a PEM certificate chain and a PEM private key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<std::result::Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// A TLS echo server on `addr` (not started): a TLS layer per connection, built from
/// `tls`. Handshakes must finish within the idle timeout.
pub fn server(addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> Result<TcpServer<Echo>> {
    let config = TcpServerConfig::builder()
        .address(addr)
        .idle_timeout(Duration::from_secs(60))
        .max_connections(10_000)
        .build();
    Ok(TcpServer::new(config, Echo)?
        .with_layer(move || Box::new(TlsServer::new(Arc::clone(&tls)).expect("a server config"))))
}

/// The committed test certificate and key.
pub fn test_certificate() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    (dir.join("server.pem"), dir.join("server.key"))
}

#[allow(dead_code)] // The smoke test includes this file for `server` only.
fn main() {
    if let Err(e) = run() {
        eprintln!("tls_echo: {e}");
        std::process::exit(1);
    }
}

#[allow(dead_code)]
fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = args
        .first()
        .map_or("127.0.0.1:7443", String::as_str)
        .parse()?;
    let (cert, key) = match (args.get(1), args.get(2)) {
        (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
        (None, None) => {
            let (cert, key) = test_certificate();
            eprintln!("tls_echo: using the test certificate of tests/data/tls (its key is public)");
            (cert, key)
        }
        _ => return Err("usage: tls_echo [ADDR [CERT.pem KEY.pem]]".into()),
    };
    let event_loop = EventLoop::builder().build()?;
    let server = server(addr, tls_config(&cert, &key)?)?;
    server.start(&event_loop)?;
    println!(
        "tls_echo listening on {} (backend: {})",
        server.local_addr()?,
        event_loop.backend()
    );
    event_loop.run()
}
