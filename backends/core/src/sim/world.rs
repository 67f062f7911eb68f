//! The world outside the loop: the servers and clients of one scenario, the simulated
//! peers at the other end of their connections, and what "other threads" do, all drawn
//! from the seed and run in virtual time from inside the simulated driver's `poll`.

use super::log::Log;
use super::rng::{pattern, Rng};
use crate::clock::Clock;
use crate::context::ConnSender;
use crate::driver::{ListenerId, Slot};
use crate::id::ConnectionId;
use crate::runtime::{self, ClientConn, Command, LoopShared};
use crate::service::Service;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Something the world does at a moment of virtual time.
#[derive(Debug, Clone, Copy)]
pub(super) enum Event {
    /// Start listening for server `usize`.
    Listen(usize),
    /// A peer connects to its server (joins the backlog).
    Connect(usize),
    /// A peer sends its handshake byte.
    Hello(usize),
    /// A peer writes some of what it has to send.
    Write(usize),
    /// A peer reads what arrived (its receive window empties).
    Read(usize),
    /// A peer ends its stream.
    Shutdown(usize),
    /// A peer resets its connection.
    Reset(usize),
    /// The handler resumes the reads it paused.
    Resume(usize),
    /// Client `usize` is started.
    StartClient(usize),
    /// Another thread acts on a random connection (send, close, pause, ...).
    Act,
    /// Server `usize` is stopped (`TcpServer::stop`).
    StopServer(usize),
    /// The event loop is stopped; the scenario is over.
    End,
}

/// A server of the scenario.
pub(super) struct Server {
    pub(super) service: Arc<Service>,
    pub(super) listener: Option<std::net::TcpListener>,
    pub(super) fd: i32,
    pub(super) backlog: VecDeque<usize>,
    pub(super) listening: Option<ListenerId>,
    /// The stop's acknowledgement, until it comes.
    pub(super) stop_ack: Option<Receiver<()>>,
    /// The stop was acknowledged: nothing of this server may be left or come.
    pub(super) stopped: bool,
}

/// Where a peer's connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// A peer connecting to server `usize`.
    Server(usize),
    /// The remote end of client `usize`.
    Client(usize),
}

/// A connection as the other end sees it, and what the handler saw of it.
pub(super) struct Peer {
    pub(super) side: Side,
    pub(super) addr: SocketAddr,
    pub(super) framed: bool,
    /// The handler answers with slices of the bytes it is given when they line up with
    /// what it must send next (the core's pattern to this peer is the peer's own): the
    /// write-through path.
    pub(super) echo: bool,
    /// The connection starts with the one-byte handshake ([`super::HELLO`]) both ways.
    pub(super) hello: bool,
    pub(super) hello_sent: bool,
    pub(super) got_hello: bool,
    pub(super) high: usize,
    pub(super) chunk: usize,
    /// The pattern of bytes this peer sends, and of bytes the core sends it.
    pub(super) in_key: u64,
    pub(super) out_key: u64,
    pub(super) slot: Option<Slot>,
    /// The connection exists (accepted, or a client's connect succeeded).
    pub(super) up: bool,
    /// The core closed its socket.
    pub(super) gone: bool,
    pub(super) reset: bool,
    // Peer to core.
    pub(super) to_core: VecDeque<u8>,
    pub(super) plan: u64,
    pub(super) written: u64,
    pub(super) frames_out: VecDeque<usize>,
    pub(super) eof_out: bool,
    pub(super) plan_eof: bool,
    // Core to peer.
    pub(super) window: usize,
    pub(super) unread: usize,
    pub(super) stalled: bool,
    pub(super) got: u64,
    pub(super) got_payload: u64,
    pub(super) decode: Vec<u8>,
    pub(super) read_scheduled: bool,
    pub(super) core_eof: bool,
    // What the handler saw and sent.
    pub(super) id: Option<ConnectionId>,
    pub(super) ordinal: u64,
    pub(super) connected: bool,
    pub(super) disconnected: bool,
    pub(super) delivered: u64,
    pub(super) accepted: u64,
    pub(super) frames_in: VecDeque<usize>,
    pub(super) biggest_frame: usize,
    pub(super) sender: Option<ConnSender>,
    pub(super) paused: bool,
}

