//! Network benches of the facade, each on both backends (io_uring and mio), against a load
//! generator that is not ringmill (plain mio or std clients on the bench thread).
//!
//! ```text
//! cargo bench --bench echo                 # everything
//! cargo bench --bench echo -- pingpong     # one group
//! ```
//!
//! Every server runs on one loop thread. Throughput benches count one echoed message per
//! iteration (criterion shows messages/s); churn counts one connection; broadcast one message
//! delivered to all 1,000 connections.

mod common;

use common::{raise_nofile, Clients, Echo, Server, Sink, BACKENDS};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// One echo group: `conns` connections, `size`-byte messages, `depth` in flight each.
fn echo_group(c: &mut Criterion, name: &str, conns: usize, size: usize, depth: usize) {
    raise_nofile();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for (backend, label) in BACKENDS {
        let Some(server) = Server::start(backend, Echo) else {
            continue;
        };
        let mut clients = Clients::connect(server.addr, conns, true).expect("connect clients");
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| clients.echo(iters, size, depth))
        });
        drop(clients);
        drop(server);
    }
    group.finish();
}

fn pingpong(c: &mut Criterion) {
    echo_group(c, "pingpong_1conn_64B", 1, 64, 1);
}

fn echo(c: &mut Criterion) {
    echo_group(c, "echo_64conn_64B_depth1", 64, 64, 1);
    echo_group(c, "echo_64conn_4KiB_depth1", 64, 4096, 1);
    echo_group(c, "echo_64conn_64B_depth16", 64, 64, 16);
    echo_group(c, "echo_1000conn_64B_depth1", 1000, 64, 1);
}

/// Connect, exchange one byte, close with RST (SO_LINGER 0, so the client leaves no
/// TIME_WAIT socket behind and ephemeral ports do not run out).
fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn_connect_echo_close");
    group.throughput(Throughput::Elements(1));
    for (backend, label) in BACKENDS {
        let Some(server) = Server::start(backend, Echo) else {
            continue;
        };
        let addr = server.addr;
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut s = std::net::TcpStream::connect(addr).expect("connect");
                    s.set_nodelay(true).expect("nodelay");
                    s.write_all(b"x").expect("write");
                    let mut byte = [0u8; 1];
                    s.read_exact(&mut byte).expect("read echo");
                    socket2::SockRef::from(&s)
                        .set_linger(Some(Duration::ZERO))
                        .expect("linger");
                }
                start.elapsed()
            })
        });
        drop(server);
    }
    group.finish();
}

/// `ctx.broadcast` of one 64-byte message from the bench thread to 1,000 connections;
/// one iteration ends when every client has read it.
fn broadcast(c: &mut Criterion) {
    raise_nofile();
    let mut group = c.benchmark_group("broadcast_1000conn_64B");
    group.throughput(Throughput::Elements(1));
    let msg = [7u8; 64];
    for (backend, label) in BACKENDS {
        let Some(server) = Server::start(backend, Sink) else {
            continue;
        };
        let mut clients = Clients::connect(server.addr, 1000, false).expect("connect clients");
        let ctx = server.server.context();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ctx.connection_count() < clients.len() {
            assert!(
                Instant::now() < deadline,
                "broadcast: server saw {} of {} connections after 10 s",
                ctx.connection_count(),
                clients.len()
            );
            std::thread::yield_now();
        }
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    ctx.broadcast(&msg).expect("broadcast");
                    clients.receive_all(msg.len());
                }
                start.elapsed()
            })
        });
        drop(clients);
        drop(server);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = pingpong, echo, churn, broadcast
}
criterion_main!(benches);
