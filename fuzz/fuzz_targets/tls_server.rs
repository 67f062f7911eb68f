//! The TLS server layer fed garbage (and garbage that starts like a ClientHello), cut
//! anywhere: no panic; it fails, waits for more, or handshakes, but never passes bytes
//! up before its handshake is done.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmill::layer::tls::TlsServer;
use ringmill::layer::Layer;
use ringmill_fuzz::{feed, Input};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::{Arc, OnceLock};

fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let cert = CertificateDer::from(include_bytes!("../certs/cert.der").to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            include_bytes!("../certs/key.der").to_vec(),
        ));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("the fuzz certificate");
        Arc::new(config)
    }))
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let mut layer = TlsServer::new(config()).expect("server");
    let mut out = Vec::new();
    layer.start(&mut out).expect("start");
    let fed = feed(&mut layer, &input.chunks());
    if !layer.is_ready() {
        assert!(
            fed.pieces.is_empty(),
            "bytes passed up before the handshake"
        );
    }
});
