//! Bindings of `joblib_core::store`: the file-system half of `Memory`.
//!
//! ```text
//!  memory.py / _store_backends.py
//!     EntryReader / CallPlan (store_hit.rs) ─► StoreHit      a hit: find, verify, decode
//!     store_lock(entry, timeout) ─► EntryLock | None      waits in slices, GIL released
//!     Staging(entry) .path .write() .commit()           atomic publication of an entry
//!     store_scan / store_reduce_size / store_sweep / store_remove / store_clear / write_atomic
//! ```
//!
//! Every function releases the GIL around its file-system work.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use joblib_core::store::{self, Limits};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::CoreResultExt;

/// Longest uninterrupted wait on a lock before checking for Ctrl-C.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// An exclusive lock on one entry (see `joblib_core::store::lock`); `release()` or garbage
/// collection frees it.
#[pyclass(module = "joblib_rs._core")]
#[derive(Debug)]
pub struct EntryLock {
    inner: Option<store::EntryLock>,
}

#[pymethods]
impl EntryLock {
    /// Release the lock (idempotent).
    fn release(&mut self) {
        self.inner = None;
    }

    /// Whether the lock is still held.
    #[getter]
    fn held(&self) -> bool {
        self.inner.is_some()
    }
}

/// Lock the entry folder `entry`, waiting at most `timeout` seconds (with the GIL released,
/// Ctrl-C checked between slices). `None` if another owner still holds it at the deadline.
#[pyfunction]
pub fn store_lock(py: Python<'_>, entry: PathBuf, timeout: f64) -> PyResult<Option<EntryLock>> {
    if !timeout.is_finite() || timeout < 0.0 {
        return Err(PyValueError::new_err(format!(
            "lock timeout must be a non-negative number of seconds, got {timeout}"
        )));
    }
    let path = store::lock_path(&entry).into_py_result()?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(WAIT_SLICE);
        let got = py
            .detach(|| store::try_lock_for(&path, slice))
            .into_py_result()?;
        if let Some(lock) = got {
            return Ok(Some(EntryLock { inner: Some(lock) }));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        py.check_signals()?;
    }
}

/// An entry being written: write its files into `path`, then `commit()`. Dropped
/// uncommitted (or `abort()`), its folder is removed.
#[pyclass(module = "joblib_rs._core")]
#[derive(Debug)]
pub struct Staging {
    inner: Option<store::Staging>,
    path: String,
}

#[pymethods]
impl Staging {
    #[new]
    fn new(py: Python<'_>, entry: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| store::Staging::new(&entry)).into_py_result()?;
        let path = inner.path().to_string_lossy().into_owned();
        Ok(Self {
            inner: Some(inner),
            path,
        })
    }

    /// The staging folder.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// Write `data` to the file `name` of the staging folder.
    fn write(&self, py: Python<'_>, name: &str, data: &[u8]) -> PyResult<()> {
        let Some(inner) = self.inner.as_ref() else {
            return Err(PyValueError::new_err(
                "staging already committed or aborted",
            ));
        };
        py.detach(|| inner.write(name, data)).into_py_result()
    }

    /// Publish the entry, replacing any entry already there; `durable` syncs it first.
    #[pyo3(signature = (durable = false))]
    fn commit(&mut self, py: Python<'_>, durable: bool) -> PyResult<()> {
        let Some(inner) = self.inner.take() else {
            return Err(PyValueError::new_err(
                "staging already committed or aborted",
            ));
        };
        py.detach(|| inner.commit(durable)).into_py_result()
    }

    /// Remove the staging folder without publishing it.
    fn abort(&mut self, py: Python<'_>) {
        if let Some(inner) = self.inner.take() {
            py.detach(|| drop(inner));
        }
    }
}

type ClearTuple = (usize, usize, Vec<String>);

fn clear_tuple(report: store::ClearReport) -> ClearTuple {
    let skipped = report
        .skipped
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    (report.functions, report.entries, skipped)
}

/// Remove an entry folder or a function folder, only what the store created in it (entries
/// renamed aside first); absent is not an error. Returns `(functions, entries, skipped)`.
#[pyfunction]
pub fn store_remove(py: Python<'_>, path: PathBuf) -> PyResult<ClearTuple> {
    py.detach(|| {
        let is_entry = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(store::is_entry_name);
        if is_entry {
            let mut report = store::ClearReport::default();
            store::clear_entry(&path, &mut report).map(|()| report)
        } else {
            store::clear_tree(&path, false)
        }
    })
    .into_py_result()
    .map(clear_tuple)
}

