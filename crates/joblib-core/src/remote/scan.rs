//! LRU accounting of the remote store: one listing gives every entry's size and last access.
//!
//! Hits do not rewrite entries. A hit writes the empty object `<func>/<args hash>.atime` at
//! most once per interval per process and entry (the caller decides when); the entry's last
//! access is the later of its own and its `.atime`'s `Last-Modified`, both of which the
//! listing returns, so `reduce_size` costs one LIST request per 1,000 objects plus the
//! deletions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::entry::ENTRY_NAME;
use super::lease::LEASE_SUFFIX;
use super::{Listed, RemoteStore, Result};
use crate::store::{FUNC_CODE, ItemInfo, Limits, is_entry_name, select_for_deletion};

/// The suffix of access-time marker objects.
pub const ATIME_SUFFIX: &str = ".atime";

/// One entry of the remote store.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteItem {
    /// `<func>/<args hash>`, relative to the store root (as listed, percent-encoded).
    pub entry: String,
    /// Size of the entry object.
    pub size: u64,
    /// Last access, seconds since the epoch.
    pub last_access: f64,
}

#[derive(Default)]
struct Seen {
    size: Option<u64>,
    written: f64,
    accessed: f64,
    lease: Option<f64>,
}

fn group(listing: Vec<Listed>) -> HashMap<String, Seen> {
    let mut entries: HashMap<String, Seen> = HashMap::new();
    for object in listing {
        let key = object.key.as_str();
        if let Some(entry) = key
            .strip_suffix(ENTRY_NAME)
            .and_then(|k| k.strip_suffix('/'))
        {
            let seen = entries.entry(entry.to_owned()).or_default();
            seen.size = Some(object.size);
            seen.written = object.modified;
        } else if let Some(entry) = key.strip_suffix(ATIME_SUFFIX) {
            entries.entry(entry.to_owned()).or_default().accessed = object.modified;
        } else if let Some(entry) = key.strip_suffix(LEASE_SUFFIX) {
            entries.entry(entry.to_owned()).or_default().lease = Some(object.modified);
        }
    }
    entries
}

/// Every entry of the store (one listing).
pub fn scan(store: &RemoteStore) -> Result<Vec<RemoteItem>> {
    Ok(group(store.list("")?)
        .into_iter()
        .filter_map(|(entry, seen)| {
            seen.size.map(|size| RemoteItem {
                entry,
                size,
                last_access: seen.written.max(seen.accessed),
            })
        })
        .collect())
}

fn to_system_time(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0))
}

/// The keys of an entry's objects (entry, access marker, lease).
pub fn entry_keys(entry: &str) -> [String; 3] {
    [
        format!("{entry}/{ENTRY_NAME}"),
        format!("{entry}{ATIME_SUFFIX}"),
        format!("{entry}{LEASE_SUFFIX}"),
    ]
}

/// Remove the least recently used entries until the store fits `limits` (the local store's
/// policy, [`select_for_deletion`]), and leases without an entry last written more than
/// `stale_lease_age` seconds ago (left by killed processes). Returns the entries removed (or
/// that would be, with `dry_run`).
pub fn reduce_size(
    store: &RemoteStore,
    limits: Limits,
    stale_lease_age: f64,
    dry_run: bool,
) -> Result<Vec<RemoteItem>> {
    let entries = group(store.list("")?);
    let now = super::lease::now();
    let mut stale = Vec::new();
    let mut items = Vec::new();
    for (entry, seen) in &entries {
        match seen.size {
            Some(size) => items.push(ItemInfo {
                path: PathBuf::from(entry),
                size,
                last_access: to_system_time(seen.written.max(seen.accessed)),
            }),
            None => {
                if seen.lease.is_some_and(|t| now - t > stale_lease_age) {
                    stale.push(format!("{entry}{LEASE_SUFFIX}"));
                }
            }
        }
    }
    let selected = select_for_deletion(items, limits, SystemTime::now());
    let removed: Vec<RemoteItem> = selected
        .into_iter()
        .map(|item| {
            let entry = item.path.to_string_lossy().into_owned();
            let last_access = item
                .last_access
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            RemoteItem {
                entry,
                size: item.size,
                last_access,
            }
        })
        .collect();
    if !dry_run {
        let mut keys: Vec<String> = removed.iter().flat_map(|i| entry_keys(&i.entry)).collect();
        keys.extend(stale);
        store.delete_listed(&keys)?;
    }
    Ok(removed)
}

/// Whether the listed `key` is an object the store creates: a function's `func_code.py`, an
/// entry `<args hash>/entry.jrs`, or an entry's `<args hash>.lease` / `<args hash>.atime`.
pub fn is_own_key(key: &str) -> bool {
    let mut parts = key.rsplit('/');
    let name = parts.next().unwrap_or_default();
    if name == FUNC_CODE {
        return true;
    }
    if name == ENTRY_NAME {
        return parts.next().is_some_and(is_entry_name);
    }
    [ATIME_SUFFIX, LEASE_SUFFIX]
        .iter()
        .any(|suffix| name.strip_suffix(suffix).is_some_and(is_entry_name))
}

/// What [`clear_own`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Cleared {
    /// Objects removed.
    pub removed: usize,
    /// Entries among them.
    pub entries: usize,
    /// Keys under the prefix that the store did not create, left in place.
    pub skipped: Vec<String>,
}

/// Remove the objects the store created under `prefix` ("" for the whole store), leaving
/// anything else in place (one listing, then bulk deletes).
pub fn clear_own(store: &RemoteStore, prefix: &str) -> Result<Cleared> {
    let mut cleared = Cleared::default();
    let mut own = Vec::new();
    for object in store.list(prefix)? {
        if is_own_key(&object.key) {
            if object.key.ends_with(ENTRY_NAME) {
                cleared.entries += 1;
            }
            own.push(object.key);
        } else {
            cleared.skipped.push(object.key);
        }
    }
    store.delete_listed(&own)?;
    cleared.removed = own.len();
    Ok(cleared)
}
