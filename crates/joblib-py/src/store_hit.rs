//! A `Memory` cache hit in one call: arguments ─► hash ─► entry ─► verified, decoded value.
//!
//! ```text
//!  MemorizedFunc.__call__(*args, **kwargs)
//!    CallPlan.fetch(args, kwargs)                    one crossing into Rust
//!      bind: the signature's plan (built once per function) ─► {name: value} dict
//!        └─ a call that does not bind ─► StoreHit(args_id=None): Python binds, raises
//!      hash: the dict through the canonical hasher (hash.rs) ─► args_id
//!      EntryReader.fetch(<function folder>/<args_id>)
//!        kept: a verified pickle and its file version ─► stat(output.jrs): same version ─►
//!              pickle.loads(kept bytes)                  (no open, no read)
//!        read: store::read_entry_versioned (GIL released) ─ open, [fstat], read, close
//!              (verify: whole entry + LRU access time, once a second per entry)
//!        decode: container parsed, checksums checked ─► pickle.loads(pickle frame)
//!                (outputs with out-of-band buffers, other formats: the Python loader)
//!                ─► kept when small and its version settled (store::FileVersion)
//!    ─► StoreHit(found, value | damage | size to load by path, args_id)
//! ```
//!
//! The entry path is the function folder (decided in Python, sanitised there) joined with the
//! hex digest, so a call never builds a path from anything but hex.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use joblib_core::format::{self, Dest, FormatError, FrameHead, FrameKind, Sink};
use joblib_core::store::{self, FileVersion, Hit, TOUCH_INTERVAL_SECS};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::errors::{ToPyErr, format_error};

/// Entries remembered as verified per reader before the memory is reset.
const MAX_VERIFIED: usize = 4096;
/// Largest pickle kept in memory for stat-only hits, and most bytes kept per reader.
const MAX_KEPT: usize = 64 << 10;
const MAX_KEPT_TOTAL: usize = 16 << 20;
/// The global name a pickle uses to rebuild numpy arrays (`numpy_pickle._rebuild_array`): its
/// presence means the byte-order context applies.
const REBUILD_ARRAY: &[u8] = b"_rebuild_array";

/// What a lookup found, typed: exactly one of `value` (with `found`), `damage`, `size` (the
/// output is loaded by path), or nothing (a miss).
#[pyclass(frozen, module = "joblib_rs._core")]
#[derive(Debug)]
pub struct StoreHit {
    /// The value is in `value`.
    #[pyo3(get)]
    found: bool,
    /// The decoded output (None unless `found`).
    #[pyo3(get)]
    value: Py<PyAny>,
    /// Why a present entry cannot be used (`"CorruptFileError: ..."`): warn and recompute.
    #[pyo3(get)]
    damage: Option<String>,
    /// Size of an output left to be loaded by path (bigger than the read limit, or mapped).
    #[pyo3(get)]
    size: Option<u64>,
    /// The hash of the call's arguments (None when the call did not bind).
    #[pyo3(get)]
    args_id: Option<String>,
}

impl StoreHit {
    fn empty(py: Python<'_>, args_id: Option<String>) -> Self {
        Self {
            found: false,
            value: py.None(),
            damage: None,
            size: None,
            args_id,
        }
    }
}

#[pymethods]
impl StoreHit {
    fn __repr__(&self) -> String {
        let what = if self.found {
            "found".to_owned()
        } else if let Some(d) = &self.damage {
            format!("damaged: {d}")
        } else if let Some(n) = self.size {
            format!("by path, {n} bytes")
        } else {
            "miss".to_owned()
        };
        format!("StoreHit({what}, args_id={:?})", self.args_id)
    }
}

/// Collects the pickle frame of a container; gives up on the first buffer frame (the Python
/// loader rebuilds arrays from buffers).
#[derive(Default)]
struct PickleOnly {
    pickle: Vec<u8>,
    has_buffers: bool,
}

impl Sink for PickleOnly {
    fn frame(&mut self, head: &FrameHead) -> Result<Dest<'_>, FormatError> {
        if head.kind != FrameKind::Pickle {
            self.has_buffers = true;
            return Err(FormatError::Sink(
                "buffer frames are decoded in Python".into(),
            ));
        }
        let len = usize::try_from(head.raw_len)
            .map_err(|_| FormatError::Sink(format!("frame of {} bytes", head.raw_len)))?;
        self.pickle = vec![0; len];
        Ok(Dest::Fill(&mut self.pickle))
    }
}

