//! Cache accounting for LRU: a parallel walk of the store and joblib's deletion policy.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use super::entry::remove_entry;
use super::layout::METADATA;
use super::layout::{OUTPUT, is_entry_name, lock_path};
use super::lock::try_lock_for;
use super::owned::is_leftover_name;

/// One cached entry as seen by [`scan_items`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemInfo {
    /// The entry folder.
    pub path: PathBuf,
    /// Total size of its files, in bytes.
    pub size: u64,
    /// Last access: the access time of `output.jrs` (refreshed by hits), else the folder's.
    pub last_access: SystemTime,
}

/// The limits `reduce_size` enforces; `None` means unlimited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total size of all entries.
    pub bytes: Option<u64>,
    /// Number of entries.
    pub items: Option<u64>,
    /// Entries not accessed for longer than this are removed.
    pub age: Option<Duration>,
}

/// Run `f` on this process's rayon pool, or serially when threads are unavailable.
fn in_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match crate::threads::pool() {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// Every entry under `root`, found by walking function folders in parallel. Folders that
/// vanish during the walk (another process clearing them) are skipped, never an error.
pub fn scan_items(root: &Path) -> Vec<ItemInfo> {
    in_pool(|| scan_dir(root))
}

fn scan_dir(dir: &Path) -> Vec<ItemInfo> {
    walk(dir, None).0
}

/// Entries under `dir`, plus (with `stale`: `(now, age)`) the staging and trash leftovers
/// older than `age`, in one parallel walk.
fn walk(dir: &Path, stale: Option<(SystemTime, Duration)>) -> (Vec<ItemInfo>, Vec<PathBuf>) {
    let Ok(listing) = fs::read_dir(dir) else {
        return (Vec::new(), Vec::new());
    };
    let mut subdirs = Vec::new();
    let mut leftovers = Vec::new();
    for item in listing.filter_map(Result::ok) {
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_leftover_name(name) {
            if let Some((now, age)) = stale
                && is_older(&item, now, age)
            {
                leftovers.push(item.path());
            }
        } else if !name.starts_with('.') && item.file_type().is_ok_and(|t| t.is_dir()) {
            subdirs.push((item.path(), is_entry_name(name)));
        }
    }
    let (items, mut found): (Vec<Vec<ItemInfo>>, Vec<Vec<PathBuf>>) = subdirs
        .into_par_iter()
        .map(|(path, is_entry)| {
            if is_entry {
                (entry_info(&path).into_iter().collect(), Vec::new())
            } else {
                walk(&path, stale)
            }
        })
        .unzip();
    found.push(leftovers);
    (
        items.into_iter().flatten().collect(),
        found.into_iter().flatten().collect(),
    )
}

fn is_older(item: &fs::DirEntry, now: SystemTime, age: Duration) -> bool {
    item.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|a| a >= age)
}

/// Size and last access of one entry: one listing and one `stat` per file. A folder holding
/// files the store does not write is not an entry (never evicted).
fn entry_info(dir: &Path) -> Option<ItemInfo> {
    let mut size = 0;
    let mut output_atime = None;
    for item in fs::read_dir(dir).ok()? {
        let item = item.ok()?;
        let meta = item.metadata().ok()?;
        let name = item.file_name();
        let name = name.to_str()?;
        if !meta.is_file() || !(name == OUTPUT || name == METADATA || is_leftover_name(name)) {
            return None;
        }
        size += meta.len();
        if name == OUTPUT {
            output_atime = meta.accessed().ok();
        }
    }
    let last_access = match output_atime {
        Some(atime) => atime,
        None => fs::metadata(dir).and_then(|m| m.accessed()).ok()?,
    };
    Some(ItemInfo {
        path: dir.to_path_buf(),
        size,
        last_access,
    })
}

