//! The on-disk store behind `Memory`: layout, atomic entry commits, per-entry locks, LRU.
//!
//! ```text
//!  <location>/joblib_rs/                       store root (plus <location>/.gitignore)
//!    <module>/<path>/<func>/                   one folder per cached function
//!      func_code.py                            "# first line: N" + source, atomic write
//!      <args hash>/                            one entry per argument hash (32 or 40 hex)
//!        output.jrs   metadata.json            written together, published by one rename
//!      <args hash>.lock                        per-entry flock(2): one computer per key
//!      .tmp-<args hash>-<pid>-<n>/             staging of an entry not yet committed
//!
//!  hit:    open+read(output.jrs) ─► bytes to the unpickler (bigger than the limit: by path)
//!            └─ verify (1st hit in a process, then once per TOUCH_INTERVAL):
//!               stat(metadata.json) (whole entry?) + futimens(atime = now) (LRU, no rewrite)
//!          a reader that kept the verified bytes: stat(output.jrs) ─► same FileVersion ─►
//!               the kept bytes (version.rs says why that is sound)
//!  miss:   lock(<args>.lock, timeout) ─► re-check hit ─► compute (Python)
//!            ─► stage: mkdir .tmp-… ─► dump output + metadata ─► [durable: fsync files, dir]
//!            ─► rename(.tmp-…, <args hash>) ─► unlock
//!  reduce: parallel walk (rayon) ─► ItemInfo{size, atime} ─► LRU selection ─► remove
//! ```
//!
//! A reader sees either no entry or a complete one: entries appear by one `rename(2)` of a
//! fully written and synced folder, and are removed by renaming them out of the way first.
//! Locks are advisory `flock` locks held by an open file: the kernel drops them when their
//! owner dies, so a killed process never blocks the others, and waiters give up after a
//! timeout (the caller then computes without the lock). The byte-level layout is specified in
//! `docs/store.md`.

mod entry;
mod layout;
mod lock;
mod owned;
mod scan;
mod version;

use std::io;
use std::path::{Path, PathBuf};

pub use entry::{
    EntryRead, Hit, ReadOptions, Staging, clear_dir, read_entry, read_entry_open,
    read_entry_versioned, remove_entry, write_file_atomic,
};
pub use layout::{
    FUNC_CODE, LOCK_SUFFIX, METADATA, OUTPUT, STORE_DIR, TEMP_PREFIX, TRASH_PREFIX, is_entry_name,
    lock_path,
};
pub use lock::{EntryLock, try_lock_for};
pub use owned::{
    ClearReport, MARKER, STORE_VERSION, clear_entry, clear_tree, has_marker, is_leftover_name,
    is_owned_entry, looks_like_store, marker_text, reap_dead_leftovers, write_marker,
};
pub use scan::{
    ItemInfo, Limits, reduce_size, remove_stale_temps, scan_items, select_for_deletion,
};
pub use version::{FileVersion, file_version};

/// How long an entry's access time may lag behind before a hit refreshes it (seconds).
///
/// LRU only needs a coarse clock; refreshing at most once per interval keeps the hit path to
/// read-only system calls in the common case.
pub const TOUCH_INTERVAL_SECS: u64 = 1;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("could not {op} {path}: {source}")]
    Io {
        /// What was being done (`"create"`, `"rename"`, ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A name that would escape its folder or is not a valid store name.
    #[error("invalid store name {0:?}")]
    InvalidName(String),
}

impl StoreError {
    /// The OS error behind this error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::InvalidName(_) => None,
        }
    }

    /// The path concerned, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StoreError::Io { path, .. } => Some(path),
            StoreError::InvalidName(_) => None,
        }
    }
}

/// Attach an operation name and a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
