//! Echo client: connects, sends a few lines, prints what comes back, disconnects.
//!
//! ```text
//! cargo run --release --example echo_server &
//! cargo run --release --example echo_client [ADDR] [MESSAGES]   # default 127.0.0.1:7000, 5
//! ```

use ringmill::errors::{NetworkError, Result};
use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpClient, TcpClientConfig};
use ringmill::EventLoop;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

enum Event {
    Connected,
    Data(Vec<u8>),
    Failed(String),
    Closed,
}

struct Client {
    events: mpsc::Sender<Event>,
}

impl NetworkHandler for Client {
    fn on_connect(&self, _ctx: &ServerContext, _conn: ConnectionId) -> Result<()> {
        let _ = self.events.send(Event::Connected);
        Ok(())
    }

    fn on_data(&self, _ctx: &ServerContext, _conn: ConnectionId, data: &[u8]) -> Result<()> {
        let _ = self.events.send(Event::Data(data.to_vec()));
        Ok(())
    }

    fn on_disconnect(&self, _ctx: &ServerContext, _conn: ConnectionId) -> Result<()> {
        let _ = self.events.send(Event::Closed);
        Ok(())
    }

    fn on_error(&self, _ctx: &ServerContext, _conn: Option<ConnectionId>, error: NetworkError) {
        let _ = self.events.send(Event::Failed(error.to_string()));
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7000".to_string())
        .parse()?;
    let messages: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(5);

    let event_loop = EventLoop::builder().threads(1).build()?;
    println!("echo_client: backend {}", event_loop.backend());
    let (tx, rx) = mpsc::channel();
    let mut client = TcpClient::connect(addr, TcpClientConfig::default(), Client { events: tx })?;
    client.start(&event_loop)?;

    let timeout = Duration::from_secs(10);
    match rx.recv_timeout(timeout)? {
        Event::Connected => println!("connected to {addr}"),
        Event::Failed(e) => return Err(e.into()),
        _ => return Err("unexpected event before connect".into()),
    }
    for i in 0..messages {
        let line = format!("hello {i}\n");
        client.send(line.as_bytes())?;
        let mut got = Vec::new();
        while got.len() < line.len() {
            match rx.recv_timeout(timeout)? {
                Event::Data(d) => got.extend_from_slice(&d),
                Event::Failed(e) => return Err(e.into()),
                Event::Closed => return Err("server closed the connection".into()),
                Event::Connected => {}
            }
        }
        print!("echoed: {}", String::from_utf8_lossy(&got));
    }
    client.disconnect()?;
    event_loop.stop();
    Ok(())
}
