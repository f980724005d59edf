//! Leases: one computation per key across machines.
//!
//! The process that misses an entry creates `<func>/<args hash>.lease` with
//! `If-None-Match: *`; exactly one creation succeeds. The lease holds an expiry (wall clock,
//! seconds since the epoch): the holder renews it while it computes; once it has expired (a
//! crashed holder), another process replaces it with `If-Match: <ETag>` of the expired
//! version, which again only one process can do. The lease is kept after the entry is
//! written (its existence with the entry costs nothing, and it saves the delete request and
//! a second look at the entry on every miss); it is removed with the entry.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{RemoteStore, Result};

/// The suffix of lease objects (after the entry's `<func>/<args hash>`).
pub const LEASE_SUFFIX: &str = ".lease";

/// The outcome of [`try_acquire`].
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseState {
    /// This process created the lease: no entry was published under a live lease, so the
    /// entry need not be looked up again before computing.
    Created,
    /// This process took over an expired lease: the entry may exist (look again).
    TookOver,
    /// Another process holds it until this time (seconds since the epoch).
    Held {
        /// Expiry of the other holder's lease.
        expires: f64,
    },
}

/// Seconds since the epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn body(ttl: f64, owner: &str) -> Bytes {
    Bytes::from(format!(
        "joblib-rs lease v1\nexpires {:.3}\nowner {owner}\n",
        now() + ttl
    ))
}

/// The expiry written in a lease object; None for an unreadable one (treated as expired).
pub fn parse_expiry(data: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "joblib-rs lease v1" {
        return None;
    }
    lines
        .find_map(|l| l.strip_prefix("expires "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// Try to take the lease `key` for `ttl` seconds on behalf of `owner` (a free-form label,
/// e.g. `host:pid`).
pub fn try_acquire(store: &RemoteStore, key: &str, ttl: f64, owner: &str) -> Result<LeaseState> {
    for _ in 0..3 {
        let (created, _) = store.put_if_absent(key, body(ttl, owner))?;
        if created {
            return Ok(LeaseState::Created);
        }
        let Some((data, e_tag)) = store.get_versioned(key)? else {
            // Released between the two requests: try to create it again.
            continue;
        };
        let expires = parse_expiry(&data).unwrap_or(0.0);
        if expires > now() {
            return Ok(LeaseState::Held { expires });
        }
        // Expired: replace exactly that version, so that of several processes taking over
        // at once only one succeeds.
        let replaced = match e_tag {
            Some(tag) => match store.replace_if(key, body(ttl, owner), &tag) {
                Ok(done) => done,
                Err(super::RemoteError::Store {
                    source:
                        object_store::Error::NotImplemented | object_store::Error::NotSupported { .. },
                    ..
                }) => {
                    store.delete(key)?;
                    continue;
                }
                Err(e) => return Err(e),
            },
            None => {
                store.delete(key)?;
                continue;
            }
        };
        if replaced {
            return Ok(LeaseState::TookOver);
        }
        // Someone else took it over first: it holds a fresh lease.
    }
    Ok(LeaseState::Held {
        expires: now() + ttl,
    })
}

/// Extend the lease this process holds by `ttl` seconds from now.
pub fn renew(store: &RemoteStore, key: &str, ttl: f64, owner: &str) -> Result<()> {
    store.put(key, vec![body(ttl, owner)])
}
