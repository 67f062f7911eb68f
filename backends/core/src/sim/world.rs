//! The world outside the loop: the servers and clients of one scenario, the simulated
//! peers at the other end of their connections, and what "other threads" do, all drawn
//! from the seed and run in virtual time from inside the simulated driver's `poll`.

use super::check::Checker;
use super::log::Log;
use super::rng::{pattern, Rng};
use crate::admission::AdmissionConfig;
use crate::clock::Clock;
use crate::config::{TcpClientConfig, Watermarks};
use crate::context::ConnSender;
use crate::driver::{ListenerId, Slot};
use crate::id::ConnectionId;
use crate::inbox::{Command, LoopShared};
use crate::layer::LayerFactory;
use crate::runtime::{self, ClientConn, LoopSettings};
use crate::service::{Service, ServiceConfig, SocketOptions};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Something the world does at a moment of virtual time.
#[derive(Debug, Clone, Copy)]
pub(super) enum Event {
    /// Start listening for server `usize`.
    Listen(usize),
    /// A peer connects to its server (joins the backlog).
    Connect(usize),
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
    events: BTreeMap<(Instant, u64), Event>,
    seq: u64,
    pub(super) next_ordinal: u64,
    pub(super) shared: Option<Arc<LoopShared>>,
    /// The loop was asked to stop.
    pub(super) ended: bool,
    /// The world itself, for closures the handler leaves on the loop (timers, posts).
    pub(super) me: std::sync::Weak<Mutex<World>>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl World {
    /// Draws a scenario from `seed`. `layer` builds the framing layer used by the framed
    /// servers and clients (`None`: every connection is plain).
    pub(crate) fn build(
        seed: u64,
        clock: Clock,
        log: Log,
        layer: Option<LayerFactory>,
    ) -> (Arc<Mutex<World>>, LoopSettings) {
        let mut rng = Rng::new(seed);
        let settings = LoopSettings {
            stop_timeout: ms(rng.range(50, 3_000)),
            linger: ms(rng.range(50, 3_000)),
            dispatch_on_run: false,
        };
        let world = Arc::new(Mutex::new(World {
            rng: rng.fork(),
            clock,
            log,
            servers: Vec::new(),
            clients: Vec::new(),
            peers: Vec::new(),
            by_addr: HashMap::new(),
            by_fd: HashMap::new(),
            by_slot: BTreeMap::new(),
            by_listener: BTreeMap::new(),
            by_id: HashMap::new(),
            connects: BTreeMap::new(),
            handles: BTreeMap::new(),
            events: BTreeMap::new(),
            seq: 0,
            next_ordinal: 0,
            shared: None,
            ended: false,
            me: std::sync::Weak::new(),
        }));
        let weak = Arc::downgrade(&world);
        let mut w = world.lock().unwrap_or_else(|e| e.into_inner());
        w.me = weak.clone();
        let start = w.clock.now();
        for s in 0..rng.size(1, 3) {
            let framed = layer.is_some() && rng.chance(50);
            let (marks, chunk) = limits(&mut rng);
            let handler = Arc::new(Checker::new(weak.clone(), Side::Server(s)));
            let config = ServiceConfig {
                marks,
                chunk,
                max_connections: rng.chance(20).then(|| rng.size(1, 3)),
                idle_timeout: rng.chance(20).then(|| ms(rng.range(200, 4_000))),
                handshake_timeout: None,
                socket: SocketOptions {
                    no_delay: true,
                    keep_alive: None,
                },
                admission: AdmissionConfig::default(),
            };
            let service = Service::new(handler, config, 16);
            if framed {
                let factory = layer.clone().expect("framed only with a layer");
                service.set_layers(vec![factory]);
            }
            let listener = unbound_listener();
            let fd = raw_fd(&listener);
            w.servers.push(Server {
                service,
                listener: Some(listener),
                fd,
                backlog: VecDeque::new(),
                listening: None,
                stop_ack: None,
                stopped: false,
            });
            w.at(start + ms(rng.range(0, 200)), Event::Listen(s));
            for _ in 0..rng.size(1, 10) {
                let p = w.new_peer(Side::Server(s), framed, marks.high, chunk);
                w.at(start + ms(rng.range(0, 8_000)), Event::Connect(p));
            }
            if rng.chance(40) {
                w.at(start + ms(rng.range(300, 10_000)), Event::StopServer(s));
            }
        }
        for c in 0..rng.size(0, 4) {
            let framed = layer.is_some() && rng.chance(50);
            let (marks, chunk) = limits(&mut rng);
            let config = TcpClientConfig {
                connect_timeout: ms(rng.range(100, 3_000)),
                high_watermark: marks.high,
                low_watermark: marks.low,
                buffer_size: chunk,
                idle_timeout: rng.chance(15).then(|| ms(rng.range(200, 4_000))),
                ..TcpClientConfig::default()
            };
            let p = w.new_peer(Side::Client(c), framed, marks.high, chunk);
            let addr = w.peers[p].addr;
            let handler = Arc::new(Checker::new(weak.clone(), Side::Client(c)));
            let socket = unbound_socket();
            let client = ClientConn::new(addr, config, socket, handler);
            if framed {
                let factory = layer.clone().expect("framed only with a layer");
                if client.add_layer(factory()).is_err() {
                    w.log
                        .violation(start, "add_layer refused on a fresh client".into());
                }
            }
            w.clients.push(client);
            w.at(start + ms(rng.range(0, 8_000)), Event::StartClient(c));
        }
        for _ in 0..rng.size(0, 50) {
            w.at(start + ms(rng.range(0, 11_000)), Event::Act);
        }
        w.at(start + ms(12_000), Event::End);
        drop(w);
        (world, settings)
    }

    /// Schedules `event` at `at` (after everything scheduled for the same instant).
    pub(super) fn at(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    fn new_peer(&mut self, side: Side, framed: bool, high: usize, chunk: usize) -> usize {
        let p = self.peers.len();
        let rng = &mut self.rng;
        let addr = match side {
            Side::Server(s) => SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(
                    10,
                    s as u8,
                    (p / 250) as u8,
                    (p % 250) as u8 + 1,
                )),
                40_000 + p as u16,
            ),
            Side::Client(c) => SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, c as u8 + 1)),
                7_000 + p as u16,
            ),
        };
        let plan = match rng.below(4) {
            0 => 0,
            1 => rng.range(1, 64),
            _ => rng.range(1, 20_000),
        };
        self.peers.push(Peer {
            side,
            addr,
            framed,
            high,
            chunk,
            in_key: rng.next_u64(),
            out_key: rng.next_u64(),
            slot: None,
            up: false,
            gone: false,
            reset: false,
            to_core: VecDeque::new(),
            plan,
            written: 0,
            frames_out: VecDeque::new(),
            eof_out: false,
            plan_eof: rng.chance(60),
            window: rng.size(1, 8_192),
            unread: 0,
            stalled: rng.chance(10),
            got: 0,
            got_payload: 0,
            decode: Vec::new(),
            read_scheduled: false,
            core_eof: false,
            id: None,
            ordinal: 0,
            connected: false,
            disconnected: false,
            delivered: 0,
            accepted: 0,
            frames_in: VecDeque::new(),
            biggest_frame: 0,
            sender: None,
            paused: false,
        });
        self.by_addr.insert(addr, p);
        p
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

/// Watermarks and an `on_data` chunk size, small ones often, to reach backpressure and
/// split deliveries.
fn limits(rng: &mut Rng) -> (Watermarks, usize) {
    let high = match rng.below(3) {
        0 => rng.size(1, 64),
        1 => rng.size(64, 4_096),
        _ => 64 * 1024,
    };
    let low = rng.size(0, high);
    let chunk = match rng.below(3) {
        0 => rng.size(1, 16),
        1 => rng.size(16, 512),
        _ => 64 * 1024,
    };
    let marks = Watermarks {
        high,
        low,
        max_frame: usize::MAX,
    };
    (marks, chunk)
}

/// A TCP socket that is neither bound nor connected: what the core hands to a driver
/// stands for a connection, but the simulation never touches it.
pub(super) fn unbound_socket() -> socket2::Socket {
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("the simulation needs TCP sockets (descriptors)")
}

fn unbound_listener() -> std::net::TcpListener {
    unbound_socket().into()
}

pub(super) fn raw_fd<T: std::os::fd::AsRawFd>(s: &T) -> i32 {
    s.as_raw_fd()
}
