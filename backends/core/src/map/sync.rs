//! What the map synchronises with: its atomics and its memory reclamation.
//!
//! In a normal build this is nothing but re-exports: crossbeam-epoch's `Atomic`, `Owned`,
//! `Shared`, `Guard`, `pin` and `unprotected`, and std's `AtomicUsize`. The map's code
//! compiles to exactly what it would if it named them directly.
//!
//! Under `RUSTFLAGS="--cfg loom"` (`ci/loom.sh`) the same names are a small stand-in built
//! on loom's atomics, so that loom sees, and permutes, every load, store and CAS the map
//! makes (crossbeam-epoch's own atomics are invisible to loom). The stand-in keeps the
//! subset of crossbeam-epoch's API that `map.rs` uses, with the same meaning:
//!
//! - `Atomic<T>` is a loom `AtomicUsize` holding a node address whose low bits carry a tag
//!   (nodes are at least 8-byte aligned), exactly as crossbeam-epoch tags pointers;
//! - `Owned<T>` is a boxed node not yet published, `Shared<'g, T>` a tagged address read
//!   under a guard;
//! - reclamation is replaced: `Guard::defer_destroy` records the node as retired instead of
//!   handing it to the epoch, and retired nodes are freed only when a model calls
//!   `collect` (its threads joined) or its body returns (`model`), when no thread can
//!   still hold a pointer to them.
//!
//! Each node also carries a loom cell standing for its plain memory, read wherever the map
//! reaches a node: loom then fails a model in which a thread reads a node whose
//! initialisation does not happen-before the read (a `Relaxed` where the map needs
//! `Acquire` or `Release`), which it could not see on the plain fields themselves.
//!
//! The stand-in's bookkeeping (which nodes are allocated, which retired) lives in a plain
//! thread-local: loom runs all threads of one execution on one OS thread, and the
//! bookkeeping is deliberately not a loom object, so it adds no synchronisation that could
//! hide a missing ordering in the map. It turns the reclamation rules into checks that
//! fail the model:
//!
//! - a node retired twice (two threads both believing their CAS unlinked it);
//! - a node retired while still linked (the map's `Drop` then meets it in a list);
//! - a node neither retired nor freed by the map's `Drop` (an unlinked node leaked), found
//!   when the model body returns.
//!
//! What this does not check is crossbeam-epoch itself (when it frees a retired node); the
//! map's unit tests with their drop ledger and `tests/map_churn.rs` run that for real.

#[cfg(not(loom))]
pub(crate) use crossbeam_epoch::{pin, unprotected, Atomic, Guard, Owned, Shared};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicUsize;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicUsize;
#[cfg(loom)]
pub(crate) use stand_in::*;

#[cfg(loom)]
// `model` and `collect` serve the map's loom models only.
#[cfg_attr(not(test), allow(dead_code))]
mod stand_in;
