//! Bindings of `joblib_core::remote`: the object-storage half of `Memory` (`s3://`, `gs://`,
//! `az://`).
//!
//! ```text
//!  _remote_store.py
//!     RemoteStore(url, options, ...)          one client (and tokio runtime) per process
//!       .get_entry(key) ─► None | (metadata bytes, output bytes)   checksums verified
//!       .put_entry(key, metadata, output)     one PUT, or a multipart upload
//!       .try_lease(key, ttl, owner) ─► None (acquired) | expiry of the other holder
//!       .get / .put / .put_if_absent / .delete / .delete_prefix / .list / .head
//!       .scan() / .reduce_size(...)           LRU over one listing
//! ```
//!
//! Every network call runs with the GIL released.

use std::time::Duration;

use bytes::Bytes;
use joblib_core::remote::{self, RemoteStore as CoreStore, Timeouts, entry, lease, scan};
use joblib_core::store::Limits;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::errors::remote_error;

type Listing = Vec<(String, u64, f64)>;

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, got {value}"
        ))
    })
}

/// A client of one bucket and prefix (see `joblib_core::remote`).
#[pyclass(module = "joblib_rs._core", frozen)]
#[derive(Debug)]
pub struct RemoteStore {
    inner: CoreStore,
}

fn bytes_of(py: Python<'_>, chunks: &[Bytes]) -> PyResult<Py<PyBytes>> {
    let len = chunks.iter().map(Bytes::len).sum();
    let out = PyBytes::new_with(py, len, |buf| {
        let mut at = 0;
        for chunk in chunks {
            buf[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len();
        }
        Ok(())
    })?;
    Ok(out.unbind())
}

#[pymethods]
impl RemoteStore {
    /// Open the store at `url`. `options` are the cloud's configuration keys (`endpoint`,
    /// `region`, `access_key_id`, `allow_http`...), on top of its environment variables.
    /// Objects bigger than `range_size` bytes are read by concurrent ranged GETs of that size
    /// (0: one streaming GET).
    #[new]
    #[pyo3(signature = (
        url, options, max_retries=3, retry_timeout=15.0, connect_timeout=5.0,
        range_size=remote::RANGE_CHUNK
    ))]
    fn new(
        py: Python<'_>,
        url: &str,
        options: Vec<(String, String)>,
        max_retries: usize,
        retry_timeout: f64,
        connect_timeout: f64,
        range_size: u64,
    ) -> PyResult<Self> {
        let timeouts = Timeouts {
            max_retries,
            retry_timeout: seconds("retry_timeout", retry_timeout)?,
            connect_timeout: seconds("connect_timeout", connect_timeout)?,
        };
        let inner = py
            .detach(|| CoreStore::open(url, &options, timeouts))
            .map_err(remote_error)?
            .with_range_chunk(range_size);
        Ok(Self { inner })
    }

    /// Requests sent by this client so far.
    #[getter]
    fn requests(&self) -> u64 {
        self.inner.requests()
    }

    /// The entry object at `key`: None if there is none, else `(metadata, output)`, both
    /// checksummed (`CorruptFileError` for a damaged object).
    fn get_entry(&self, py: Python<'_>, key: &str) -> PyResult<Option<(Py<PyBytes>, Py<PyBytes>)>> {
        let found = py
            .detach(|| -> remote::Result<_> {
                match self.inner.get(key)? {
                    Some(chunks) => entry::decode(key, chunks).map(Some),
                    None => Ok(None),
                }
            })
            .map_err(remote_error)?;
        match found {
            None => Ok(None),
            Some((metadata, output)) => Ok(Some((
                PyBytes::new(py, &metadata).unbind(),
                bytes_of(py, &output)?,
            ))),
        }
    }

    /// The metadata of the entry object at `key` and its output's length, without reading
    /// the output (a ranged GET); None if there is none (`CorruptFileError` if damaged).
    fn entry_metadata(&self, py: Python<'_>, key: &str) -> PyResult<Option<(Py<PyBytes>, u64)>> {
        let found = py
            .detach(|| entry::read_metadata(&self.inner, key))
            .map_err(remote_error)?;
        Ok(found.map(|(metadata, output_len)| (PyBytes::new(py, &metadata).unbind(), output_len)))
    }

    /// Publish the entry object at `key` (replacing any): visible whole or not at all.
    fn put_entry(
        &self,
        py: Python<'_>,
        key: &str,
        metadata: PyBackedBytes,
        output: PyBackedBytes,
    ) -> PyResult<()> {
        let output = Bytes::from_owner(output);
        py.detach(|| {
            let chunks = entry::encode(&metadata, vec![output]);
            self.inner.put(key, chunks)
        })
        .map_err(remote_error)
    }

    /// The object at `key`, or None.
    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Option<Py<PyBytes>>> {
        let found = py.detach(|| self.inner.get(key)).map_err(remote_error)?;
        found.map(|chunks| bytes_of(py, &chunks)).transpose()
    }

    /// Write `data` at `key`, replacing any object.
    fn put(&self, py: Python<'_>, key: &str, data: PyBackedBytes) -> PyResult<()> {
        let data = Bytes::from_owner(data);
        py.detach(|| self.inner.put(key, vec![data]))
            .map_err(remote_error)
    }

    /// Create `key` only if absent; whether it was created.
    fn put_if_absent(&self, py: Python<'_>, key: &str, data: PyBackedBytes) -> PyResult<bool> {
        let data = Bytes::from_owner(data);
        py.detach(|| self.inner.put_if_absent(key, data))
            .map(|(created, _)| created)
            .map_err(remote_error)
    }

    /// Remove `key` (a missing object is fine).
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        py.detach(|| self.inner.delete(key)).map_err(remote_error)
    }

    /// Remove every object under `prefix`; returns how many there were.
    fn delete_prefix(&self, py: Python<'_>, prefix: &str) -> PyResult<usize> {
        py.detach(|| self.inner.delete_prefix(prefix))
            .map_err(remote_error)
    }

    /// `(key, size, modified)` of every object under `prefix`.
    fn list(&self, py: Python<'_>, prefix: &str) -> PyResult<Listing> {
        let listing = py
            .detach(|| self.inner.list(prefix))
            .map_err(remote_error)?;
        Ok(listing
            .into_iter()
            .map(|l| (l.key, l.size, l.modified))
            .collect())
    }

    /// `(size, modified)` of `key`, or None.
    fn head(&self, py: Python<'_>, key: &str) -> PyResult<Option<(u64, f64)>> {
        let found = py.detach(|| self.inner.head(key)).map_err(remote_error)?;
        Ok(found.map(|l| (l.size, l.modified)))
    }

    /// Try to take the lease `key` for `ttl` seconds: `("created", 0.0)` (no entry can
    /// have been published meanwhile), `("taken", 0.0)` (an expired lease taken over: look
    /// for the entry again) or `("held", expiry)` when another process holds it.
    fn try_lease(
        &self,
        py: Python<'_>,
        key: &str,
        ttl: f64,
        owner: &str,
    ) -> PyResult<(&'static str, f64)> {
        let state = py
            .detach(|| lease::try_acquire(&self.inner, key, ttl, owner))
            .map_err(remote_error)?;
        Ok(match state {
            lease::LeaseState::Created => ("created", 0.0),
            lease::LeaseState::TookOver => ("taken", 0.0),
            lease::LeaseState::Held { expires } => ("held", expires),
        })
    }

    /// Extend the lease this process holds on `key` to `ttl` seconds from now.
    fn renew_lease(&self, py: Python<'_>, key: &str, ttl: f64, owner: &str) -> PyResult<()> {
        py.detach(|| lease::renew(&self.inner, key, ttl, owner))
            .map_err(remote_error)
    }

    /// Remove the objects the store created under `prefix` ("" for all) and leave the rest:
    /// `(objects removed, entries among them, keys skipped)`.
    fn clear_own(&self, py: Python<'_>, prefix: &str) -> PyResult<(usize, usize, Vec<String>)> {
        let cleared = py
            .detach(|| scan::clear_own(&self.inner, prefix))
            .map_err(remote_error)?;
        Ok((cleared.removed, cleared.entries, cleared.skipped))
    }

    /// `(entry, size, last access)` of every entry (one listing).
    fn scan(&self, py: Python<'_>) -> PyResult<Listing> {
        let items = py
            .detach(|| scan::scan(&self.inner))
            .map_err(remote_error)?;
        Ok(items
            .into_iter()
            .map(|i| (i.entry, i.size, i.last_access))
            .collect())
    }

    /// Remove least recently used entries until the store fits the limits (and leases
    /// without an entry older than `stale_lease_age` seconds); returns the entries removed
    /// (or that would be, with `dry_run`) as `(entry, size, last access)`.
    #[pyo3(signature = (bytes_limit, items_limit, age_limit, stale_lease_age, dry_run=false))]
    fn reduce_size(
        &self,
        py: Python<'_>,
        bytes_limit: Option<u64>,
        items_limit: Option<u64>,
        age_limit: Option<f64>,
        stale_lease_age: f64,
        dry_run: bool,
    ) -> PyResult<Listing> {
        let limits = Limits {
            bytes: bytes_limit,
            items: items_limit,
            age: age_limit.map(|a| seconds("age_limit", a)).transpose()?,
        };
        let removed = py
            .detach(|| scan::reduce_size(&self.inner, limits, stale_lease_age, dry_run))
            .map_err(remote_error)?;
        Ok(removed
            .into_iter()
            .map(|i| (i.entry, i.size, i.last_access))
            .collect())
    }
}

/// The lowercase scheme of a `scheme://...` URL, or None for a path.
#[pyfunction]
fn url_scheme(location: &str) -> Option<String> {
    remote::url_scheme(location)
}

/// Add the remote store to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("REMOTE_ENTRY_NAME", entry::ENTRY_NAME)?;
    m.add("REMOTE_LEASE_SUFFIX", lease::LEASE_SUFFIX)?;
    m.add("REMOTE_ATIME_SUFFIX", scan::ATIME_SUFFIX)?;
    m.add_class::<RemoteStore>()?;
    m.add_function(wrap_pyfunction!(url_scheme, m)?)?;
    Ok(())
}
