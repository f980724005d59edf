//! A rayon thread pool that survives `fork()`.
//!
//! Worker threads do not exist in a forked child, so a pool created before a fork would hang
//! the first parallel call in the child (stdlib `multiprocessing` with the fork start method
//! does exactly this to a Python process that already hashed a big array). The pool is keyed by
//! the process id: a child that sees a foreign pool builds its own.

use std::sync::{Arc, Mutex, PoisonError};

use rayon::ThreadPool;

struct OwnedPool {
    pid: u32,
    pool: Arc<ThreadPool>,
}

static POOL: Mutex<Option<OwnedPool>> = Mutex::new(None);

/// Number of threads the pool uses: the CPUs this process may run on (affinity and cgroup
/// quota aware, as reported by the standard library), at least one.
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The pool of this process, created on first use. `None` if the OS refused to start threads,
/// in which case callers run their work serially (same results, only slower).
pub fn pool() -> Option<Arc<ThreadPool>> {
    let pid = std::process::id();
    let mut guard = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(owned) = guard.as_ref()
        && owned.pid == pid
    {
        return Some(Arc::clone(&owned.pool));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(available_threads())
        .thread_name(|i| format!("joblib-rs-{i}"))
        .build()
        .ok()?;
    let pool = Arc::new(pool);
    // A pool inherited through fork() has no threads behind it: leak it rather than drop it,
    // since dropping would wait for threads that will never answer.
    if let Some(stale) = guard.replace(OwnedPool {
        pid,
        pool: Arc::clone(&pool),
    }) {
        std::mem::forget(stale);
    }
    Some(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_reused_within_a_process() {
        let a = pool().expect("pool");
        let b = pool().expect("pool");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.current_num_threads() >= 1);
    }
}