/// The scenario and the peers of one seed.
pub(crate) struct World {
    pub(super) rng: Rng,
    pub(super) clock: Clock,
    pub(super) log: Log,
    pub(super) servers: Vec<Server>,
    pub(super) clients: Vec<ClientConn>,
    pub(super) peers: Vec<Peer>,
    pub(super) by_addr: HashMap<SocketAddr, usize>,
    pub(super) by_fd: HashMap<i32, usize>,
    pub(super) by_slot: BTreeMap<Slot, usize>,
    pub(super) by_listener: BTreeMap<ListenerId, usize>,
    pub(super) by_id: HashMap<ConnectionId, usize>,
    /// How each client's connect ends: when, and with which error (`None`: never).
    pub(super) connects: BTreeMap<Slot, Option<(Instant, Option<std::io::ErrorKind>)>>,
    /// The sockets the core handed over, kept open until the slot's `Closed`.
    pub(super) handles: BTreeMap<Slot, socket2::Socket>,
    pub(super) events: BTreeMap<(Instant, u64), Event>,
    pub(super) seq: u64,
    pub(super) next_ordinal: u64,
    pub(super) shared: Option<Arc<LoopShared>>,
    /// The loop was asked to stop.
    pub(super) ended: bool,
    /// The world itself, for closures the handler leaves on the loop (timers, posts).
    pub(super) me: std::sync::Weak<Mutex<World>>,
}

impl World {
    /// Schedules `event` at `at` (after everything scheduled for the same instant).
    pub(super) fn at(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    /// The next scheduled event's instant.
    pub(super) fn next_event(&self) -> Option<Instant> {
        self.events.keys().next().map(|&(at, _)| at)
    }

    /// Runs every event due at `now`, then checks what must hold between steps; whether
    /// anything ran.
    pub(crate) fn run_until(world: &Arc<Mutex<World>>, now: Instant) -> bool {
        let mut w = world.lock().unwrap_or_else(|e| e.into_inner());
        if w.shared.is_none() {
            w.shared = LoopShared::current();
        }
        let mut ran = false;
        while let Some(entry) = w.events.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let event = entry.remove();
            ran = true;
            w.run(event, now);
        }
        w.check_stops(now);
        ran
    }

    fn run(&mut self, event: Event, now: Instant) {
        match event {
            Event::Listen(s) => {
                let (Some(shared), Some(listener)) =
                    (self.shared.clone(), self.servers[s].listener.take())
                else {
                    return;
                };
                self.log.event(now, "listen", s as u64, 0);
                let service = Arc::clone(&self.servers[s].service);
                if let Err(e) = runtime::listen(&shared, &service, listener) {
                    self.log
                        .violation(now, format!("listen on a running loop failed: {e}"));
                }
            }
            Event::Connect(p) => {
                let Side::Server(s) = self.peers[p].side else {
                    // A client's connect succeeded: its remote end is up.
                    self.log.event(now, "remote-up", p as u64, 0);
                    self.peer_up(p, now);
                    return;
                };
                self.log.event(now, "peer-connect", p as u64, s as u64);
                self.servers[s].backlog.push_back(p);
                self.peer_up(p, now);
            }
            Event::Write(p) => self.peer_write(p, now),
            Event::Hello(p) => self.peer_hello(p, now),
            Event::Read(p) => self.peer_read(p, now),
            Event::Shutdown(p) => self.peer_shutdown(p, now),
            Event::Reset(p) => self.peer_reset(p, now),
            Event::Resume(p) => self.resume(p, now),
            Event::StartClient(c) => {
                let Some(shared) = self.shared.clone() else {
                    return;
                };
                self.log.event(now, "client-start", c as u64, 0);
                if let Err(e) = self.clients[c].start(&shared) {
                    self.log.violation(now, format!("client start failed: {e}"));
                }
            }
            Event::Act => self.act(now),
            Event::StopServer(s) => self.stop_server(s, now),
            Event::End => {
                self.log.event(now, "end", 0, 0);
                self.ended = true;
                if let Some(shared) = &self.shared {
                    shared.request_stop();
                }
            }
        }
    }

    /// `TcpServer::stop` as another thread makes it: no more accepts, then a
    /// `StopService` whose acknowledgement is checked when it comes.
    fn stop_server(&mut self, s: usize, now: Instant) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        self.log.event(now, "stop-server", s as u64, 0);
        let server = &mut self.servers[s];
        server
            .service
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if shared.push(Command::StopService {
            service: Arc::clone(&server.service),
            ack,
        }) {
            server.stop_ack = Some(done);
        }
    }

    /// A frame of the pattern the core sends `p`, `len` bytes long, from where the
    /// accepted bytes end.
    pub(super) fn next_out_frame(&self, p: usize, len: usize) -> Vec<u8> {
        let peer = &self.peers[p];
        pattern(peer.out_key, peer.accepted, len)
    }
}
