//! Fuzzes the request framing of the `http_hello` example (`examples/http_hello/request.rs`,
//! included by path): any bytes must
//! never panic, and must hold the module's promises: a request never claims more bytes than
//! it was given, nor none; `Partial` is only answered below `MAX_REQUEST` bytes (what a
//! connection buffers is bounded); and one byte short of a complete request is `Partial`, never
//! another request or an error (so framing does not depend on how the bytes were split).
//!
//! Needs `httparse` in the fuzz crate's dependencies.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../examples/http_hello/request.rs"]
#[allow(dead_code)]
mod request;

use request::{parse, Parse, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parse::Request(r) => {
            assert!(r.len > 0 && r.len <= data.len(), "len {} of {}", r.len, data.len());
            // Framing the request's own bytes gives the same request.
            match parse(&data[..r.len]) {
                Parse::Request(again) => assert_eq!(again, r),
                other => panic!("the request's own bytes framed as {other:?}"),
            }
            // One byte less is still waiting: never another request, never an error.
            let shorter = parse(&data[..r.len - 1]);
            assert_eq!(shorter, Parse::Partial, "one byte short of {r:?}");
        }
        Parse::Partial => {
            assert!(data.len() < MAX_REQUEST, "Partial for {} bytes", data.len());
        }
        Parse::Bad(status) => {
            assert!(
                matches!(status, 400 | 413 | 431 | 501 | 505),
                "unexpected status {status}"
            );
        }
    }
});
