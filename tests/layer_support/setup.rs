//! Setup the layer tests share: layered clients, a proxy that splits segments, a frame
//! echo checked at both ends, and the teardown that checks every connection closed once.

use crate::common::proxy::{FaultProxy, Mode};
use crate::common::*;
use ringmill::layer::Layer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A client to `addr` with `layer` (more can be added), recording into `rec`; not started.
pub fn layered_client(
    addr: SocketAddr,
    config: TcpClientConfig,
    rec: &Arc<Recorder>,
    layer: impl Layer,
) -> TcpClient<Recording> {
    TcpClient::connect(addr, config, Recording::new(rec))
        .expect("TcpClient::connect")
        .with_layer(layer)
        .expect("with_layer")
}

/// A proxy to `target` that forwards in pieces of 1 to `max` bytes.
pub fn split_proxy(target: SocketAddr, max: usize) -> FaultProxy {
    let proxy = FaultProxy::start(target);
    proxy.set_mode(Mode::Split { min: 1, max });
    proxy
}

/// The `on_data` sizes `id` saw, in order.
pub fn data_sizes(rec: &Recorder, id: ConnectionId) -> Vec<usize> {
    rec.trace(id)
        .events
        .iter()
        .filter_map(|e| match e {
            Ev::Data(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// Sends `frames` through `client` to a framed echo server, the first `held` of them
/// before `start` (so they wait for the layers' handshakes), and checks that each frame
/// arrived whole and in order at the server (`srec`) and back at the client (`crec`).
/// Returns the client's connection and the server's.
pub fn echo_frames_around_start(
    event_loop: &EventLoop,
    client: &mut TcpClient<Recording>,
    frames: &[Vec<u8>],
    held: usize,
    crec: &Recorder,
    srec: &Recorder,
) -> (ConnectionId, ConnectionId) {
    for f in &frames[..held] {
        client.send(f).expect("held before start");
    }
    client.start(event_loop).expect("TcpClient::start");
    for f in &frames[held..] {
        client.send(f).expect("send within the watermark");
    }
    let id = crec.wait_conn(0, WAIT);
    let total: usize = frames.iter().map(Vec::len).sum();
    crec.wait_bytes(id, total, Duration::from_secs(60));
    let sizes: Vec<usize> = frames.iter().map(Vec::len).collect();
    assert_eq!(data_sizes(crec, id), sizes, "client got whole frames");
    assert_bytes_eq(&crec.received(id), &frames.concat(), "echoed frames");
    let sid = srec.wait_conn(0, WAIT);
    assert_eq!(data_sizes(srec, sid), sizes, "server got whole frames");
    (id, sid)
}

/// Disconnects `client` and waits until its connection `id` and the server's `sid` have
/// closed; each recorder saw every connection close exactly once.
pub fn disconnect_both_ends(
    client: &TcpClient<Recording>,
    crec: &Recorder,
    id: ConnectionId,
    srec: &Recorder,
    sid: ConnectionId,
) {
    client.disconnect().expect("disconnect");
    crec.wait_closed(id, WAIT);
    srec.wait_closed(sid, WAIT);
    crec.assert_all_closed_once();
    srec.assert_all_closed_once();
}

/// Stops the loop (joining its threads), so no callback is still on its way.
pub fn settle(event_loop: EventLoop) {
    event_loop.stop();
    drop(event_loop);
}
