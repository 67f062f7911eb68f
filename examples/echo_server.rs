//! Echo server: every byte received is sent back.
//!
//! ```text
//! cargo run --release --example echo_server [ADDR]       # default 127.0.0.1:7000
//! RINGMILL_BACKEND=mio cargo run --release --example echo_server
//! nc 127.0.0.1 7000
//! ```
//!
//! Prints the address and the backend in use, then serves until the process is stopped.

use ringmill::errors::{NetworkError, Result};
use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
use ringmill::EventLoop;
use std::net::SocketAddr;

struct Echo;

impl NetworkHandler for Echo {
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        ctx.send_to(conn, data)
    }

    fn on_error(&self, _ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError) {
        eprintln!("echo_server: {conn:?}: {error}");
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string())
        .parse()?;
    let event_loop = EventLoop::builder().build()?;
    let config = TcpServerConfig::builder().address(addr).build();
    let server = TcpServer::new(config, Echo)?;
    server.start(&event_loop)?;
    println!(
        "echo_server listening on {} ({} loop threads)",
        server.local_addr()?,
        event_loop.threads()
    );
    println!(
        "backend: {} ({}); {}",
        event_loop.backend(),
        event_loop.backend_reason(),
        event_loop.backend_description()
    );
    event_loop.run()
}
