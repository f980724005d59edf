//! Per-entry locks: one process (or thread) computes a missing entry while the others wait.
//!
//! A lock is an exclusive `flock(2)` on `<args hash>.lock`, taken with
//! [`File::try_lock`] and polled with a growing sleep until a deadline. Each lock opens its own
//! file description, so threads of one process exclude each other as processes do. The kernel
//! drops a lock when the descriptor closes, including when its owner is killed: a lock is never
//! stale on a local file system, and the deadline bounds the wait when an owner hangs.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::entry::ensure_dir;
use super::{IoContext, StoreError};

/// First and longest sleep between two attempts to take a busy lock.
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_millis(25);

/// An exclusive lock on one entry, released when dropped.
#[derive(Debug)]
pub struct EntryLock {
    file: File,
    path: PathBuf,
}

impl EntryLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EntryLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock too; unlocking first makes it explicit.
        let _ = self.file.unlock();
    }
}

/// Take the lock at `lock_path`, waiting at most `wait`. `Ok(None)` means the wait ran out:
/// another owner still holds it.
pub fn try_lock_for(lock_path: &Path, wait: Duration) -> Result<Option<EntryLock>, StoreError> {
    let file = open_lock_file(lock_path)?;
    let deadline = Instant::now() + wait;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match file.try_lock() {
            Ok(()) => {
                return Ok(Some(EntryLock {
                    file,
                    path: lock_path.to_path_buf(),
                }));
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(e).ctx("lock", lock_path),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Open (creating it and its folder) the lock file; again if a concurrent clear removes the
/// folder in between.
fn open_lock_file(lock_path: &Path) -> Result<File, StoreError> {
    let mut attempts = 0;
    loop {
        if let Some(parent) = lock_path.parent() {
            ensure_dir(parent)?;
        }
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_path)
        {
            Ok(file) => return Ok(file),
            Err(e) if attempts < 5 && e.kind() == std::io::ErrorKind::NotFound => attempts += 1,
            Err(e) => return Err(e).ctx("open", lock_path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn second_taker_waits_then_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.lock");
        let held = try_lock_for(&path, Duration::ZERO)
            .expect("lock")
            .expect("free");
        assert_eq!(held.path(), path);
        let start = Instant::now();
        let other = try_lock_for(&path, Duration::from_millis(30)).expect("lock");
        assert!(other.is_none());
        assert!(start.elapsed() >= Duration::from_millis(30));
        drop(held);
        assert!(try_lock_for(&path, Duration::ZERO).expect("lock").is_some());
    }

    #[test]
    fn threads_take_turns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = Arc::new(dir.path().join("sub").join("k.lock"));
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (path, inside, max_inside) = (path.clone(), inside.clone(), max_inside.clone());
                std::thread::spawn(move || {
                    let lock = try_lock_for(&path, Duration::from_secs(10))
                        .expect("lock")
                        .expect("acquired");
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max_inside.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(lock);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("join");
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
    }
}
