//! Layer conformance, on every backend: a layer's handshake gates `on_connect`; frames
//! sent before it are held whole and encoded after; bytes are transformed both ways
//! through split segments; a layer error or a peer leaving during the handshake is
//! reported and closes the connection (no `on_connect`, no `on_disconnect`); a client's
//! connect timeout and a server's idle timeout cover the handshake; the framing codecs
//! hand `on_data` whole frames, and an over-size frame closes the connection after
//! everything before it was delivered and answered.

mod common;
mod layer_support;

use common::*;
use layer_support::*;
use ringmill::errors::ConfigError;
use ringmill::layer::{FrameTooLarge, Layer, LengthPrefixed, LineDelimited};
use std::io::{self, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Each side sends a one-byte key first, then XORs what it sends with its own key and what
/// it receives with the peer's (mill-net's test layer, unchanged but for the crate name).
struct XorLayer {
    key: u8,
    peer_key: Option<u8>,
}

impl XorLayer {
    fn new(key: u8) -> Self {
        Self {
            key,
            peer_key: None,
        }
    }
}

impl Layer for XorLayer {
    fn start(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        out.push(self.key);
        Ok(())
    }

    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, _out: &mut Vec<u8>) -> io::Result<()> {
        let mut input = input;
        let key = match self.peer_key {
            Some(key) => key,
            None => {
                let key = input[0];
                self.peer_key = Some(key);
                input = &input[1..];
                key
            }
        };
        up.extend(input.iter().map(|b| b ^ key));
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.extend(frame.iter().map(|b| b ^ self.key));
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.peer_key.is_some()
    }
}

/// A handshake of two round trips: sends `A`, waits for `B`, sends `C`, waits for `D`;
/// then passes bytes through.
#[derive(Default)]
struct TwoRounds {
    step: u8,
}

impl Layer for TwoRounds {
    fn start(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        out.push(b'A');
        Ok(())
    }

    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        let mut input = input;
        while self.step < 2 {
            let Some((&b, rest)) = input.split_first() else {
                return Ok(());
            };
            input = rest;
            match (self.step, b) {
                (0, b'B') => out.push(b'C'),
                (1, b'D') => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected handshake byte",
                    ))
                }
            }
            self.step += 1;
        }
        up.extend_from_slice(input);
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(frame);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.step == 2
    }
}

/// An echo server whose connections each get the layers `make` builds.
fn layered_server(
    event_loop: &EventLoop,
    config: TcpServerConfig,
    handler: Recording,
    make: impl Fn() -> Box<dyn Layer> + Send + Sync + 'static,
) -> TcpServer<Recording> {
    let server = TcpServer::new(config, handler)
        .expect("TcpServer::new")
        .with_layer(make);
    server.start(event_loop).expect("TcpServer::start");
    server
}

fn xor_echo_server(event_loop: &EventLoop, rec: &Arc<Recorder>) -> TcpServer<Recording> {
    layered_server(
        event_loop,
        server_config().high_watermark(64 << 20).build(),
        Recording::echo(rec),
        || Box::new(XorLayer::new(0x5a)),
    )
}

/// A plain listener on 127.0.0.1, for the test to play the peer, and a client to it with
/// `layer`, recording into `rec`; not started.
fn client_to_listener(
    config: TcpClientConfig,
    rec: &Arc<Recorder>,
    layer: impl Layer,
) -> (TcpListener, TcpClient<Recording>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    (listener, layered_client(addr, config, rec, layer))
}

/// Closes the raw peer `raw` of the server's connection `sid` and waits until that is
/// closed; `srec` saw every connection close exactly once.
fn hang_up(raw: std::net::TcpStream, srec: &Recorder, sid: ConnectionId) {
    drop(raw);
    srec.wait_closed(sid, WAIT);
    srec.assert_all_closed_once();
}

