//! Names and paths of the store layout (see the module doc of [`crate::store`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::StoreError;

/// Folder created under the user's location; holds every cached function.
pub const STORE_DIR: &str = "joblib_rs";
/// The pickled output of an entry (written by `joblib_rs.dump`).
pub const OUTPUT: &str = "output.jrs";
/// The JSON summary of an entry: duration, input argument reprs, time.
pub const METADATA: &str = "metadata.json";
/// The source text of a cached function, used to detect that it changed.
pub const FUNC_CODE: &str = "func_code.py";
/// Suffix of per-entry lock files, beside the entry folder.
pub const LOCK_SUFFIX: &str = ".lock";
/// Prefix of staging folders and files not yet published.
pub const TEMP_PREFIX: &str = ".tmp-";
/// Prefix of folders renamed out of the way before their removal.
pub const TRASH_PREFIX: &str = ".trash-";

/// Whether `name` is an entry folder name: an argument hash of 32 (xxh3-128, md5) or 40
/// (sha1) lowercase hex digits.
pub fn is_entry_name(name: &str) -> bool {
    (name.len() == 32 || name.len() == 40)
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The last path component of `path` as UTF-8, or an [`StoreError::InvalidName`].
pub(crate) fn file_name(path: &Path) -> Result<&str, StoreError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::InvalidName(path.display().to_string()))
}

/// The lock file of the entry at `entry_dir`: `<parent>/<entry name>.lock`.
pub fn lock_path(entry_dir: &Path) -> Result<PathBuf, StoreError> {
    let name = file_name(entry_dir)?;
    Ok(entry_dir.with_file_name(format!("{name}{LOCK_SUFFIX}")))
}

/// A sibling of `path` named `<prefix><name>-<pid>-<unique>`: unique within this process (a
/// counter) and across processes (the pid) and hosts sharing a folder (the clock).
pub(crate) fn unique_sibling(path: &Path, prefix: &str) -> Result<PathBuf, StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = file_name(path)?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Ok(path.with_file_name(format!(
        "{prefix}{name}-{}-{n}-{nanos:08x}",
        std::process::id()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_hex_digests() {
        assert!(is_entry_name("0123456789abcdef0123456789abcdef"));
        assert!(is_entry_name(&"a".repeat(40)));
        assert!(!is_entry_name(&"a".repeat(33)));
        assert!(!is_entry_name("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!is_entry_name(".tmp-0123456789abcdef0123456789ab"));
    }

    #[test]
    fn lock_and_temp_paths_stay_beside_the_entry() {
        let entry = Path::new("/c/joblib_rs/m/f/0123456789abcdef0123456789abcdef");
        let lock = lock_path(entry).expect("lock path");
        assert_eq!(lock.parent(), entry.parent());
        assert!(lock.to_string_lossy().ends_with("abcdef.lock"));
        let a = unique_sibling(entry, TEMP_PREFIX).expect("temp");
        let b = unique_sibling(entry, TEMP_PREFIX).expect("temp");
        assert_ne!(a, b);
        assert_eq!(a.parent(), entry.parent());
        assert!(file_name(&a).expect("name").starts_with(TEMP_PREFIX));
    }
}
