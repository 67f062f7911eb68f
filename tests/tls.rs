//! TLS layers (the `tls` feature) against real peers, on every backend: rustls's own
//! blocking `StreamOwned` as client of a ringmill `TlsServer` and as server for a ringmill
//! `TlsClient`; both ringmill ends with length-prefixed frames on top through split
//! segments; a certificate the client does not trust fails the handshake on both sides; a
//! peer that ends the TCP stream without `close_notify` is reported as a possible
//! truncation. These use the certificates committed in `tests/data/tls` and need no tool.
//!
//! Against `openssl s_client` and `openssl s_server` (`*_openssl_*`), with certificates
//! made fresh by the openssl CLI: `ci/layer-tools.sh` installs openssl; without it those
//! tests print a skip.
//!
//! Every configuration is built with an explicit crypto provider
//! (`builder_with_provider`), as an application must when another crate has enabled a
//! second rustls provider.
#![cfg(feature = "tls")]

mod common;
mod layer_support;

use common::*;
use layer_support::*;
use ringmill::layer::tls::{rustls, TlsClient, TlsServer};
use ringmill::layer::LengthPrefixed;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The crypto provider ringmill's rustls is built with.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_server_config(certs: &Certs) -> Arc<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(certs.server_cert())
        .expect("read the server certificate")
        .collect::<std::result::Result<Vec<_>, _>>()
        .expect("parse the server certificate");
    let key = PrivateKeyDer::from_pem_file(certs.server_key()).expect("read the server key");
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config"),
    )
}

/// A client configuration trusting `ca` (PEM) only.
fn tls_client_config(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("read the CA"))
        .expect("add the CA");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a valid name")
}

/// A TLS echo server; with `framed`, length-prefixed frames above TLS.
fn tls_server(
    event_loop: &EventLoop,
    certs: &Certs,
    handler: Recording,
    framed: bool,
) -> TcpServer<Recording> {
    let config = tls_server_config(certs);
    let mut server = TcpServer::new(server_config().high_watermark(8 << 20).build(), handler)
        .expect("TcpServer::new")
        .with_layer(move || Box::new(TlsServer::new(Arc::clone(&config)).expect("TlsServer")));
    if framed {
        server = server.with_layer(|| Box::new(LengthPrefixed::new(1 << 20)));
    }
    server.start(event_loop).expect("start");
    server
}

/// A blocking rustls client on a plain socket: says `hello`, reads the echo, then ends the
/// connection with `close_notify` first (`clean`) or with a bare TCP end of stream.
fn hello_then_end(addr: SocketAddr, certs: &Certs, clean: bool) {
    let conn = rustls::ClientConnection::new(tls_client_config(&certs.ca()), localhost())
        .expect("client connection");
    let sock = connect(addr);
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"hello").expect("write through TLS");
    let mut echo = [0u8; 5];
    tls.read_exact(&mut echo)
        .expect("read the echo through TLS");
    assert_eq!(&echo, b"hello");
    if clean {
        tls.conn.send_close_notify();
        tls.flush().expect("send close_notify");
    }
    shutdown_write(&tls.sock);
    // The server answers our end of stream with its own and closes.
    let mut rest = Vec::new();
    let _ = tls.sock.read_to_end(&mut rest);
}

/// Text lines of about `len` bytes in total.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(format!("line {i} of the payload, some text to echo\n").as_bytes());
        i += 1;
    }
    out
}

/// A blocking rustls server on its own thread, for one connection: reads lines and
/// answers each reversed (as `openssl s_server -rev` does) until the client's end of
/// stream. Reports over the channel whether that end came after `close_notify`.
fn rustls_rev_server(
    certs: &Certs,
) -> (SocketAddr, std::sync::mpsc::Receiver<std::io::Result<()>>) {
    let config = tls_server_config(certs);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = (|| -> std::io::Result<()> {
            let (sock, _) = listener.accept()?;
            sock.set_read_timeout(Some(WAIT))?;
            let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                // Ok(0) only after the client's close_notify; a bare end of stream is
                // an UnexpectedEof error from rustls.
                if tls.read(&mut byte)? == 0 {
                    return Ok(());
                }
                if byte[0] == b'\n' {
                    line.reverse();
                    line.push(b'\n');
                    tls.write_all(&line)?;
                    tls.flush()?;
                    line.clear();
                } else {
                    line.push(byte[0]);
                }
            }
        })();
        let _ = done.send(outcome);
    });
    (addr, result)
}

