//! Line-based chat room: every line a client sends goes to every other client.
//!
//! ```text
//! cargo run --release --example chat [ADDR]          # default 127.0.0.1:7100
//! nc 127.0.0.1 7100                                   # in two or more terminals
//! ```
//!
//! Each line is delivered as `[conn-N] text`; joins and leaves are announced as `* ...`.
//! Lines may arrive split over any number of reads, or several in one read. A line longer
//! than [`MAX_LINE`] bytes gets the sender disconnected. A member that does not read is
//! never allowed to hold the room up: when its queue is full (`SendError::Backpressure`)
//! lines for it are dropped, and it is told how many once it catches up.

use ringmill::errors::{NetworkError, Result, SendError};
use ringmill::tcp::{
    ConnSender, ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig,
    TcpServerConfigBuilder,
};
use ringmill::EventLoop;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, RwLock};

/// Longest line accepted, newline excluded.
pub const MAX_LINE: usize = 4096;
const SHARDS: usize = 16;

/// The room.
pub struct Chat {
    /// Who is in the room: written on join and leave, read for every line.
    members: RwLock<HashMap<ConnectionId, Member>>,
    /// Each connection's unfinished line, sharded by connection id.
    partial: Vec<Mutex<HashMap<ConnectionId, Vec<u8>>>>,
}

struct Member {
    sender: ConnSender,
    /// Lines dropped for this member since it last caught up.
    dropped: Mutex<u64>,
}

impl Default for Chat {
    fn default() -> Self {
        Self::new()
    }
}

impl Chat {
    /// An empty room.
    pub fn new() -> Self {
        Self {
            members: RwLock::default(),
            partial: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn partial(&self, conn: ConnectionId) -> MutexGuard<'_, HashMap<ConnectionId, Vec<u8>>> {
        self.partial[(conn.as_u64() % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `line` to every member but `from`.
    fn relay(&self, from: ConnectionId, line: &[u8]) {
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        for (id, member) in members.iter() {
            if *id == from {
                continue;
            }
            match member.sender.send(line) {
                Ok(()) | Err(SendError::Closed) => {}
                Err(_) => *member.dropped.lock().unwrap_or_else(|e| e.into_inner()) += 1,
            }
        }
    }
}

/// The server configuration the example uses (the smoke test uses it too).
pub fn config(addr: SocketAddr) -> TcpServerConfigBuilder {
    TcpServerConfig::builder()
        .address(addr)
        .high_watermark(256 * 1024)
        .low_watermark(64 * 1024)
}

impl NetworkHandler for Chat {
    fn on_connect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let Some(sender) = ctx.sender(conn) else {
            return Ok(());
        };
        self.relay(conn, format!("* {conn} joined\n").as_bytes());
        let mut members = self.members.write().unwrap_or_else(|e| e.into_inner());
        members.insert(
            conn,
            Member {
                sender: sender.clone(),
                dropped: Mutex::new(0),
            },
        );
        let here = members.len();
        drop(members);
        sender.send(format!("* welcome, you are {conn}; {here} here\n").as_bytes())?;
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        let mut shard = self.partial(conn);
        let partial = shard.entry(conn).or_default();
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (piece, tail) = rest.split_at(end);
            rest = &tail[1..];
            let line = if partial.is_empty() {
                piece
            } else {
                partial.extend_from_slice(piece);
                partial.as_slice()
            };
            if line.len() > MAX_LINE {
                return too_long(ctx, conn);
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                let mut out = Vec::with_capacity(line.len() + 24);
                out.extend_from_slice(format!("[{conn}] ").as_bytes());
                out.extend_from_slice(line);
                out.push(b'\n');
                self.relay(conn, &out);
            }
            partial.clear();
        }
        partial.extend_from_slice(rest);
        if partial.len() > MAX_LINE {
            return too_long(ctx, conn);
        }
        Ok(())
    }

    fn on_writable(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        // The member caught up: say what it missed, if anything.
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        if let Some(member) = members.get(&conn) {
            let dropped =
                std::mem::take(&mut *member.dropped.lock().unwrap_or_else(|e| e.into_inner()));
            if dropped > 0 {
                let _ = ctx.send_to(
                    conn,
                    format!("* {dropped} lines dropped: you read too slowly\n").as_bytes(),
                );
            }
        }
        Ok(())
    }

    fn on_disconnect(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.partial(conn).remove(&conn);
        let was_member = self
            .members
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn)
            .is_some();
        if was_member {
            self.relay(conn, format!("* {conn} left\n").as_bytes());
        }
        Ok(())
    }

    fn on_error(&self, _ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError) {
        eprintln!("chat: {conn:?}: {error}");
    }
}

fn too_long(ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
    let _ = ctx.send_to(
        conn,
        format!("* line over {MAX_LINE} bytes, bye\n").as_bytes(),
    );
    ctx.close_connection_gracefully(conn)
}

#[allow(dead_code)] // The smoke test includes this file for its handler only.
fn main() {
    if let Err(e) = run() {
        eprintln!("chat: {e}");
        std::process::exit(1);
    }
}

#[allow(dead_code)]
fn run() -> Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7100".to_string())
        .parse()?;
    let event_loop = EventLoop::builder().build()?;
    let server = TcpServer::new(config(addr).build(), Chat::new())?;
    server.start(&event_loop)?;
    println!("chat listening on {}", server.local_addr()?);
    println!(
        "backend: {} ({})",
        event_loop.backend(),
        event_loop.backend_reason()
    );
    event_loop.run()
}
