//! Fuzzes the request framing of the `http_hello` example
//! (`examples/http_hello/request.rs`, included by path). Any bytes must never panic, and
//! must keep the module's promises: a request claims at least one and at most the given
//! bytes, and frames the same from its own bytes; one byte short of it is `Partial`, never
//! another request or an error (framing does not depend on how the bytes were split);
//! `Partial` comes only below `MAX_REQUEST` bytes (what a connection buffers is bounded);
//! errors are 400, 413, 431, 501 or 505.
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
