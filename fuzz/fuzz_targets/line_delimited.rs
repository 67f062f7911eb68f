//! `LineDelimited` decoding: no panic for any input, cut anywhere; the lines and the
//! failure do not depend on the cuts; no line is over the cap or holds a `\n`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmill::layer::{Layer, LineDelimited};
use ringmill_fuzz::{feed, Input};

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let max = match input.param {
        255 => usize::MAX,
        p => usize::from(p),
    };
    let whole = feed(&mut LineDelimited::new(max), &[input.data]);
    let cut = feed(&mut LineDelimited::new(max), &input.chunks());
    assert_eq!(whole, cut, "the cuts changed what was decoded");
    assert!(whole.out.is_empty(), "a codec sends nothing back");
    let mut codec = LineDelimited::new(max);
    for (frame, line) in &whole.pieces {
        assert!(frame, "a codec passes up whole frames only");
        assert!(line.len() <= max, "line over the cap");
        assert!(!line.contains(&b'\n'), "a line holds a newline");
        let mut encoded = Vec::new();
        codec
            .encode(line, &mut encoded)
            .expect("a decoded line encodes");
    }
});
