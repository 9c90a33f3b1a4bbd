//! The live simulations, by id. A handle given to C is its id dressed as a pointer and never
//! dereferenced, and ids are never reused, so a NULL, forged or destroyed handle is found out
//! by a lookup instead of crashing the host.

use crate::status::{Failure, WAVECP_ERR_HANDLE, WAVECP_ERR_INTERNAL, WAVECP_ERR_NULL};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Ids start at 1 and step by 16, so a handle looks like an aligned pointer and 0 is NULL.
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Live objects of one kind, by id.
pub(crate) struct Registry<T> {
    map: OnceLock<Mutex<HashMap<u64, Arc<Mutex<T>>>>>,
    what: &'static str,
}

impl<T> Registry<T> {
    pub const fn new(what: &'static str) -> Self {
        Registry {
            map: OnceLock::new(),
            what,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<u64, Arc<Mutex<T>>>> {
        // A poisoned map only means a panic elsewhere while it was held: the map itself is
        // whole (insert and remove do not panic half-way).
        self.map
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `value`; returns its handle.
    pub fn insert(&self, value: T) -> u64 {
        let id = NEXT.fetch_add(1, Ordering::Relaxed) * 16;
        self.map().insert(id, Arc::new(Mutex::new(value)));
        id
    }

    /// The object behind `handle`, for one call. Calls on one object are serialised by its
    /// lock, so two host threads sharing a handle wait for each other instead of racing.
    pub fn get(&self, handle: u64) -> Result<Arc<Mutex<T>>, Failure> {
        if handle == 0 {
            return Err(Failure::new(
                WAVECP_ERR_NULL,
                format!("the {} handle is NULL", self.what),
            ));
        }
        self.map().get(&handle).cloned().ok_or_else(|| {
            Failure::new(
                WAVECP_ERR_HANDLE,
                format!(
                    "{handle:#x} is not a live {} (never created, or already destroyed)",
                    self.what
                ),
            )
        })
    }

    /// Takes `handle` out of the registry; `None` if it was not live.
    pub fn remove(&self, handle: u64) -> Option<Arc<Mutex<T>>> {
        self.map().remove(&handle)
    }
}

/// Locks one object; a lock poisoned by a panic in an earlier call is an error, since the
/// object may be half-updated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, Failure> {
    m.lock().map_err(|_| {
        Failure::new(
            WAVECP_ERR_INTERNAL,
            "an earlier call on this simulation failed inside wavecp; destroy it and create a new one",
        )
    })
}
