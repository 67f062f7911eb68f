//! The stand-in for crossbeam-epoch on loom's atomics, compiled under `--cfg loom` only;
//! what it keeps of crossbeam-epoch's API and what it checks is in [the parent module](super).

use loom::sync::atomic::{AtomicUsize, Ordering};
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Deref;

/// Low bits of an address free for the tag.
const TAG_MASK: usize = 0b111;

/// What happens to an allocated node.
enum State {
    Live,
    /// Retired; the function frees it.
    Retired(unsafe fn(usize)),
}

std::thread_local! {
    /// Every node allocated in the current execution and not yet freed.
    static NODES: RefCell<HashMap<usize, State>> = RefCell::new(HashMap::new());
}

fn with_nodes<R>(f: impl FnOnce(&mut HashMap<usize, State>) -> R) -> R {
    NODES.with(|n| f(&mut n.borrow_mut()))
}

/// Runs `f` as a loom model: every execution starts with no node allocated; when the
/// body returns, the retired nodes are freed ([`collect`]) and any node still allocated
/// (neither retired nor freed by the map's `Drop`: leaked) fails the model. The
/// preemption bound is `LOOM_MAX_PREEMPTIONS`, or 3.
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(move || {
        with_nodes(|n| n.clear());
        f();
        collect();
        let leaked = with_nodes(|n| std::mem::take(n).len());
        assert_eq!(
            leaked, 0,
            "{leaked} node(s) neither retired nor freed: leaked"
        );
    });
}

/// Frees every retired node now, as crossbeam-epoch does once no thread is pinned: call
/// it only when no thread of the model holds a pointer into a map (all joined, no
/// guard alive).
pub(crate) fn collect() {
    let retired: Vec<(usize, unsafe fn(usize))> = with_nodes(|n| {
        let retired = n
            .iter()
            .filter_map(|(&addr, state)| match state {
                State::Retired(free) => Some((addr, *free)),
                State::Live => None,
            })
            .collect::<Vec<_>>();
        for (addr, _) in &retired {
            n.remove(addr);
        }
        retired
    });
    // Freed outside the table's borrow: a value's drop may free more nodes.
    for (addr, free) in retired {
        // SAFETY: `free` is the function `defer_destroy` recorded for this address,
        // which was still allocated (in the table, now removed from it, so freed once);
        // the caller guarantees no thread still uses it.
        unsafe { free(addr) };
    }
}

/// A node's allocation: the node, and a loom cell standing for its plain (non-atomic)
/// memory. The cell is created with the node (a write, to loom) and read wherever a
/// node is reached through a `Shared`, so loom fails the model if a thread reads a node
/// whose initialisation does not happen-before the read: a publication or a load with
/// too weak an ordering. `repr(C)` with the node first: the node's address is the
/// allocation's.
#[repr(C)]
struct Alloc<T> {
    node: T,
    contents: loom::cell::UnsafeCell<()>,
}

/// Frees the node allocated at `addr`.
///
/// # Safety
///
/// `addr` came from `Box::<Alloc<T>>::into_raw` and is freed once.
unsafe fn free<T>(addr: usize) {
    // SAFETY: the caller's contract.
    let alloc = unsafe { Box::from_raw(addr as *mut Alloc<T>) };
    // Freeing writes the memory: loom fails the model if a read is concurrent with it.
    // Not while a failed model unwinds: a second panic would abort the test binary.
    if !std::thread::panicking() {
        alloc.contents.with_mut(|_| ());
    }
    drop(alloc);
}

/// Pins nothing: the stand-in frees no node before the model body returns.
pub(crate) fn pin() -> Guard {
    Guard { _private: () }
}

/// A guard for the map's `Drop`, as crossbeam-epoch's.
///
/// # Safety
///
/// As crossbeam-epoch's `unprotected`: no other thread accesses what is read with it.
pub(crate) unsafe fn unprotected() -> &'static Guard {
    static UNPROTECTED: Guard = Guard { _private: () };
    &UNPROTECTED
}

/// Stands for a pinned epoch guard.
pub(crate) struct Guard {
    _private: (),
}

impl Guard {
    /// Records `ptr`'s node as retired; it is freed when the model body returns.
    ///
    /// Panics if the node is not allocated or already retired.
    ///
    /// # Safety
    ///
    /// As crossbeam-epoch's: the node is unlinked and retired by this caller only.
    pub(crate) unsafe fn defer_destroy<T>(&self, ptr: Shared<'_, T>) {
        let addr = ptr.addr();
        with_nodes(|n| match n.get_mut(&addr) {
            Some(state @ State::Live) => *state = State::Retired(free::<T>),
            Some(State::Retired(_)) => panic!("node {addr:#x} retired twice"),
            None => panic!("node {addr:#x} retired but not allocated"),
        });
    }
}

/// A node not yet published (a box).
pub(crate) struct Owned<T> {
    addr: usize,
    _marker: PhantomData<Box<T>>,
}

impl<T> Owned<T> {
    pub(crate) fn new(value: T) -> Self {
        assert!(std::mem::align_of::<T>() > TAG_MASK, "no room for the tag");
        let addr = Box::into_raw(Box::new(Alloc {
            node: value,
            contents: loom::cell::UnsafeCell::new(()),
        })) as usize;
        with_nodes(|n| n.insert(addr, State::Live));
        Owned {
            addr,
            _marker: PhantomData,
        }
    }
}

