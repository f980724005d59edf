//! Versions of a file: what tells a reader that the bytes it verified earlier are still the
//! file's bytes, with one `stat` instead of `open` + `read` + `close`.
//!
//! ```text
//!  read + verify entry ─► FileVersion of the open file (fstat), settled? ─► remember bytes
//!  next hit: stat(output) ─► same FileVersion ─► the remembered bytes (no open, no read)
//!                        └─► different / absent ─► read again (or miss)
//! ```
//!
//! Why a version is enough (see `docs/memory.md`, "Integrity of hits"): entries are never
//! rewritten in place by the store, only replaced by renaming a new folder over them, so a
//! replaced output is a different inode, created while the old one still existed (distinct
//! numbers) or after it was removed (then written later: a later modification time). Any
//! write to the same inode sets its modification time to the current time of the file
//! system's clock. A version is only trusted once *settled*: its modification time older
//! than one tick of that clock, so that a later write cannot carry the same time stamp (git's
//! "racy clean" rule). The change time is left out on purpose: the store's own access-time
//! refresh (LRU) changes it.

use std::fs::Metadata;
use std::io::ErrorKind;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{IoContext, StoreError};

/// A version younger than this (ns) may be followed by a write in the same tick of the file
/// system's clock (the kernel's coarse clock ticks every 1 to 10 ms).
const RACY_NS: i128 = 50_000_000;
/// Modification times on a whole second may come from a file system with a coarse clock
/// (1 s; FAT: 2 s): such a version settles only after this long (ns).
const COARSE_RACY_NS: i128 = 2_100_000_000;

/// Identity and time stamps of one state of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileVersion {
    /// The version described by `meta` (`None` where the platform has no inode numbers).
    pub fn of(meta: &Metadata) -> Option<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(Self {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.size(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            None
        }
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the version is old enough at `now` that any later write to the file changes
    /// its time stamps.
    pub fn settled(&self, now: SystemTime) -> bool {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        let coarse = self.mtime_ns % 1_000_000_000 == 0;
        now_ns - self.mtime_ns > if coarse { COARSE_RACY_NS } else { RACY_NS }
    }
}

/// The current version of the file at `path` (one `stat`); `None` if there is no file.
pub fn file_version(path: &Path) -> Result<Option<FileVersion>, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(FileVersion::of(&meta)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(e).ctx("stat", path),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    #[test]
    fn a_rewrite_or_a_replacement_changes_the_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        fs::write(&path, b"one").expect("write");
        let first = file_version(&path).expect("stat").expect("present");
        assert_eq!(first.size(), 3);
        assert_eq!(file_version(&path).expect("stat"), Some(first));
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&path, b"two").expect("rewrite");
        assert_ne!(file_version(&path).expect("stat"), Some(first));
        let other = dir.path().join("g");
        fs::write(&other, b"two").expect("write");
        fs::rename(&other, &path).expect("rename");
        assert_ne!(file_version(&path).expect("stat"), Some(first));
        fs::remove_file(&path).expect("rm");
        assert_eq!(file_version(&path).expect("stat"), None);
    }

    #[test]
    fn a_fresh_version_is_not_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        fs::write(&path, b"x").expect("write");
        let v = file_version(&path).expect("stat").expect("present");
        let now = SystemTime::now();
        assert!(!v.settled(now));
        assert!(v.settled(now + Duration::from_secs(3)));
    }
}
