//! Drawing a scenario from a seed: servers, clients, peers and their plans, and what
//! other threads will do when.

use super::check::Checker;
use super::log::Log;
use super::rng::Rng;
use super::world::{Event, Peer, Server, Side, World};
use super::Layers;
use crate::admission::AdmissionConfig;
use crate::clock::Clock;
use crate::config::{TcpClientConfig, Watermarks};
use crate::runtime::{ClientConn, LoopSettings};
use crate::service::{Service, ServiceConfig, SocketOptions};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl World {
    /// Draws a scenario from `seed`. `layers` builds the layers of the framed
    /// servers and clients (`None`: every connection is plain).
    pub(crate) fn build(
        seed: u64,
        clock: Clock,
        log: Log,
        layers: Layers,
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
            let framed = layers.framing.is_some() && rng.chance(50);
            let hello = framed && layers.hello.is_some() && rng.chance(40);
            let (marks, chunk) = limits(&mut rng);
            let handler = Arc::new(Checker::new(weak.clone(), Side::Server(s)));
            let config = ServiceConfig {
                marks,
                chunk,
                max_connections: rng.chance(20).then(|| rng.size(1, 3)),
                idle_timeout: rng.chance(20).then(|| ms(rng.range(200, 4_000))),
                handshake_timeout: hello.then(|| ms(rng.range(300, 3_000))),
                socket: SocketOptions {
                    no_delay: true,
                    keep_alive: None,
                },
                admission: AdmissionConfig::default(),
            };
            let service = Service::new(handler, config, 16);
            if framed {
                let mut stack = Vec::new();
                if hello {
                    stack.extend(layers.hello.clone());
                }
                stack.extend(layers.framing.clone());
                service.set_layers(stack);
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
                let p = w.new_peer(Side::Server(s), framed, hello, marks.high, chunk);
                w.at(start + ms(rng.range(0, 8_000)), Event::Connect(p));
            }
            if rng.chance(40) {
                w.at(start + ms(rng.range(300, 10_000)), Event::StopServer(s));
            }
        }
        for c in 0..rng.size(0, 4) {
            let framed = layers.framing.is_some() && rng.chance(50);
            let hello = framed && layers.hello.is_some() && rng.chance(40);
            let (marks, chunk) = limits(&mut rng);
            let config = TcpClientConfig {
                connect_timeout: ms(rng.range(100, 3_000)),
                high_watermark: marks.high,
                low_watermark: marks.low,
                buffer_size: chunk,
                idle_timeout: rng.chance(15).then(|| ms(rng.range(200, 4_000))),
                ..TcpClientConfig::default()
            };
            let p = w.new_peer(Side::Client(c), framed, hello, marks.high, chunk);
            let addr = w.peers[p].addr;
            let handler = Arc::new(Checker::new(weak.clone(), Side::Client(c)));
            let socket = unbound_socket();
            let client = ClientConn::new(addr, config, socket, handler);
            let hello_layer = layers.hello.clone().filter(|_| hello);
            let framing = layers.framing.clone().filter(|_| framed);
            for factory in hello_layer.into_iter().chain(framing) {
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

    fn new_peer(
        &mut self,
        side: Side,
        framed: bool,
        hello: bool,
        high: usize,
        chunk: usize,
    ) -> usize {
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
        let echo = !framed && !hello && rng.chance(40);
        let in_key = rng.next_u64();
        let out_key = if echo { in_key } else { rng.next_u64() };
        let plan = match rng.below(4) {
            0 => 0,
            1 => rng.range(1, 64),
            _ => rng.range(1, 20_000),
        };
        self.peers.push(Peer {
            side,
            addr,
            framed,
            echo,
            hello,
            hello_sent: false,
            got_hello: false,
            high,
            chunk,
            in_key,
            out_key,
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