/// The verified pickle of an entry's output, kept for hits that only `stat` the file.
#[derive(Debug)]
struct Kept {
    version: FileVersion,
    pickle: Py<PyBytes>,
    /// The pickle rebuilds numpy arrays (byte-order context needed).
    rebuild: bool,
    /// Bytes of the pickle.
    len: usize,
}

/// What a reader remembers of an entry.
#[derive(Debug)]
struct Memo {
    verified_at: Instant,
    kept: Option<Kept>,
}

#[derive(Debug, Default)]
struct Memory {
    entries: HashMap<String, Memo>,
    kept_bytes: usize,
}

/// Reads and decodes the entries of one local store. Remembers which entries it verified
/// (whole entry, access time refreshed for LRU), so that it does so at most once a second
/// each, and the verified pickle of small outputs with their file's version: while `stat`
/// shows the same version, a hit decodes the kept bytes without opening the file
/// (`store::FileVersion` says why that is sound).
#[pyclass(frozen, module = "joblib_rs._core")]
#[derive(Debug)]
pub struct EntryReader {
    /// `pickle.loads`.
    loads: Py<PyAny>,
    /// `bytes -> object` of the Python loader (other formats, outputs with buffers).
    fallback: Py<PyAny>,
    /// The `ContextVar` telling `_rebuild_array` to convert arrays to native byte order.
    ensure_native: Py<PyAny>,
    /// Outputs up to this size are read in memory; bigger ones are left to load by path.
    read_limit: u64,
    memory: Mutex<Memory>,
}

/// A decoded pickle worth keeping: the bytes, whether they rebuild arrays, their length.
type Keepable = (Py<PyBytes>, bool, usize);

/// What the memory says about an entry before a lookup.
struct Recall {
    verify: bool,
    kept: Option<(FileVersion, Py<PyBytes>, bool)>,
}

impl EntryReader {
    fn recall(&self, py: Python<'_>, entry: &str, now: Instant) -> Recall {
        let interval = Duration::from_secs(TOUCH_INTERVAL_SECS);
        let Ok(memory) = self.memory.lock() else {
            return Recall {
                verify: true,
                kept: None,
            };
        };
        match memory.entries.get(entry) {
            Some(memo) if now - memo.verified_at <= interval => Recall {
                verify: false,
                kept: memo
                    .kept
                    .as_ref()
                    .map(|k| (k.version, k.pickle.clone_ref(py), k.rebuild)),
            },
            _ => Recall {
                verify: true,
                kept: None,
            },
        }
    }

    /// Remember a verification of `entry` at `now` (and keep its pickle, if given).
    fn remember(&self, entry: &str, now: Instant, kept: Option<Kept>) {
        let Ok(mut memory) = self.memory.lock() else {
            return;
        };
        let added = kept.as_ref().map_or(0, |k| k.pickle_len());
        if memory.entries.len() >= MAX_VERIFIED || memory.kept_bytes + added > MAX_KEPT_TOTAL {
            memory.entries.clear();
            memory.kept_bytes = 0;
        }
        let memo = Memo {
            verified_at: now,
            kept,
        };
        if let Some(old) = memory.entries.insert(entry.to_owned(), memo) {
            memory.kept_bytes -= old.kept.map_or(0, |k| k.pickle_len());
        }
        memory.kept_bytes += added;
    }

    /// Keep a freshly read pickle of an entry verified earlier (its verification time stays).
    fn keep(&self, entry: &str, kept: Kept) {
        let Ok(mut memory) = self.memory.lock() else {
            return;
        };
        let added = kept.pickle_len();
        if memory.kept_bytes + added > MAX_KEPT_TOTAL {
            return;
        }
        if let Some(memo) = memory.entries.get_mut(entry) {
            let old = memo.kept.replace(kept).map_or(0, |k| k.pickle_len());
            memory.kept_bytes = memory.kept_bytes - old + added;
        }
    }

    fn forget_entry(&self, entry: &str) {
        if let Ok(mut memory) = self.memory.lock()
            && let Some(old) = memory.entries.remove(entry)
        {
            memory.kept_bytes -= old.kept.map_or(0, |k| k.pickle_len());
        }
    }