/// Remove what the store created under the store root `path` (which stays, with its marker
/// and `.gitignore`). Returns `(functions, entries, skipped)`: the paths left in place.
#[pyfunction]
pub fn store_clear(py: Python<'_>, path: PathBuf) -> PyResult<ClearTuple> {
    py.detach(|| store::clear_tree(&path, true))
        .into_py_result()
        .map(clear_tuple)
}

/// Write the store marker in `root` unless present. With `only_if_store`, a folder without
/// the marker gets one only if it holds a store of an earlier version (a `func_code.py` in
/// some folder under it). Returns whether `root` now carries the marker.
#[pyfunction]
#[pyo3(signature = (root, only_if_store=false))]
pub fn store_mark(py: Python<'_>, root: PathBuf, only_if_store: bool) -> PyResult<bool> {
    py.detach(|| {
        if store::has_marker(&root) {
            return Ok(true);
        }
        if only_if_store && !store::looks_like_store(&root) {
            return Ok(false);
        }
        store::write_marker(&root).map(|()| true)
    })
    .into_py_result()
}

/// Write `data` to `path` atomically (synced temporary file renamed over it).
#[pyfunction]
pub fn store_write_atomic(py: Python<'_>, path: PathBuf, data: &[u8]) -> PyResult<()> {
    py.detach(|| store::write_file_atomic(&path, data))
        .into_py_result()
}

fn item_tuple(item: store::ItemInfo) -> (String, u64, f64) {
    let atime = item
        .last_access
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    (item.path.to_string_lossy().into_owned(), item.size, atime)
}

/// Every entry under `root` as `(path, size, last_access_timestamp)`, walked in parallel.
#[pyfunction]
pub fn store_scan(py: Python<'_>, root: PathBuf) -> Vec<(String, u64, f64)> {
    py.detach(|| store::scan_items(&root))
        .into_iter()
        .map(item_tuple)
        .collect()
}

/// Remove least recently used entries under `root` until it fits the limits (`None`:
/// unlimited; `age_limit` in seconds); returns the removed entries as `store_scan` does.
/// Staging and trash leftovers older than `stale_age` seconds are removed in the same walk.
/// With `dry_run`, nothing is removed: returns the entries that would be.
#[pyfunction]
#[pyo3(signature = (
    root, bytes_limit=None, items_limit=None, age_limit=None, stale_age=3600.0, dry_run=false
))]
pub fn store_reduce_size(
    py: Python<'_>,
    root: PathBuf,
    bytes_limit: Option<u64>,
    items_limit: Option<u64>,
    age_limit: Option<f64>,
    stale_age: f64,
    dry_run: bool,
) -> PyResult<Vec<(String, u64, f64)>> {
    let age = match age_limit {
        Some(secs) if !secs.is_finite() || secs < 0.0 => {
            return Err(PyValueError::new_err(
                "age_limit has to be a positive timedelta",
            ));
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let stale = Duration::from_secs_f64(if stale_age.is_finite() {
        stale_age.max(0.0)
    } else {
        0.0
    });
    let limits = Limits {
        bytes: bytes_limit,
        items: items_limit,
        age,
    };
    Ok(py
        .detach(|| {
            if dry_run {
                store::select_for_deletion(store::scan_items(&root), limits, SystemTime::now())
            } else {
                store::reduce_size(&root, limits, stale)
            }
        })
        .into_iter()
        .map(item_tuple)
        .collect())
}

/// Remove staging and trash leftovers older than `older_than` seconds under `root`.
#[pyfunction]
pub fn store_sweep(py: Python<'_>, root: PathBuf, older_than: f64) -> usize {
    let older_than = Duration::from_secs_f64(older_than.max(0.0));
    py.detach(|| store::remove_stale_temps(&root, older_than))
}

/// Register the store bindings on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("STORE_DIR", store::STORE_DIR)?;
    m.add("STORE_OUTPUT", store::OUTPUT)?;
    m.add("STORE_METADATA", store::METADATA)?;
    m.add("STORE_FUNC_CODE", store::FUNC_CODE)?;
    m.add("STORE_MARKER", store::MARKER)?;
    m.add("STORE_VERSION", store::STORE_VERSION)?;
    m.add_class::<EntryLock>()?;
    m.add_class::<Staging>()?;
    m.add_function(wrap_pyfunction!(store_lock, m)?)?;
    m.add_function(wrap_pyfunction!(store_remove, m)?)?;
    m.add_function(wrap_pyfunction!(store_clear, m)?)?;
    m.add_function(wrap_pyfunction!(store_mark, m)?)?;
    m.add_function(wrap_pyfunction!(store_write_atomic, m)?)?;
    m.add_function(wrap_pyfunction!(store_scan, m)?)?;
    m.add_function(wrap_pyfunction!(store_reduce_size, m)?)?;
    m.add_function(wrap_pyfunction!(store_sweep, m)?)?;
    Ok(())
}
