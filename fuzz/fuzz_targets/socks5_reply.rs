//! The SOCKS5 client fed any proxy replies, cut anywhere: no panic; the same verdict and
//! the same bytes after the handshake whatever the cuts; what it sends back is bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmill::layer::{Layer, Socks5};
use ringmill_fuzz::{feed, Input};
use std::net::SocketAddr;

fn layer(param: u8) -> Socks5 {
    let socks = match param % 3 {
        0 => Socks5::to_addr(SocketAddr::from(([192, 0, 2, 1], 443))),
        1 => Socks5::to_addr("[2001:db8::1]:443".parse().expect("address")),
        _ => Socks5::to_host("fuzz.invalid", 443),
    };
    if param & 0x80 != 0 {
        socks.with_credentials("user", "password")
    } else {
        socks
    }
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let mut whole_layer = layer(input.param);
    let mut hello = Vec::new();
    whole_layer.start(&mut hello).expect("start");
    let whole = feed(&mut whole_layer, &[input.data]);
    let mut cut_layer = layer(input.param);
    cut_layer.start(&mut Vec::new()).expect("start");
    let cut = feed(&mut cut_layer, &input.chunks());
    assert_eq!(whole, cut, "the cuts changed the outcome");
    assert_eq!(whole_layer.is_ready(), cut_layer.is_ready());
    // Method choice, authentication and connect request: a few hundred bytes at most.
    assert!(
        whole.out.len() <= 600,
        "{} bytes sent back",
        whole.out.len()
    );
});