/// The entries to remove so that what remains fits `limits`, least recently accessed first
/// (joblib's policy: remove in LRU order until the size and count fit and the oldest
/// remaining entry is younger than the age limit).
pub fn select_for_deletion(
    mut items: Vec<ItemInfo>,
    limits: Limits,
    now: SystemTime,
) -> Vec<ItemInfo> {
    let total: u64 = items.iter().map(|i| i.size).sum();
    let excess_bytes = limits.bytes.map_or(0, |b| total.saturating_sub(b));
    let excess_items = limits
        .items
        .map_or(0, |n| (items.len() as u64).saturating_sub(n));
    let deadline = limits.age.and_then(|age| now.checked_sub(age));
    items.sort_by_key(|i| i.last_access);
    let mut freed = 0;
    let mut selected = Vec::new();
    for item in items {
        let young_enough = deadline.is_none_or(|d| item.last_access > d);
        if freed >= excess_bytes && selected.len() as u64 >= excess_items && young_enough {
            break;
        }
        freed += item.size;
        selected.push(item);
    }
    selected
}

/// Remove the entries selected by [`select_for_deletion`] (in parallel) and return them,
/// with staging and trash leftovers older than `stale_age` (left by killed processes) found in
/// the same walk. Entries another process removed meanwhile count as removed.
pub fn reduce_size(root: &Path, limits: Limits, stale_age: Duration) -> Vec<ItemInfo> {
    let now = SystemTime::now();
    in_pool(|| {
        let (items, leftovers) = walk(root, Some((now, stale_age)));
        leftovers.into_par_iter().for_each(|path| {
            remove_leftover(&path);
        });
        select_for_deletion(items, limits, now)
            .into_par_iter()
            .filter(|item| {
                let removed = remove_entry(&item.path).is_ok();
                if removed {
                    remove_idle_lock(&item.path);
                }
                removed
            })
            .collect()
    })
}

/// Remove staging and trash leftovers older than `older_than` (left by killed processes)
/// anywhere under `root`; returns how many were removed.
pub fn remove_stale_temps(root: &Path, older_than: Duration) -> usize {
    in_pool(|| {
        let (_, leftovers) = walk(root, Some((SystemTime::now(), older_than)));
        leftovers
            .into_par_iter()
            .filter(|path| remove_leftover(path))
            .count()
    })
}

/// Remove the lock file of an evicted entry unless someone holds it, so lock files do not pile
/// up as entries come and go. Unlinking it while a process waits on the old file only costs a
/// duplicate computation, never a wrong result (commits are atomic).
fn remove_idle_lock(entry: &Path) {
    let Ok(path) = lock_path(entry) else { return };
    if !path.exists() {
        return;
    }
    if let Ok(Some(lock)) = try_lock_for(&path, Duration::ZERO) {
        let _ = fs::remove_file(&path);
        drop(lock);
    }
}

