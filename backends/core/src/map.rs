//! The lock-free connection map: `ConnectionId -> Arc<V>`, on crossbeam-epoch.

use crate::id::ConnectionId;
use std::sync::Arc;

/// A lock-free map from connection id to shared connection state.
pub struct ConnMap<V> {
    _todo: std::marker::PhantomData<V>,
}

impl<V: Send + Sync> ConnMap<V> {
    /// A map sized for about `capacity` live entries.
    pub fn with_capacity(capacity: usize) -> Self {
        let _ = capacity;
        todo!()
    }
    /// Inserts `value` under `id`; ids are unique, so it must not be present.
    pub fn insert(&self, id: ConnectionId, value: Arc<V>) {
        let _ = (id, value);
        todo!()
    }
    /// The value under `id`, if present.
    pub fn get(&self, id: ConnectionId) -> Option<Arc<V>> {
        let _ = id;
        todo!()
    }
    /// Removes and returns the value under `id`.
    pub fn remove(&self, id: ConnectionId) -> Option<Arc<V>> {
        let _ = id;
        todo!()
    }
    /// Entries present.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// Whether no entry is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Calls `f` for every entry present (a weakly consistent snapshot).
    pub fn for_each(&self, f: impl FnMut(ConnectionId, &Arc<V>)) {
        let _ = f;
        todo!()
    }
}