backend_matrix! {
    /// A rustls client (`StreamOwned` over a blocking socket), verifying the server's chain
    /// against the test CA, sends 64 KiB through a ringmill TLS echo server and gets it
    /// back; the server's graceful close sends close_notify, which the client reads as a
    /// clean end (rustls reports a bare end of stream as an error).
    fn tls_server_to_a_rustls_client(backend: Backend) {
        let certs = Certs::committed();
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = tls_server(&event_loop, &certs, Recording::echo(&srec), false);
        let conn = rustls::ClientConnection::new(tls_client_config(&certs.ca()), localhost())
            .expect("client connection");
        let sock = connect(addr_of(&server));
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let payload = text(64 * 1024);
        tls.write_all(&payload).expect("write through TLS");
        tls.flush().unwrap();
        let mut echo = vec![0u8; payload.len()];
        tls.read_exact(&mut echo).expect("read the echo through TLS");
        assert_bytes_eq(&echo, &payload, "echo seen by the rustls client");
        let sid = srec.wait_conn(0, WAIT);
        assert_bytes_eq(&srec.received(sid), &payload, "plaintext at the server");

        server.context().close_connection(sid).unwrap();
        let mut rest = Vec::new();
        let end = tls.read_to_end(&mut rest);
        assert!(end.is_ok(), "{backend}: the server's close was not a clean TLS end: {end:?}");
        assert!(rest.is_empty(), "{rest:?}");
        srec.wait_closed(sid, WAIT);
        srec.assert_all_closed_once();
        assert!(srec.errors().is_empty(), "{:?}", srec.errors());
        settle(event_loop);
    }

    /// A ringmill TLS client, verifying a rustls server's certificate, sends lines (one
    /// held from before the handshake) and gets them back reversed; its disconnect sends
    /// close_notify, which the server reads as a clean end.
    fn tls_client_to_a_rustls_server(backend: Backend) {
        let certs = Certs::committed();
        let (addr, server_done) = rustls_rev_server(&certs);
        let event_loop = event_loop(backend);
        let crec = Recorder::shared();
        let layer = TlsClient::new(tls_client_config(&certs.ca()), localhost()).unwrap();
        let mut client = layered_client(addr, TcpClientConfig::default(), &crec, layer);
        client.send(b"hello\n").expect("held until the handshake is done");
        client.start(&event_loop).unwrap();
        let id = crec.wait_conn(0, WAIT);
        client.send(b"world\n").unwrap();
        crec.wait_bytes(id, 12, WAIT);
        assert_eq!(crec.received(id), b"olleh\ndlrow\n");

        client.disconnect().unwrap();
        crec.wait_closed(id, WAIT);
        let outcome = server_done.recv_timeout(WAIT).expect("the rustls server to finish");
        assert!(outcome.is_ok(), "{backend}: the server saw no clean TLS end: {outcome:?}");
        crec.assert_all_closed_once();
        assert!(crec.errors().is_empty(), "{:?}", crec.errors());
        settle(event_loop);
    }

    /// `openssl s_client`, verifying the server's chain against the test CA, sends 64 KiB
    /// through a ringmill TLS echo server and gets it back; the server's graceful close
    /// sends close_notify (seen in s_client's message log), and s_client exits cleanly.
    fn tls_server_to_openssl_s_client(backend: Backend) {
        let Some(certs) = Certs::generate() else { return };
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = tls_server(&event_loop, &certs, Recording::echo(&srec), false);
        let port = addr_of(&server).port().to_string();
        let ca = certs.ca();
        let msgs = ca.with_file_name("s_client.msg");
        let mut child = Child::spawn(
            Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                .args(["-servername", "localhost", "-verify_return_error", "-quiet"])
                // The protocol messages, to see the server's close_notify.
                .args(["-msg", "-msgfile"])
                .arg(&msgs)
                .arg("-CAfile")
                .arg(&ca)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            "openssl s_client",
        );
        let out = Output::collect(child.inner().stdout.take().expect("stdout"));
        let err = Output::collect(child.inner().stderr.take().expect("stderr"));
        let payload = text(64 * 1024);
        let mut stdin = child.inner().stdin.take().expect("stdin");
        stdin.write_all(&payload).expect("write to s_client");
        stdin.flush().unwrap();

        out.wait(WAIT, "the echo through s_client", |b| b.len() >= payload.len());
        assert_bytes_eq(&out.bytes(), &payload, "echo seen by s_client");
        let sid = srec.wait_conn(0, WAIT);
        assert_bytes_eq(&srec.received(sid), &payload, "plaintext at the server");

        server.context().close_connection(sid).unwrap();
        let status = child.wait_exit(WAIT);
        drop(stdin);
        let stderr = err.text();
        assert!(status.success(), "s_client failed ({status}): {stderr}");
        assert!(stderr.contains("verify return:1"), "{stderr}");
        assert!(!stderr.contains("verify error"), "{stderr}");
        let msgs = std::fs::read_to_string(&msgs).expect("s_client's message log");
        assert!(
            msgs.lines().any(|l| l.starts_with("<<<") && l.contains("close_notify")),
            "s_client got no close_notify from the server: {msgs}"
        );
        srec.wait_closed(sid, WAIT);
        srec.assert_all_closed_once();
        assert!(srec.errors().is_empty(), "{:?}", srec.errors());
        settle(event_loop);
    }

    /// A ringmill TLS client, verifying `openssl s_server`'s certificate, sends lines
    /// (one held from before the handshake) and gets them back reversed (`-rev`); its
    /// disconnect sends close_notify and s_server, done with its one connection, exits.
    fn tls_client_to_openssl_s_server(backend: Backend) {
        let Some(certs) = Certs::generate() else { return };
        let mut child = Child::spawn(
            Command::new("openssl")
                .args(["s_server", "-accept", "127.0.0.1:0", "-rev", "-naccept", "1"])
                .arg("-cert")
                .arg(certs.server_cert())
                .arg("-key")
                .arg(certs.server_key())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            "openssl s_server",
        );
        let out = Output::collect(child.inner().stdout.take().expect("stdout"));
        let err = Output::collect(child.inner().stderr.take().expect("stderr"));
        out.wait(WAIT, "s_server's ACCEPT line", |b| {
            String::from_utf8_lossy(b).lines().any(|l| l.starts_with("ACCEPT "))
        });
        let text = out.text();
        let addr: SocketAddr = text
            .lines()
            .find_map(|l| l.strip_prefix("ACCEPT "))
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in s_server's output: {text}"));

        let event_loop = event_loop(backend);
        let crec = Recorder::shared();
        let layer = TlsClient::new(tls_client_config(&certs.ca()), localhost()).unwrap();
        let mut client = layered_client(addr, TcpClientConfig::default(), &crec, layer);
        client.send(b"hello\n").expect("held until the handshake is done");
        client.start(&event_loop).unwrap();
        let id = crec.wait_conn(0, WAIT);
        client.send(b"world\n").unwrap();
        crec.wait_bytes(id, 12, WAIT);
        assert_eq!(crec.received(id), b"olleh\ndlrow\n");

        client.disconnect().unwrap();
        crec.wait_closed(id, WAIT);
        let status = child.wait_exit(WAIT);
        assert!(status.success(), "s_server failed ({status}): {}", err.text());
        crec.assert_all_closed_once();
        assert!(crec.errors().is_empty(), "{:?}", crec.errors());
        settle(event_loop);
    }

    /// ringmill at both ends, TLS with length-prefixed frames on top, through 1-50 byte
    /// pieces: frames up to 100 KB (several TLS records each) arrive whole both ways.
    fn tls_both_ends_with_frames_through_split_segments(backend: Backend) {
        let certs = Certs::committed();
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = tls_server(&event_loop, &certs, Recording::echo(&srec), true);
        let proxy = split_proxy(addr_of(&server), 50);

        let crec = Recorder::shared();
        let config = TcpClientConfig {
            high_watermark: 8 << 20,
            ..TcpClientConfig::default()
        };
        let tls = TlsClient::new(tls_client_config(&certs.ca()), localhost()).unwrap();
        let mut client = layered_client(proxy.addr(), config, &crec, tls)
            .with_layer(LengthPrefixed::new(1 << 20))
            .unwrap();
        let mut rng = Rng::new(5);
        let frames: Vec<Vec<u8>> = [1, 100, 16 * 1024, 16 * 1024 + 1, 100_000, 7]
            .iter()
            .map(|&n| rng.bytes(n))
            .collect();
        let (id, sid) =
            echo_frames_around_start(&event_loop, &mut client, &frames, 1, &crec, &srec);

        disconnect_both_ends(&client, &crec, id, &srec, sid);
        assert!(crec.errors().is_empty(), "{:?}", crec.errors());
        assert!(srec.errors().is_empty(), "{:?}", srec.errors());
        drop(proxy);
        settle(event_loop);
    }

    /// A client that trusts another CA: the handshake fails on both sides (a connect error
    /// for the client, an I/O error for the server), with no `on_connect` anywhere.
    fn untrusted_certificate_fails_the_handshake(backend: Backend) {
        let certs = Certs::committed();
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = tls_server(&event_loop, &certs, Recording::echo(&srec), false);
        let crec = Recorder::shared();
        let layer = TlsClient::new(tls_client_config(&certs.other_ca()), localhost()).unwrap();
        let mut client =
            layered_client(addr_of(&server), TcpClientConfig::default(), &crec, layer);
        client.send(b"never sent").unwrap();
        client.start(&event_loop).unwrap();
        let e = crec.wait_error("Connect(InvalidData)", WAIT);
        assert!(e.message.contains("certificate"), "{e:?}");
        let e = srec.wait_error("Io(", WAIT);
        assert!(e.conn.is_some(), "{e:?}");
        poll_until(WAIT, "the server connection to go", || server.connection_count() == 0);
        assert_eq!(crec.connects(), 0);
        assert_eq!(srec.connects(), 0);
        assert_eq!(srec.disconnects(), 0);
        settle(event_loop);
    }

    /// A peer that ends the TCP stream without `close_notify`: the server reports it as a
    /// possible truncation (`Io(UnexpectedEof)`) and closes; with `close_notify` first,
    /// nothing is reported.
    fn end_without_close_notify_is_reported(backend: Backend) {
        let certs = Certs::committed();
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = tls_server(&event_loop, &certs, Recording::echo(&rec), false);

        hello_then_end(addr_of(&server), &certs, true);
        rec.wait_disconnects(1, WAIT);
        let errors = rec.with(|r| r.errors.clone());
        assert!(errors.is_empty(), "{backend}: errors after a clean close: {errors:?}");

        hello_then_end(addr_of(&server), &certs, false);
        let e = rec.wait_error("Io(UnexpectedEof)", WAIT);
        assert!(e.message.contains("close_notify"), "{e:?}");
        rec.wait_disconnects(2, WAIT);
        rec.assert_all_closed_once();
        settle(event_loop);
    }
}