fn remove_leftover(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).is_ok(),
        Ok(_) => fs::remove_file(path).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{METADATA, Staging};
    use std::fs::{File, FileTimes};

    fn key(i: usize) -> String {
        format!("{i:032x}")
    }

    fn commit(entry: &Path, size: usize, accessed: SystemTime) {
        let staging = Staging::new(entry).expect("stage");
        staging.write(OUTPUT, &vec![7u8; size]).expect("write");
        staging.write(METADATA, b"{}").expect("write");
        staging.commit(true).expect("commit");
        File::open(entry.join(OUTPUT))
            .expect("open")
            .set_times(FileTimes::new().set_accessed(accessed))
            .expect("times");
    }

    fn item(i: u64, size: u64, age_secs: u64, now: SystemTime) -> ItemInfo {
        ItemInfo {
            path: PathBuf::from(key(i as usize)),
            size,
            last_access: now - Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn scan_finds_entries_in_nested_function_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        for (i, func) in ["m/f", "m/sub/g", "h"].iter().enumerate() {
            commit(&dir.path().join(func).join(key(i)), 100 * (i + 1), now);
        }
        fs::create_dir_all(dir.path().join("m/f/.tmp-x")).expect("mkdir");
        let mut items = scan_items(dir.path());
        items.sort_by_key(|i| i.size);
        let sizes: Vec<u64> = items.iter().map(|i| i.size).collect();
        assert_eq!(sizes, vec![102, 202, 302]);
    }

    #[test]
    fn lru_selection_follows_limits() {
        let now = SystemTime::now();
        let items = vec![
            item(1, 10, 30, now),
            item(2, 10, 10, now),
            item(3, 10, 20, now),
        ];
        let pick = |limits| -> Vec<PathBuf> {
            select_for_deletion(items.clone(), limits, now)
                .into_iter()
                .map(|i| i.path)
                .collect()
        };
        assert!(pick(Limits::default()).is_empty());
        let bytes = pick(Limits {
            bytes: Some(15),
            ..Limits::default()
        });
        assert_eq!(bytes, vec![PathBuf::from(key(1)), PathBuf::from(key(3))]);
        let count = pick(Limits {
            items: Some(2),
            ..Limits::default()
        });
        assert_eq!(count, vec![PathBuf::from(key(1))]);
        let age = pick(Limits {
            age: Some(Duration::from_secs(15)),
            ..Limits::default()
        });
        assert_eq!(age, vec![PathBuf::from(key(1)), PathBuf::from(key(3))]);
    }

    #[test]
    fn reduce_size_removes_least_recently_accessed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        for i in 0..6 {
            let accessed = now - Duration::from_secs(1000 * (6 - i as u64));
            commit(&dir.path().join("f").join(key(i)), 98, accessed);
        }
        for i in [0, 1, 5] {
            fs::write(dir.path().join("f").join(format!("{}.lock", key(i))), b"").expect("w");
        }
        let held = try_lock_for(
            &dir.path().join("f").join(format!("{}.lock", key(1))),
            Duration::ZERO,
        )
        .expect("lock")
        .expect("free");
        let removed = reduce_size(
            dir.path(),
            Limits {
                bytes: Some(300),
                ..Limits::default()
            },
            Duration::from_secs(3600),
        );
        assert_eq!(removed.len(), 3);
        let locks: Vec<_> = fs::read_dir(dir.path().join("f"))
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".lock"))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let mut locks = locks;
        locks.sort();
        // Entry 0's idle lock went with it; entry 1's is held; entry 5 was kept.
        assert_eq!(
            locks,
            vec![format!("{}.lock", key(1)), format!("{}.lock", key(5))]
        );
        drop(held);
        let mut left: Vec<_> = scan_items(dir.path()).into_iter().map(|i| i.path).collect();
        left.sort();
        let expected: Vec<_> = (3..6).map(|i| dir.path().join("f").join(key(i))).collect();
        assert_eq!(left, expected);
    }

    #[test]
    fn stale_temps_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Named after this (live) process: only the age sweep may take them.
        let me = std::process::id();
        fs::create_dir_all(dir.path().join(format!("m/f/.tmp-abc-{me}-0-0badcafe")))
            .expect("mkdir");
        fs::write(dir.path().join(format!("m/f/.tmp-code.py-{me}-1-ff")), b"x").expect("write");
        // Dot-names of the user's that merely look alike stay.
        fs::create_dir_all(dir.path().join("m/f/.tmp-notes")).expect("mkdir");
        commit(&dir.path().join("m/f").join(key(1)), 1, SystemTime::now());
        assert_eq!(remove_stale_temps(dir.path(), Duration::from_secs(3600)), 0);
        assert_eq!(remove_stale_temps(dir.path(), Duration::ZERO), 2);
        assert!(dir.path().join("m/f/.tmp-notes").exists());
        assert_eq!(scan_items(dir.path()).len(), 1);
        fs::create_dir_all(dir.path().join("m/.trash-x-1-2-3/deep")).expect("mkdir");
        assert!(reduce_size(dir.path(), Limits::default(), Duration::ZERO).is_empty());
        assert!(!dir.path().join("m/.trash-x-1-2-3").exists());
        assert_eq!(scan_items(dir.path()).len(), 1);
    }

    #[test]
    fn folders_with_foreign_files_are_not_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join("f").join(key(1));
        commit(&entry, 1, SystemTime::now());
        fs::write(entry.join("thesis.tex"), b"mine").expect("write");
        assert!(scan_items(dir.path()).is_empty());
        let limits = Limits {
            items: Some(0),
            ..Limits::default()
        };
        assert!(reduce_size(dir.path(), limits, Duration::ZERO).is_empty());
        assert!(entry.join("thesis.tex").exists());
    }
}
