//! SOCKS5 client: connects to TARGET through the SOCKS5 proxy at PROXY, sends each line
//! of standard input, prints whatever comes back, and exits once input has ended and
//! the replies are in (or the target closes).
//!
//! ```text
//! cargo run --release --example echo_server &                  # a target on 127.0.0.1:7000
//! microsocks -i 127.0.0.1 -p 1080 &                            # a SOCKS5 proxy
//! echo hello | cargo run --release --example socks_client -- 127.0.0.1:1080 127.0.0.1:7000
//! cargo run --release --example socks_client -- PROXY HOST:PORT [USER PASSWORD]
//! ```
//!
//! TARGET is an IP address and port, or a host name and port that the proxy resolves
//! (through Tor, a `.onion` name). The connect timeout (10 s) covers the TCP connect to
//! the proxy and the whole SOCKS5 handshake.

use ringmill::errors::{NetworkError, Result};
use ringmill::layer::Socks5;
use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpClient, TcpClientConfig};
use ringmill::EventLoop;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

enum Event {
    Connected,
    Data(Vec<u8>),
    Failed(String),
    Closed,
    /// Standard input ended after this many bytes were sent.
    InputDone(usize),
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

/// `ADDR:PORT` as an address, anything else as `HOST:PORT` for the proxy to resolve.
fn target(arg: &str) -> Result<Socks5> {
    if let Ok(addr) = arg.parse::<SocketAddr>() {
        return Ok(Socks5::to_addr(addr));
    }
    let (host, port) = arg
        .rsplit_once(':')
        .ok_or_else(|| format!("target {arg:?} is not HOST:PORT"))?;
    Ok(Socks5::to_host(host, port.parse()?))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 && args.len() != 4 {
        eprintln!("usage: socks_client PROXY TARGET [USER PASSWORD]");
        std::process::exit(2);
    }
    let proxy: SocketAddr = args[0].parse()?;
    let mut layer = target(&args[1])?;
    if let [user, password] = &args[2..] {
        layer = layer.with_credentials(user, password);
    }

    let event_loop = EventLoop::builder().threads(1).build()?;
    let (tx, rx) = mpsc::channel();
    let config = TcpClientConfig {
        connect_timeout: Duration::from_secs(10),
        ..TcpClientConfig::default()
    };
    let handler = Client { events: tx.clone() };
    let mut client = TcpClient::connect(proxy, config, handler)?.with_layer(layer)?;
    client.start(&event_loop)?;
    match rx.recv_timeout(Duration::from_secs(15))? {
        Event::Connected => eprintln!("connected to {} through {proxy}", args[1]),
        Event::Failed(e) => {
            eprintln!("socks_client: {e}");
            std::process::exit(1);
        }
        _ => return Err("unexpected event before connect".into()),
    }

    // Standard input on its own thread; lines are sent as they come.
    let sender = client.sender();
    std::thread::spawn(move || {
        let mut total = 0usize;
        for line in std::io::stdin().lock().lines() {
            let Ok(mut line) = line else { break };
            line.push('\n');
            if sender.send(line.as_bytes()).is_err() {
                break;
            }
            total += line.len();
        }
        let _ = tx.send(Event::InputDone(total));
    });

    // Print what comes back. Once input has ended, stop when as many bytes came back as
    // went out (an echo) or after 5 quiet seconds.
    let mut stdout = std::io::stdout();
    let (mut received, mut sent) = (0usize, None);
    loop {
        let event = match sent {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(_) => rx.recv_timeout(Duration::from_secs(5)),
        };
        match event {
            Ok(Event::Data(data)) => {
                received += data.len();
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            Ok(Event::InputDone(total)) => sent = Some(total),
            Ok(Event::Failed(e)) => eprintln!("socks_client: {e}"),
            Ok(Event::Closed) => {
                eprintln!("the target closed the connection");
                break;
            }
            Ok(Event::Connected) => {}
            Err(_) => break,
        }
        if sent.is_some_and(|total| received >= total) {
            break;
        }
    }
    client.disconnect()?;
    event_loop.stop();
    Ok(())
}
