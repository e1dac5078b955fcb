//! The poison-tolerant lock: a panic while a lock was held must not take every later user of
//! the data down with it (the guarded data here are caches and progress, valid at every step).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the data over from a holder that panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