/// `frames` each with a big-endian `u32` length in front.
fn prefixed(frames: &[&[u8]]) -> Vec<u8> {
    let mut wire = Vec::new();
    for f in frames {
        wire.extend_from_slice(&(f.len() as u32).to_be_bytes());
        wire.extend_from_slice(f);
    }
    wire
}

/// Writes `bytes` one at a time (each its own segment, with `TCP_NODELAY`).
fn write_bytewise(stream: &mut std::net::TcpStream, bytes: &[u8]) {
    for b in bytes {
        stream.write_all(std::slice::from_ref(b)).expect("write");
    }
}

backend_matrix! {
    /// 256 KiB through a proxy that forwards in 1-7 byte pieces, XOR-layered at both ends;
    /// the first 1000 bytes sent before `start` are held until both keys are known. Every
    /// byte comes back in order and each side sees one connection.
    fn xor_layer_round_trip_through_split_segments(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = xor_echo_server(&event_loop, &srec);
        let proxy = split_proxy(addr_of(&server), 7);

        let crec = Recorder::shared();
        let config = TcpClientConfig {
            high_watermark: 64 << 20,
            ..TcpClientConfig::default()
        };
        let mut client = layered_client(proxy.addr(), config, &crec, XorLayer::new(0xa5));
        let data = pattern(7, 256 * 1024);
        client.send(&data[..1000]).expect("held before start");
        client.start(&event_loop).unwrap();
        for chunk in data[1000..].chunks(16 * 1024) {
            client.send(chunk).expect("send within the watermark");
        }
        let id = crec.wait_conn(0, WAIT);
        crec.wait_bytes(id, data.len(), Duration::from_secs(60));
        assert_bytes_eq(&crec.received(id), &data, "echo through the layers");
        let sid = srec.wait_conn(0, WAIT);
        assert_bytes_eq(&srec.received(sid), &data, "plaintext at the server");
        assert_eq!(crec.connects(), 1);
        assert_eq!(srec.connects(), 1);

        disconnect_both_ends(&client, &crec, id, &srec, sid);
        assert!(crec.errors().is_empty(), "{:?}", crec.errors());
        drop(proxy);
        settle(event_loop);
    }

    /// A raw peer: the server's layer speaks first (its key), `on_connect` waits for the
    /// peer's key, then bytes are transformed both ways.
    fn handshake_gates_on_connect_and_transforms_bytes(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = xor_echo_server(&event_loop, &srec);
        let mut raw = connect(addr_of(&server));
        assert_eq!(read_exact_within(&mut raw, 1, WAIT), [0x5a], "the layer started");
        // The server cannot be ready: it has not seen our key.
        assert_eq!(srec.connects(), 0, "on_connect before the handshake finished");
        assert_eq!(server.context().connection_count(), 1);

        raw.write_all(&[0x11]).unwrap();
        raw.write_all(&[b'h' ^ 0x11, b'i' ^ 0x11]).unwrap();
        let reply = read_exact_within(&mut raw, 2, WAIT);
        assert_eq!(reply, [b'h' ^ 0x5a, b'i' ^ 0x5a]);
        let sid = srec.wait_conn(0, WAIT);
        assert_eq!(srec.received(sid), b"hi");
        assert_eq!(srec.trace(sid).events[0], Ev::Connect);
        hang_up(raw, &srec, sid);
        settle(event_loop);
    }

    /// A handshake that needs several reads (each answer waits for the one before): the
    /// connection keeps reading until it is done, then `on_connect` and data follow; a
    /// wrong handshake byte is an `Io(InvalidData)` error with no `on_connect`.
    fn handshake_over_several_round_trips(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = layered_server(
            &event_loop,
            server_config().build(),
            Recording::echo(&srec),
            || Box::new(TwoRounds::default()),
        );
        let mut raw = connect(addr_of(&server));
        assert_eq!(read_exact_within(&mut raw, 1, WAIT), b"A");
        raw.write_all(b"B").unwrap();
        assert_eq!(read_exact_within(&mut raw, 1, WAIT), b"C");
        assert_eq!(srec.connects(), 0, "on_connect before the last round");
        raw.write_all(b"D").unwrap();
        raw.write_all(b"ping").unwrap();
        assert_eq!(read_exact_within(&mut raw, 4, WAIT), b"ping");
        let sid = srec.wait_conn(0, WAIT);
        drop(raw);
        srec.wait_closed(sid, WAIT);

        let mut bad = connect(addr_of(&server));
        assert_eq!(read_exact_within(&mut bad, 1, WAIT), b"A");
        bad.write_all(b"B").unwrap();
        assert_eq!(read_exact_within(&mut bad, 1, WAIT), b"C");
        bad.write_all(b"X").unwrap();
        assert!(read_to_eof(&mut bad, WAIT).is_empty());
        let e = srec.wait_error("Io(InvalidData)", WAIT);
        assert!(e.conn.is_some() && e.conn != Some(sid));
        assert_eq!(srec.connects(), 1);
        srec.assert_all_closed_once();
        settle(event_loop);
    }

    /// A layered client is connected (`is_connected`) only once its handshake is done,
    /// not when TCP is.
    fn client_is_connected_only_after_the_handshake(backend: Backend) {
        let event_loop = event_loop(backend);
        let crec = Recorder::shared();
        let (listener, mut client) =
            client_to_listener(TcpClientConfig::default(), &crec, XorLayer::new(0x21));
        client.start(&event_loop).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        // The key is written once TCP is up on the client's loop.
        assert_eq!(read_exact_within(&mut peer, 1, WAIT), [0x21]);
        assert!(!client.is_connected(), "connected before the handshake finished");
        peer.write_all(&[0x42]).unwrap();
        let id = crec.wait_conn(0, WAIT);
        assert!(client.is_connected());
        client.send(b"x").unwrap();
        assert_eq!(read_exact_within(&mut peer, 1, WAIT), [b'x' ^ 0x21]);
        drop(peer);
        crec.wait_closed(id, WAIT);
        assert!(!client.is_connected());
        crec.assert_all_closed_once();
        settle(event_loop);
    }

    /// Layers are added before `start` and the first send, or not at all.
    fn with_layer_after_a_send_or_start_is_refused(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = xor_echo_server(&event_loop, &srec);
        let addr = addr_of(&server);
        let refused = |result: Result<TcpClient<Silent>>| match result {
            Ok(_) => panic!("a layer was added too late"),
            Err(e) => assert!(
                matches!(
                    network_error(e.as_ref()),
                    NetworkError::Configuration(ConfigError::TooLate("with_layer"))
                ),
                "unexpected error: {e}"
            ),
        };

        let client = TcpClient::connect(addr, TcpClientConfig::default(), Silent)
            .unwrap()
            .with_layer(XorLayer::new(1))
            .unwrap();
        client.send(b"queued before start").unwrap();
        refused(client.with_layer(XorLayer::new(2)));

        let mut client = TcpClient::connect(addr, TcpClientConfig::default(), Silent).unwrap();
        client.start(&event_loop).unwrap();
        refused(client.with_layer(XorLayer::new(3)));

        let two = TcpClient::connect(addr, TcpClientConfig::default(), Silent)
            .unwrap()
            .with_layer(XorLayer::new(4))
            .unwrap()
            .with_layer(XorLayer::new(5));
        assert!(two.is_ok(), "two layers before start and send were refused");
        settle(event_loop);
    }

    /// The peer leaving during the handshake is an `Io` error on both sides (as mill-net
    /// reports it), with no `on_connect` and so no `on_disconnect`; the connection is
    /// cleaned up.
    fn peer_close_during_the_handshake_is_reported(backend: Backend) {
        let event_loop = event_loop(backend);

        // Client side: the peer accepts and closes before sending its key.
        let crec = Recorder::shared();
        let (listener, mut client) =
            client_to_listener(TcpClientConfig::default(), &crec, XorLayer::new(0x33));
        client.start(&event_loop).unwrap();
        drop(listener.accept().unwrap());
        let e = crec.wait_error("Io(", WAIT);
        assert_eq!(e.conn, Some(client.id()));
        assert!(
            ["UnexpectedEof", "ConnectionReset", "ConnectionAborted", "BrokenPipe"]
                .iter()
                .any(|k| e.kind.contains(k)),
            "client: {e:?}"
        );
        poll_until(WAIT, "the client connection refusing sends", || {
            matches!(client.send(b"x"), Err(SendError::Closed))
        });
        assert_eq!(crec.connects(), 0);
        assert_eq!(crec.disconnects(), 0);

        // Server side: a raw peer connects and closes before sending its key.
        let srec = Recorder::shared();
        let server = xor_echo_server(&event_loop, &srec);
        let mut raw = connect(addr_of(&server));
        assert_eq!(read_exact_within(&mut raw, 1, WAIT), [0x5a]);
        drop(raw);
        let e = srec.wait_error("Io(UnexpectedEof)", WAIT);
        assert!(e.conn.is_some());
        assert!(e.message.contains("handshake"), "{e:?}");
        poll_until(WAIT, "the server connection to go", || {
            server.connection_count() == 0
        });
        assert_eq!(srec.connects(), 0);
        assert_eq!(srec.disconnects(), 0);
        settle(event_loop);
    }

    /// A client's connect timeout covers its layers' handshakes: a peer that accepts and
    /// never answers gets `Connect(TimedOut)`, with no `on_connect`.
    fn connect_timeout_covers_the_layer_handshake(backend: Backend) {
        let event_loop = event_loop(backend);
        let crec = Recorder::shared();
        let config = TcpClientConfig {
            connect_timeout: Duration::from_millis(300),
            ..TcpClientConfig::default()
        };
        // The kernel completes the TCP handshake from the backlog; nobody ever answers.
        let (listener, mut client) = client_to_listener(config, &crec, XorLayer::new(1));
        client.send(b"never sent").unwrap();
        client.start(&event_loop).unwrap();
        let e = crec.wait_error("Connect(TimedOut)", WAIT);
        assert_eq!(e.conn, Some(client.id()));
        assert!(e.message.contains("handshake"), "{e:?}");
        // The peer saw the layer's key, and nothing of the held frame.
        let (mut peer, _) = listener.accept().unwrap();
        let got = read_to_eof(&mut peer, WAIT);
        assert_eq!(got, [1], "only the handshake was written");
        assert_eq!(crec.connects(), 0);
        assert_eq!(crec.disconnects(), 0);
        settle(event_loop);
    }

    /// A server's idle timeout covers the handshake: a peer that never finishes it is
    /// closed, with `IdleTimeout` reported and no `on_connect`.
    fn idle_timeout_covers_the_layer_handshake(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = layered_server(
            &event_loop,
            server_config().idle_timeout(Duration::from_millis(200)).build(),
            Recording::echo(&srec),
            || Box::new(XorLayer::new(9)),
        );
        let mut raw = connect(addr_of(&server));
        assert_eq!(read_to_eof(&mut raw, WAIT), [9], "the key, then the close");
        srec.wait_error("IdleTimeout", WAIT);
        assert_eq!(srec.connects(), 0);
        assert_eq!(srec.disconnects(), 0);
        settle(event_loop);
    }

    /// A length-prefixed server gets each frame whole in one `on_data`, however the bytes
    /// were split (here: one byte per segment), and its replies are framed.
    fn length_prefixed_frames_arrive_whole(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = layered_server(
            &event_loop,
            // Chunks of 16 bytes: frames are still delivered whole above that.
            server_config().buffer_size(16).build(),
            Recording::echo(&srec),
            || Box::new(LengthPrefixed::new(1024)),
        );
        let big = pattern(3, 1000);
        let frames: [&[u8]; 4] = [b"hello", b"", &big, b"z"];
        let mut raw = connect(addr_of(&server));
        write_bytewise(&mut raw, &prefixed(&frames));
        // The empty frame reaches on_data but echoing it sends nothing.
        let want = prefixed(&[b"hello", &big, b"z"]);
        let got = read_exact_within(&mut raw, want.len(), WAIT);
        assert_bytes_eq(&got, &want, "framed echo");
        let sid = srec.wait_conn(0, WAIT);
        assert_eq!(data_sizes(&srec, sid), [5, 0, 1000, 1]);
        hang_up(raw, &srec, sid);
        settle(event_loop);
    }

    /// An over-size frame: the frames before it are delivered and answered, then the
    /// connection closes with `Io(InvalidData)` carrying `FrameTooLarge`.
    fn length_prefixed_oversize_frame_closes_after_what_came_before(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = layered_server(
            &event_loop,
            server_config().build(),
            Recording::echo(&srec).on_error(|_, _, e| {
                if let Some(e) = e.io_error() {
                    let inner = e.get_ref().and_then(|e| e.downcast_ref::<FrameTooLarge>());
                    assert_eq!(inner, Some(&FrameTooLarge { len: 17, max: 16 }));
                }
            }),
            || Box::new(LengthPrefixed::new(16)),
        );
        let mut raw = connect(addr_of(&server));
        let mut wire = prefixed(&[b"a", b"bb"]);
        wire.extend_from_slice(&prefixed(&[&[b'x'; 17], b"never"]));
        raw.write_all(&wire).unwrap();
        let got = read_to_eof(&mut raw, WAIT);
        assert_eq!(got, prefixed(&[b"a", b"bb"]), "answers to the good frames, then EOF");
        let e = srec.wait_error("Io(InvalidData)", WAIT);
        assert_eq!(e.message, "I/O error: frame of 17 bytes exceeds the 16-byte cap");
        let sid = srec.wait_conn(0, WAIT);
        srec.wait_closed(sid, WAIT);
        assert_eq!(data_sizes(&srec, sid), [1, 2]);
        srec.assert_all_closed_once();
        settle(event_loop);
    }

    /// A line-delimited server: lines arrive whole (CRLF or LF, across segments), replies
    /// get their newline, and a line over the cap closes the connection after the lines
    /// before it were answered.
    fn line_delimited_lines_and_cap(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = layered_server(
            &event_loop,
            server_config().build(),
            Recording::echo(&srec),
            || Box::new(LineDelimited::new(8)),
        );
        let mut raw = connect(addr_of(&server));
        write_bytewise(&mut raw, b"hello\r\nwor");
        raw.write_all(b"ld\n\n").unwrap();
        let got = read_exact_within(&mut raw, 12, WAIT);
        assert_eq!(got, b"hello\nworld\n");
        raw.write_all(b"12345678\n123456789\nnever\n").unwrap();
        let got = read_to_eof(&mut raw, WAIT);
        assert_eq!(got, b"12345678\n", "the line at the cap is answered, then EOF");
        srec.wait_error("Io(InvalidData)", WAIT);
        let sid = srec.wait_conn(0, WAIT);
        srec.wait_closed(sid, WAIT);
        assert_eq!(data_sizes(&srec, sid), [5, 5, 0, 8]);
        srec.assert_all_closed_once();
        settle(event_loop);
    }

    /// Codecs at both ends, through 1-13 byte pieces: frames of many sizes (some sent
    /// before `start`) arrive whole and in order on both sides.
    fn length_prefixed_client_and_server_through_split_segments(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = layered_server(
            &event_loop,
            server_config().high_watermark(8 << 20).build(),
            Recording::echo(&srec),
            || Box::new(LengthPrefixed::new(1 << 20)),
        );
        let proxy = split_proxy(addr_of(&server), 13);
        let crec = Recorder::shared();
        let config = TcpClientConfig {
            high_watermark: 8 << 20,
            ..TcpClientConfig::default()
        };
        let mut client =
            layered_client(proxy.addr(), config, &crec, LengthPrefixed::new(1 << 20));
        let mut rng = Rng::new(11);
        let frames: Vec<Vec<u8>> = (0..200).map(|_| {
            let len = rng.range(1, 3000);
            rng.bytes(len)
        }).collect();
        let (id, sid) =
            echo_frames_around_start(&event_loop, &mut client, &frames, 20, &crec, &srec);
        disconnect_both_ends(&client, &crec, id, &srec, sid);
        drop(proxy);
        settle(event_loop);
    }

    /// Pausing reads inside `on_data` stops delivery after that frame, even with more
    /// frames decoded from the same read; resuming delivers the rest, whole and in order.
    fn pause_stops_frame_delivery_until_resumed(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let paused = Arc::new(Shared::new(false));
        let flag = Arc::clone(&paused);
        let server = layered_server(
            &event_loop,
            server_config().build(),
            Recording::new(&srec).on_data(move |ctx, conn, frame| {
                if frame == b"first" {
                    ctx.sender(conn).expect("open").pause_reads();
                    flag.update(|p| *p = true);
                }
                Ok(())
            }),
            || Box::new(LineDelimited::new(64)),
        );
        let mut raw = connect(addr_of(&server));
        raw.write_all(b"first\nsecond\nthird\n").unwrap();
        let sid = srec.wait_conn(0, WAIT);
        paused.wait_until(WAIT, "the pause in on_data", |p| *p);
        // The pause took effect inside on_data, so nothing can have followed it.
        assert_eq!(data_sizes(&srec, sid), [5], "delivery went on after the pause");
        server.context().sender(sid).expect("open").resume_reads();
        srec.wait_bytes(sid, 16, WAIT);
        assert_eq!(data_sizes(&srec, sid), [5, 6, 5]);
        assert_eq!(srec.received(sid), b"firstsecondthird");
        hang_up(raw, &srec, sid);
        settle(event_loop);
    }

    /// A frame the layer cannot encode (a newline inside a line) closes the connection
    /// after the frames before it were written, and is reported as `Io(InvalidInput)`.
    fn encode_error_closes_after_the_frames_before_it(backend: Backend) {
        let event_loop = event_loop(backend);
        let crec = Recorder::shared();
        let (listener, mut client) =
            client_to_listener(TcpClientConfig::default(), &crec, LineDelimited::new(64));
        client.send(b"ok").unwrap();
        client.send(b"a\nb").unwrap();
        client.send(b"never").unwrap();
        client.start(&event_loop).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(read_to_eof(&mut peer, WAIT), b"ok\n");
        let e = crec.wait_error("Io(InvalidInput)", WAIT);
        assert_eq!(e.conn, Some(client.id()));
        crec.wait_closed(client.id(), WAIT);
        crec.assert_all_closed_once();
        settle(event_loop);
    }

    /// A layer factory that panics refuses that connection (reported as a server error);
    /// the server goes on.
    fn panicking_layer_factory_refuses_the_connection(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let server = layered_server(
            &event_loop,
            server_config().build(),
            Recording::echo(&srec),
            move || {
                if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    panic!("layer factory failed on purpose");
                }
                Box::new(LineDelimited::new(64))
            },
        );
        let mut first = connect(addr_of(&server));
        let _ = try_read_to_eof(&mut first, WAIT);
        let e = srec.wait_error("HandlerPanic", WAIT);
        assert_eq!(e.conn, None);
        assert!(e.message.contains("on purpose"), "{e:?}");

        let mut second = connect(addr_of(&server));
        second.write_all(b"still here\n").unwrap();
        assert_eq!(read_exact_within(&mut second, 11, WAIT), b"still here\n");
        assert_eq!(srec.connects(), 1);
        settle(event_loop);
    }
}