    /// Look up and decode `entry`; `mapped` leaves every found output to load by path.
    fn lookup(
        &self,
        py: Python<'_>,
        entry: &str,
        mapped: bool,
        strict: bool,
        args_id: Option<String>,
    ) -> PyResult<StoreHit> {
        let now = Instant::now();
        let recall = self.recall(py, entry, now);
        let mut out = StoreHit::empty(py, args_id);
        if let (Some((version, pickle, rebuild)), false) = (recall.kept, mapped) {
            let output = Path::new(entry).join(store::OUTPUT);
            if let Ok(Some(current)) = py.detach(|| store::file_version(&output))
                && current == version
            {
                match self.unpickle(py, pickle.bind(py), rebuild) {
                    Ok(value) => {
                        out.found = true;
                        out.value = value;
                        return Ok(out);
                    }
                    Err(err) if !strict && err.is_instance_of::<PyException>(py) => {
                        self.forget_entry(entry);
                        out.damage = Some(describe(py, &err));
                        return Ok(out);
                    }
                    Err(err) => {
                        self.forget_entry(entry);
                        return Err(err);
                    }
                }
            }
        }
        let verify = recall.verify;
        let limit = if mapped { 0 } else { self.read_limit };
        let read =
            py.detach(|| store::read_entry_versioned(Path::new(entry), limit, verify, !mapped));
        let mut kept = None;
        let outcome = match read {
            Err(e) => Err(e.to_py_err()),
            Ok((Hit::Miss, _)) => Ok(None),
            Ok((Hit::Damaged(reason), _)) => {
                out.damage = Some(format!("ValueError: {reason}"));
                Ok(None)
            }
            Ok((Hit::Found { data: None, size }, _)) => {
                out.size = Some(size);
                Ok(None)
            }
            Ok((
                Hit::Found {
                    data: Some(data), ..
                },
                version,
            )) => self.decode(py, data).map(|(value, pickle)| {
                let settled = version.filter(|v| v.settled(SystemTime::now()));
                if let (Some(version), Some((pickle, rebuild, len))) = (settled, pickle) {
                    kept = Some(Kept {
                        version,
                        pickle,
                        rebuild,
                        len,
                    });
                }
                Some(value)
            }),
        };
        match outcome {
            Ok(Some(value)) => {
                out.found = true;
                out.value = value;
            }
            Ok(None) => {}
            Err(err) if !strict && err.is_instance_of::<PyException>(py) => {
                out.damage = Some(describe(py, &err));
            }
            Err(err) => {
                self.forget_entry(entry);
                return Err(err);
            }
        }
        if !(out.found || out.size.is_some()) {
            self.forget_entry(entry);
        } else if verify {
            self.remember(entry, now, kept);
        } else if let Some(kept) = kept {
            self.keep(entry, kept);
        }
        Ok(out)
    }

    /// The object stored in an output file's bytes, and its pickle when it is worth keeping
    /// (a container of only a small pickle frame).
    fn decode(&self, py: Python<'_>, data: Vec<u8>) -> PyResult<(Py<PyAny>, Option<Keepable>)> {
        if !data.starts_with(&format::MAGIC) {
            return Ok((self.decode_in_python(py, &data)?, None));
        }
        let mut sink = PickleOnly::default();
        match format::read_container(&mut Cursor::new(&data[..]), &mut sink) {
            Ok(_) => {}
            Err(_) if sink.has_buffers => return Ok((self.decode_in_python(py, &data)?, None)),
            Err(e) => return Err(format_error(e)),
        }
        let rebuild = contains(&sink.pickle, REBUILD_ARRAY);
        let pickle = PyBytes::new(py, &sink.pickle);
        let value = self.unpickle(py, &pickle, rebuild)?;
        let len = sink.pickle.len();
        let keep = (len <= MAX_KEPT).then(|| (pickle.unbind(), rebuild, len));
        Ok((value, keep))
    }

