//! Half-close: a client sends its data, then shuts down its write side. The server echoes
//! everything it got (including what is still queued when the end of stream arrives) and
//! then closes; the client reads every echoed byte, then EOF.

mod common;

use common::proxy::{FaultProxy, Mode};
use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::thread;

/// Writes `data` and half-closes from a helper thread while this one reads to EOF; returns
/// what came back.
fn send_then_half_close(addr: SocketAddr, data: &[u8]) -> (Vec<u8>, SocketAddr) {
    let mut stream = connect(addr);
    let local = stream.local_addr().unwrap();
    let mut writer = stream.try_clone().unwrap();
    let out = data.to_vec();
    let w = thread::spawn(move || {
        writer.write_all(&out).unwrap();
        shutdown_write(&writer);
    });
    let got = read_to_eof(&mut stream, WAIT);
    w.join().unwrap();
    (got, local)
}

backend_matrix! {
    /// All of 512 KiB is written and the write side shut down before the client reads
    /// anything, so the end of stream reaches the server while echo bytes are still
    /// queued: they are all written before the close.
    fn queued_echo_flushed_before_close(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let mut stream = connect(addr_of(&server));
        let id = rec.wait_peer(stream.local_addr().unwrap(), WAIT);
        let data = pattern(1, 512 * 1024);
        stream.write_all(&data).unwrap();
        shutdown_write(&stream);
        let got = read_to_eof(&mut stream, WAIT);
        assert_bytes_eq(&got, &data, "echo after half-close");
        rec.wait_closed(id, WAIT);
        let trace = rec.trace(id);
        assert_bytes_eq(&trace.data, &data, "bytes the server received");
        assert!(trace.errors().is_empty(), "{:?}", trace.errors());
        assert_eq!(trace.events.last(), Some(&Ev::Disconnect));
        rec.assert_all_closed_once();
    }

    /// 8 MiB echoed while the client writes, then half-closes: every byte comes back,
    /// then EOF; the server closes exactly once.
    fn large_echo_then_eof(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = std::sync::Arc::new(Recorder::counting());
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let data = pattern(2, 8 * 1024 * 1024);
        let (got, local) = send_then_half_close(addr_of(&server), &data);
        assert_eq!(got.len(), data.len());
        assert_eq!(Fnv::of(&got), Fnv::of(&data), "echo differs");
        let id = rec.wait_peer(local, WAIT);
        rec.wait_closed(id, WAIT);
        assert_eq!(rec.trace(id).bytes, data.len());
        rec.assert_all_closed_once();
    }

    /// An empty half-close: no data, just the end of stream. The server closes, the
    /// client gets EOF at once, with nothing before it.
    fn half_close_without_data(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let (got, local) = send_then_half_close(addr_of(&server), b"");
        assert!(got.is_empty());
        let id = rec.wait_peer(local, WAIT);
        rec.wait_closed(id, WAIT);
        assert_eq!(rec.trace(id).events, vec![Ev::Connect, Ev::Disconnect]);
    }

    /// Half-close through the fault proxy with 1..7-byte pieces: the end of stream comes
    /// after the last piece, and the echo is intact.
    fn half_close_through_split_writes(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let proxy = FaultProxy::start(addr_of(&server));
        proxy.set_mode(Mode::Split { min: 1, max: 7 });
        let data = pattern(3, 10_000);
        let (got, _) = send_then_half_close(proxy.addr(), &data);
        assert_bytes_eq(&got, &data, "echo after half-close through split writes");
        rec.wait_disconnects(1, WAIT);
        let id = rec.connections()[0];
        assert_bytes_eq(&rec.received(id), &data, "bytes the server received");
        rec.assert_all_closed_once();
    }
}
