//! The seeded simulation of the core (`ringmill_core::sim`): many random scenarios, each
//! checked after every step, each a replay of its seed.
//!
//! * `RINGMILL_SIM_SEEDS=n` runs seeds `0..n` (default 300; `ci/simulate.sh` runs 10,000
//!   in release mode);
//! * `RINGMILL_SIM_FIRST=k` starts at seed `k` (to split a range between processes);
//! * `RINGMILL_SIM_SEED=s` runs seed `s` alone, and prints its last events.
//!
//! Each seed runs once; every tenth (and a replayed one) runs twice, and the two traces
//! must match.
#![cfg(all(feature = "sim", unix))]

use ringmill_core::layer::{Frames, Layer, LayerFactory};
use ringmill_core::sim::{self, Outcome};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

/// The framing the simulated peers speak: a big-endian `u16` length, then the payload;
/// each payload goes up whole.
#[derive(Default)]
struct LengthPrefixed {
    buf: Vec<u8>,
}

impl Layer for LengthPrefixed {
    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        let mut frames = Frames::new();
        self.decode_frames(input, &mut frames, out)?;
        up.extend_from_slice(frames.bytes());
        Ok(())
    }

    fn decode_frames(
        &mut self,
        input: &[u8],
        up: &mut Frames,
        _out: &mut Vec<u8>,
    ) -> io::Result<()> {
        self.buf.extend_from_slice(input);
        let mut at = 0;
        while self.buf.len() - at >= 2 {
            let len = usize::from(u16::from_be_bytes([self.buf[at], self.buf[at + 1]]));
            if self.buf.len() - at - 2 < len {
                break;
            }
            up.push_frame(&self.buf[at + 2..at + 2 + len]);
            at += 2 + len;
        }
        self.buf.drain(..at);
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let len = u16::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 65,535 bytes"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(frame);
        Ok(())
    }
}

fn layer() -> LayerFactory {
    Arc::new(|| Box::new(LengthPrefixed::default()) as Box<dyn Layer>)
}

fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn replay_command(seed: u64) -> String {
    format!(
        "RINGMILL_SIM_SEED={seed} cargo test -p ringmill-core --features sim --test simulation -- --nocapture"
    )
}

/// Runs `seed` (twice if `twice`, comparing the traces): the outcome, or the failure
/// message.
fn check(seed: u64, twice: bool) -> Result<Outcome, String> {
    let first = sim::run(seed, Some(layer()));
    if !first.violations.is_empty() {
        return Err(report(&first));
    }
    if twice {
        let second = sim::run(seed, Some(layer()));
        if second.trace != first.trace || second.events != first.events {
            return Err(format!(
                "seed {seed} is not deterministic: two runs gave traces {:#x} ({} events) and {:#x} ({} events)\nlast events of the second run:\n{}\nreplay: {}",
                first.trace,
                first.events,
                second.trace,
                second.events,
                second.tail,
                replay_command(seed)
            ));
        }
    }
    Ok(first)
}

fn report(outcome: &Outcome) -> String {
    format!(
        "simulation seed {} failed:\n  {}\nlast events (virtual time, event, numbers):\n{}\nreplay: {}",
        outcome.seed,
        outcome.violations.join("\n  "),
        outcome.tail,
        replay_command(outcome.seed)
    )
}

#[test]
fn seeded_scenarios_keep_the_behaviour_contract() {
    if let Some(seed) = env("RINGMILL_SIM_SEED") {
        let outcome = sim::run(seed, Some(layer()));
        println!(
            "seed {seed}: {} events, trace {:#x}\nlast events:\n{}",
            outcome.events, outcome.trace, outcome.tail
        );
        if let Err(failure) = check(seed, true) {
            panic!("{failure}");
        }
        return;
    }
    let first = env("RINGMILL_SIM_FIRST").unwrap_or(0);
    let count = env("RINGMILL_SIM_SEEDS").unwrap_or(300);
    let mut failures = Vec::new();
    let mut seen: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in first..first + count {
        match check(seed, seed % 10 == 0) {
            Ok(outcome) => {
                for (kind, n) in outcome.counts {
                    *seen.entry(kind).or_default() += n;
                }
            }
            Err(failure) => {
                eprintln!("{failure}\n");
                failures.push(seed);
                if failures.len() == 5 {
                    break;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "simulation seeds failed: {failures:?}; replay the first with:\n{}",
        replay_command(failures[0])
    );
    println!("{count} seeds from {first} passed; events by kind: {seen:?}");
    if count >= 100 {
        // A simulator that silently stopped exercising something would pass for the
        // wrong reason: every kind of chaos and every callback must have happened.
        let missing: Vec<&str> = EXERCISED
            .iter()
            .copied()
            .filter(|kind| !seen.contains_key(kind))
            .collect();
        assert!(
            missing.is_empty(),
            "{count} seeds never exercised {missing:?} (events seen: {seen:?})"
        );
    }
}

/// What any hundred seeds exercise.
const EXERCISED: &[&str] = &[
    "accepted",
    "accept-error",
    "connected",
    "connect-failed",
    "sent",
    "short-send",
    "send-error",
    "received",
    "eof",
    "recv-error",
    "closed",
    "on_connect",
    "on_data",
    "on_writable",
    "on_drained",
    "on_error",
    "on_disconnect",
    "peer-reset",
    "peer-sees-eof",
    "pause-inline",
    "resume",
    "close-inline",
    "close-gracefully-inline",
    "fail",
    "schedule",
    "post",
    "later",
    "act-send",
    "act-burst",
    "act-close",
    "act-close-gracefully",
    "act-abort",
    "act-pause",
    "act-resume",
    "stop-acknowledged",
    "end",
];

/// The framing layer the test hands the simulator agrees with the simulator's peers.
#[test]
fn the_test_layer_speaks_the_peers_framing() {
    let mut l = LengthPrefixed::default();
    let mut wire = Vec::new();
    l.encode(b"hello", &mut wire).unwrap();
    assert_eq!(wire, sim::frame(b"hello"));
    let mut up = Frames::new();
    let mut out = Vec::new();
    l.decode_frames(&wire[..3], &mut up, &mut out).unwrap();
    assert!(up.is_empty());
    l.decode_frames(&wire[3..], &mut up, &mut out).unwrap();
    assert_eq!(up.get(0).map(|p| p.bytes()), Some(&b"hello"[..]));
}