    /// `pickle.loads`, in the byte-order context of `load` when arrays are rebuilt in band.
    fn unpickle(
        &self,
        py: Python<'_>,
        pickle: &Bound<'_, PyBytes>,
        rebuild: bool,
    ) -> PyResult<Py<PyAny>> {
        let loads = self.loads.bind(py);
        if !rebuild {
            return Ok(loads.call1((pickle,))?.unbind());
        }
        let var = self.ensure_native.bind(py);
        let token = var.call_method1("set", (true,))?;
        let value = loads.call1((pickle,));
        var.call_method1("reset", (token,))?;
        Ok(value?.unbind())
    }

    fn decode_in_python(&self, py: Python<'_>, data: &[u8]) -> PyResult<Py<PyAny>> {
        Ok(self
            .fallback
            .bind(py)
            .call1((PyBytes::new(py, data),))?
            .unbind())
    }
}

impl Kept {
    fn pickle_len(&self) -> usize {
        self.len
    }
}

/// `"TypeName: message"`, as `CacheWarning`s quote errors.
fn describe(py: Python<'_>, err: &PyErr) -> String {
    let name = err
        .get_type(py)
        .name()
        .map_or_else(|_| "Exception".to_owned(), |n| n.to_string());
    format!("{name}: {}", err.value(py))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[pymethods]
impl EntryReader {
    #[new]
    #[pyo3(signature = (loads, fallback, ensure_native, read_limit))]
    fn new(
        loads: Py<PyAny>,
        fallback: Py<PyAny>,
        ensure_native: Py<PyAny>,
        read_limit: u64,
    ) -> Self {
        Self {
            loads,
            fallback,
            ensure_native,
            read_limit,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// Look up the entry folder `entry`. A found output up to the read limit comes back
    /// decoded; a bigger one (or any, with `mapped`) comes back as its `size`, for the caller
    /// to load by path. The first hit of an entry, then one a second at most, also checks
    /// that the entry is whole and refreshes its access time (LRU). An error reading or
    /// decoding a present entry becomes `damage`, or is raised with `strict`.
    #[pyo3(signature = (entry, mapped = false, strict = false))]
    fn fetch(&self, py: Python<'_>, entry: &str, mapped: bool, strict: bool) -> PyResult<StoreHit> {
        self.lookup(py, entry, mapped, strict, None)
    }

    /// Forget that `entry` was verified (its load by path failed): the next hit verifies it.
    fn forget(&self, entry: &str) {
        self.forget_entry(entry);
    }

    /// Entries up to this size are read in memory.
    #[getter]
    fn read_limit(&self) -> u64 {
        self.read_limit
    }
}

/// How a cached function's calls become entries: its signature's binding plan (computed once
/// from `inspect.signature` by `ArgBinder`), the function folder and the store's reader.
#[pyclass(frozen, module = "joblib_rs._core")]
#[derive(Debug)]
pub struct CallPlan {
    reader: Py<EntryReader>,
    /// `<store>/<function id>/`: entry folders are this plus the hex digest.
    prefix: String,
    positional: Vec<Py<PyString>>,
    kwonly: Vec<Py<PyString>>,
    defaults: Py<PyDict>,
    varargs: bool,
    varkw: bool,
    ignore: Vec<Py<PyString>>,
    /// The instance of a bound method (its first argument).
    bound_self: Option<Py<PyAny>>,
    /// Callables without an inspectable signature: keyed by `{"*": [args], "**": kwargs}`.
    opaque: bool,
    coerce_mmap: bool,
    mapped: bool,
}

const STAR: &str = "*";
const STARSTAR: &str = "**";

impl CallPlan {
    /// The dict joblib hashes for this call (`ArgBinder.bind`), or None if the call does not
    /// bind (the Python binder then raises joblib's error).
    fn bind_call<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let empty = PyDict::new(py);
        let kwargs = kwargs.unwrap_or(&empty);
        if self.opaque {
            let bound = PyDict::new(py);
            bound.set_item(STAR, PyList::new(py, args.iter())?)?;
            bound.set_item(STARSTAR, kwargs.copy()?)?;
            return Ok(Some(bound));
        }
        let bound = self.defaults.bind(py).copy()?;
        let shift = usize::from(self.bound_self.is_some());
        let n_args = args.len() + shift;
        let arg = |i: usize| -> Bound<'py, PyAny> {
            match (&self.bound_self, i) {
                (Some(s), 0) => s.bind(py).clone(),
                _ => args
                    .get_borrowed_item(i - shift)
                    .map_or_else(|_| py.None().into_bound(py), |item| item.to_owned()),
            }
        };
        for (i, name) in self.positional.iter().enumerate() {
            let name = name.bind(py);
            if i < n_args {
                if kwargs.contains(name)? {
                    return Ok(None);
                }
                bound.set_item(name, arg(i))?;
            } else if let Some(value) = kwargs.get_item(name)? {
                bound.set_item(name, value)?;
            } else if !bound.contains(name)? {
                return Ok(None);
            }
        }
        let n_pos = self.positional.len();
        if n_args > n_pos {
            if !self.varargs {
                return Ok(None);
            }
            let rest = PyList::new(py, (n_pos..n_args).map(arg))?;
            bound.set_item(STAR, rest)?;
        } else if self.varargs {
            bound.set_item(STAR, PyList::empty(py))?;
        }
        for name in &self.kwonly {
            let name = name.bind(py);
            if let Some(value) = kwargs.get_item(name)? {
                bound.set_item(name, value)?;
            } else if !bound.contains(name)? {
                return Ok(None);
            }
        }
        if !kwargs.is_empty() {
            let extra = PyDict::new(py);
            for (k, v) in kwargs.iter() {
                if !bound.contains(&k)? {
                    extra.set_item(k, v)?;
                }
            }
            if self.varkw {
                bound.set_item(STARSTAR, extra)?;
            } else if !extra.is_empty() {
                return Ok(None);
            }
        } else if self.varkw {
            bound.set_item(STARSTAR, PyDict::new(py))?;
        }
        for name in &self.ignore {
            let name = name.bind(py);
            if bound.contains(name)? {
                bound.del_item(name)?;
            }
        }
        Ok(Some(bound))
    }

    fn args_id_of(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Option<String>> {
        match self.bind_call(py, args, kwargs)? {
            Some(bound) => {
                crate::hash::hash(py, bound.as_any(), "xxh3", self.coerce_mmap).map(Some)
            }
            None => Ok(None),
        }
    }
}

#[pymethods]
impl CallPlan {
    #[new]
    #[pyo3(signature = (
        reader, prefix, positional, kwonly, defaults, varargs, varkw, ignore, bound_self,
        opaque, coerce_mmap, mapped
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        reader: Py<EntryReader>,
        prefix: String,
        positional: Vec<Py<PyString>>,
        kwonly: Vec<Py<PyString>>,
        defaults: Py<PyDict>,
        varargs: bool,
        varkw: bool,
        ignore: Vec<Py<PyString>>,
        bound_self: Option<Py<PyAny>>,
        opaque: bool,
        coerce_mmap: bool,
        mapped: bool,
    ) -> Self {
        Self {
            reader,
            prefix,
            positional,
            kwonly,
            defaults,
            varargs,
            varkw,
            ignore,
            bound_self,
            opaque,
            coerce_mmap,
            mapped,
        }
    }

    /// The dict hashed for a call (as `ArgBinder.bind`), or None if the call does not bind.
    #[pyo3(signature = (args, kwargs = None))]
    fn bind<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.bind_call(py, args, kwargs)
    }

    /// The hash of a call's arguments, or None if the call does not bind.
    #[pyo3(signature = (args, kwargs = None))]
    fn args_id(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Option<String>> {
        self.args_id_of(py, args, kwargs)
    }

    /// Bind, hash, look up and decode a call's entry (see [`EntryReader`]'s `fetch`).
    #[pyo3(signature = (args, kwargs = None))]
    fn fetch(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<StoreHit> {
        let Some(args_id) = self.args_id_of(py, args, kwargs)? else {
            return Ok(StoreHit::empty(py, None));
        };
        let entry = format!("{}{args_id}", self.prefix);
        self.reader
            .get()
            .lookup(py, &entry, self.mapped, false, Some(args_id))
    }

    /// The folder of the function's entries, with a trailing separator.
    #[getter]
    fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The reader of the store.
    #[getter]
    fn reader(&self, py: Python<'_>) -> Py<EntryReader> {
        self.reader.clone_ref(py)
    }
}

/// Register the hit path's classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<StoreHit>()?;
    m.add_class::<EntryReader>()?;
    m.add_class::<CallPlan>()?;
    Ok(())
}