backend_matrix! {
    /// A peer that drips a ClientHello one byte every 100 ms (the record header announces
    /// 512 bytes, so rustls keeps waiting) is closed at the server's handshake deadline
    /// (1.5 s here), although each byte pushes the idle deadline (1 s) back; it is
    /// reported as `Io(TimedOut)` and never reaches the handler.
    fn slow_drip_client_hello_is_closed_at_the_handshake_deadline(backend: Backend) {
        let Some(certs) = Certs::generate() else { return };
        let handshake = std::time::Duration::from_millis(1500);
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let srec = Recorder::shared();
        let config = tls_server_config(&certs);
        let server_config = server_config()
            .idle_timeout(std::time::Duration::from_secs(1))
            .handshake_timeout(Some(handshake))
            .build();
        let server = TcpServer::new(server_config, Recording::echo(&srec))
            .expect("TcpServer::new")
            .with_layer(move || Box::new(TlsServer::new(Arc::clone(&config)).expect("TlsServer")));
        server.start(&event_loop).expect("start");
        let started = std::time::Instant::now();
        let mut sock = connect(addr_of(&server));
        let mut reader = sock.try_clone().expect("clone");
        reader.set_read_timeout(Some(WAIT)).expect("read timeout");
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let dripper = std::thread::spawn(move || {
            // A handshake record header (type 22, TLS 1.0 record version, 512 bytes), then
            // a ClientHello's first byte and length, then filler, one byte at a time.
            let mut bytes = vec![22, 3, 1, 2, 0, 1, 0, 1, 252];
            bytes.extend(std::iter::repeat(0u8).take(503));
            let mut sent = 0;
            for b in bytes {
                if sock.write_all(&[b]).is_err() {
                    break;
                }
                sent += 1;
                match stopped.recv_timeout(std::time::Duration::from_millis(100)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            sent
        });
        let err = srec.wait_error("Io(TimedOut)", WAIT);
        let closed_after = started.elapsed();
        assert!(err.message.contains("handshake"), "{}", err.message);
        assert!(closed_after >= handshake, "closed after {closed_after:?}");
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        let _ = stop.send(());
        let sent = dripper.join().expect("dripper");
        assert!(sent > 10, "the peer kept dripping ({sent} bytes)");
        assert_eq!(srec.connects(), 0, "the handler never heard of it");
        settle(event_loop);
    }
}
