//! `LengthPrefixed` decoding: no panic for any input, cut anywhere; the frames and the
//! failure do not depend on the cuts; no frame is over the cap; the frames re-encode to
//! the bytes they came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmill::layer::{Layer, LengthPrefixed};
use ringmill_fuzz::{feed, Input};

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    // Caps 0..=254, or none.
    let max = match input.param {
        255 => usize::MAX,
        p => usize::from(p),
    };
    let whole = feed(&mut LengthPrefixed::new(max), &[input.data]);
    let cut = feed(&mut LengthPrefixed::new(max), &input.chunks());
    assert_eq!(whole, cut, "the cuts changed what was decoded");
    assert!(whole.out.is_empty(), "a codec sends nothing back");
    let mut encoded = Vec::new();
    let mut codec = LengthPrefixed::new(max);
    for (frame, bytes) in &whole.pieces {
        assert!(frame, "a codec passes up whole frames only");
        assert!(bytes.len() <= max, "frame over the cap");
        codec
            .encode(bytes, &mut encoded)
            .expect("a decoded frame encodes");
    }
    assert_eq!(&input.data[..encoded.len()], &encoded[..]);
});