impl<T> Deref for Owned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `addr` is an allocation this `Owned` owns.
        unsafe { &(*(self.addr as *const Alloc<T>)).node }
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        let addr = self.addr;
        let state = with_nodes(|n| n.remove(&addr));
        // Not while a failed model unwinds: a second panic would abort the test binary.
        if !std::thread::panicking() {
            match state {
                Some(State::Live) => {}
                Some(State::Retired(_)) => panic!("node {addr:#x} freed while retired"),
                None => panic!("node {addr:#x} freed twice"),
            }
        }
        // SAFETY: `addr` is a box this `Owned` owns, freed once, here.
        unsafe { free::<T>(addr) };
    }
}

/// A tagged node address read under a guard (or null).
pub(crate) struct Shared<'g, T> {
    data: usize,
    _marker: PhantomData<(&'g (), *const T)>,
}

impl<T> Clone for Shared<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<'_, T> {}

impl<T> PartialEq for Shared<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl<'g, T> Shared<'g, T> {
    fn from_data(data: usize) -> Self {
        Shared {
            data,
            _marker: PhantomData,
        }
    }

    fn addr(self) -> usize {
        self.data & !TAG_MASK
    }

    pub(crate) fn is_null(self) -> bool {
        self.addr() == 0
    }

    pub(crate) fn tag(self) -> usize {
        self.data & TAG_MASK
    }

    pub(crate) fn with_tag(self, tag: usize) -> Self {
        Self::from_data(self.addr() | (tag & TAG_MASK))
    }

    /// # Safety
    ///
    /// As crossbeam-epoch's: the node, if any, is not freed while `'g` lasts.
    pub(crate) unsafe fn as_ref(self) -> Option<&'g T> {
        if self.is_null() {
            return None;
        }
        // SAFETY: the caller's contract; a non-null address is an `Alloc<T>`.
        let alloc = unsafe { &*(self.addr() as *const Alloc<T>) };
        alloc.contents.with(|_| ());
        Some(&alloc.node)
    }

    /// Takes the node back for freeing (the map's `Drop`). Panics if it was retired:
    /// a retired node must not be reachable from a list.
    ///
    /// # Safety
    ///
    /// As crossbeam-epoch's: the node is not null and nobody else uses or frees it.
    pub(crate) unsafe fn into_owned(self) -> Owned<T> {
        let addr = self.addr();
        with_nodes(|n| {
            if let Some(State::Retired(_)) = n.get(&addr) {
                panic!("node {addr:#x} retired but still linked");
            }
        });
        Owned {
            addr,
            _marker: PhantomData,
        }
    }
}

/// What an [`Atomic`] can hold: an [`Owned`] (published by a CAS) or a [`Shared`].
pub(crate) trait Pointer<T> {
    fn into_data(self) -> usize;
    /// # Safety
    ///
    /// `data` came from `into_data` of the same kind of pointer, which was not used
    /// since.
    unsafe fn from_data(data: usize) -> Self;
}

impl<T> Pointer<T> for Owned<T> {
    fn into_data(self) -> usize {
        let addr = self.addr;
        std::mem::forget(self);
        addr
    }

    unsafe fn from_data(data: usize) -> Self {
        Owned {
            addr: data,
            _marker: PhantomData,
        }
    }
}

impl<T> Pointer<T> for Shared<'_, T> {
    fn into_data(self) -> usize {
        self.data
    }

    unsafe fn from_data(data: usize) -> Self {
        Shared::from_data(data)
    }
}

/// The failed CAS: what was there, and the new pointer handed back.
pub(crate) struct CompareExchangeError<'g, T, P> {
    #[allow(dead_code)] // crossbeam-epoch's shape; the map reads only `new`
    pub(crate) current: Shared<'g, T>,
    pub(crate) new: P,
}

/// A tagged node pointer on a loom atomic.
pub(crate) struct Atomic<T> {
    data: AtomicUsize,
    // Shared between threads as crossbeam-epoch's `Atomic<T>` is: `Send`/`Sync`
    // follow `T`'s.
    _marker: PhantomData<Box<T>>,
}

impl<T> Atomic<T> {
    pub(crate) fn null() -> Self {
        Atomic {
            data: AtomicUsize::new(0),
            _marker: PhantomData,
        }
    }

    pub(crate) fn load<'g>(&self, ord: Ordering, _: &'g Guard) -> Shared<'g, T> {
        Shared::from_data(self.data.load(ord))
    }

    pub(crate) fn store(&self, new: Shared<'_, T>, ord: Ordering) {
        self.data.store(new.data, ord);
    }

    pub(crate) fn fetch_or<'g>(&self, tag: usize, ord: Ordering, _: &'g Guard) -> Shared<'g, T> {
        Shared::from_data(self.data.fetch_or(tag & TAG_MASK, ord))
    }

    pub(crate) fn compare_exchange<'g, P: Pointer<T>>(
        &self,
        current: Shared<'_, T>,
        new: P,
        success: Ordering,
        failure: Ordering,
        _: &'g Guard,
    ) -> Result<Shared<'g, T>, CompareExchangeError<'g, T, P>> {
        let new = new.into_data();
        match self
            .data
            .compare_exchange(current.data, new, success, failure)
        {
            Ok(_) => Ok(Shared::from_data(new)),
            Err(actual) => Err(CompareExchangeError {
                current: Shared::from_data(actual),
                // SAFETY: `new` came from `into_data` just above and was not published.
                new: unsafe { P::from_data(new) },
            }),
        }
    }
}
