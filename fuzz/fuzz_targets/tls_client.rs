//! The TLS client layer, after its ClientHello, fed any "server" bytes cut anywhere: no
//! panic; with no trusted root it can never finish, so it passes nothing up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmill::layer::tls::TlsClient;
use ringmill::layer::Layer;
use ringmill_fuzz::{feed, Input};
use rustls::pki_types::ServerName;
use std::sync::{Arc, OnceLock};

fn config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }))
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let name = ServerName::try_from("fuzz.invalid").expect("name");
    let mut layer = TlsClient::new(config(), name).expect("client");
    let mut hello = Vec::new();
    layer.start(&mut hello).expect("start");
    assert!(!hello.is_empty(), "a ClientHello");
    let fed = feed(&mut layer, &input.chunks());
    assert!(
        !layer.is_ready(),
        "handshake finished without a trusted certificate"
    );
    assert!(
        fed.pieces.is_empty(),
        "bytes passed up before the handshake"
    );
});
