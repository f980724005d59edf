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
//!        read: store::read_entry_open (GIL released) ─ open, [fstat], read, close
//!              (verify: whole entry + LRU access time, once a second per entry)
//!        decode: container parsed, checksums checked ─► pickle.loads(pickle frame)
//!                (outputs with out-of-band buffers, other formats: the Python loader)
//!                ─► kept when small and its version settled (store::FileVersion)
//!        in place: bigger outputs, or mmap_mode ─ the same open file: frames read into
//!                  alloc'd arrays (mapped buffers: left in the file, their checksums read
//!                  once per settled file version) ─► load_frames(frames, path, fd, mode)
//!                  (Python: one map of that fd for every mapped buffer, unpickle)
//!    ─► StoreHit(found, value | damage | size to load by path, args_id)
//! ```
//! Every hit opens `output.jrs` once: the small one reads it, the big or mapped one reads
//! its frames from the same descriptor and maps it.
//!
//! The entry path is the function folder (decided in Python, sanitised there) joined with the
//! hex digest, so a call never builds a path from anything but hex.

use std::collections::HashMap;
use std::fs::File;
use std::io::Cursor;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use joblib_core::format::{self, Dest, FormatError, FrameHead, FrameKind, Sink};
use joblib_core::store::{self, EntryRead, FileVersion, Hit, ReadOptions, TOUCH_INTERVAL_SECS};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::errors::{ToPyErr, format_error, io_error};
use crate::frames::{Frame, PySink};

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
    /// Entries whose mapped payloads were read and their checksums verified, with the
    /// settled version of the output verified (`docs/memory.md`, "Integrity of hits").
    mapped: HashMap<String, FileVersion>,
}

/// How a mapped hit maps the output (`mmap_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapMode {
    /// `'r'`: read-only.
    Read,
    /// `'r+'`: writable, shared with the file.
    Write,
    /// `'w+'`: as `'r+'` for an existing file.
    WritePlus,
    /// `'c'`: copy on write.
    Copy,
}

impl MapMode {
    fn parse(mode: Option<&str>) -> PyResult<Option<Self>> {
        Ok(match mode {
            None => None,
            Some("r") => Some(Self::Read),
            Some("r+") => Some(Self::Write),
            Some("w+") => Some(Self::WritePlus),
            Some("c") => Some(Self::Copy),
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "mmap_mode should be one of None, 'r+', 'r', 'w+', 'c', got {other:?}"
                )));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Read => "r",
            Self::Write => "r+",
            Self::WritePlus => "w+",
            Self::Copy => "c",
        }
    }

    /// Maps writes go to the file: it is opened for writing and mapped frames are marked
    /// mutable first (`docs/format.md`, "Mutable frames").
    fn writable(self) -> bool {
        matches!(self, Self::Write | Self::WritePlus)
    }
}

/// Most mapped entries remembered as verified per reader before the memory is reset.
const MAX_MAPPED: usize = 4096;

/// Reads and decodes the entries of one local store. Remembers which entries it verified
/// (whole entry, access time refreshed for LRU), so that it does so at most once a second
/// each, and the verified pickle of small outputs with their file's version: while `stat`
/// shows the same version, a hit decodes the kept bytes without opening the file
/// (`store::FileVersion` says why that is sound). Also remembers the file version at which
/// each mapped output's payloads were read and their checksums verified: mapped hits of that
/// version (seen by `fstat` on the file they opened) map the payloads without reading them.
#[pyclass(frozen, module = "joblib_rs._core")]
#[derive(Debug)]
pub struct EntryReader {
    /// `pickle.loads`.
    loads: Py<PyAny>,
    /// `bytes -> object` of the Python loader (other formats, outputs with buffers).
    fallback: Py<PyAny>,
    /// The `ContextVar` telling `_rebuild_array` to convert arrays to native byte order.
    ensure_native: Py<PyAny>,
    /// Outputs up to this size are read in memory; bigger ones are read in place.
    read_limit: u64,
    /// `alloc(n)`: a writable buffer of `n` bytes for a frame read in place (a numpy array).
    alloc: Option<Py<PyAny>>,
    /// `load_frames(frames, path, fd, mmap_mode)`: the object of a container whose frames
    /// were read in place from the open file `fd` (mapped buffers: `data` None). Without it
    /// (or `alloc`), bigger and mapped outputs are left to load by path (`StoreHit.size`).
    load_frames: Option<Py<PyAny>>,
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
        if let Ok(mut memory) = self.memory.lock() {
            memory.mapped.remove(entry);
            if let Some(old) = memory.entries.remove(entry) {
                memory.kept_bytes -= old.kept.map_or(0, |k| k.pickle_len());
            }
        }
    }

    /// Whether the mapped payloads of `entry` were verified at this `version` of its output.
    fn mapped_verified(&self, entry: &str, version: Option<FileVersion>) -> bool {
        let Some(version) = version else {
            return false;
        };
        self.memory
            .lock()
            .is_ok_and(|m| m.mapped.get(entry) == Some(&version))
    }

    /// Remember that the mapped payloads of `entry` were verified at `version`, once that
    /// version is settled (a younger file may still change without a new time stamp).
    fn remember_mapped(&self, entry: &str, version: Option<FileVersion>) {
        let Some(version) = version.filter(|v| v.settled(SystemTime::now())) else {
            return;
        };
        if let Ok(mut memory) = self.memory.lock() {
            if memory.mapped.len() >= MAX_MAPPED {
                memory.mapped.clear();
            }
            memory.mapped.insert(entry.to_owned(), version);
        }
    }

    /// Load a container output from its open `file` (one open per hit): frames read into
    /// `alloc`'d buffers, or with `mode` uncompressed buffers left in the file (their
    /// checksums read once per settled version), then `load_frames` builds the object,
    /// mapping `file`. `Ok(None)`: not a container, or no in-place loader (load by path).
    fn load_open(
        &self,
        py: Python<'_>,
        entry: &str,
        mut file: File,
        version: Option<FileVersion>,
        mode: Option<MapMode>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let (Some(alloc), Some(load_frames)) = (&self.alloc, &self.load_frames) else {
            return Ok(None);
        };
        let output = Path::new(entry).join(store::OUTPUT);
        let mut magic = [0u8; 8];
        let head = py.detach(|| file.read_at(&mut magic, 0));
        if !matches!(head, Ok(8)) || magic != format::MAGIC {
            // Another format (a registered compressor's stream): the Python loader, by path.
            return Ok(None);
        }
        let verify_mapped = mode.is_some() && !self.mapped_verified(entry, version);
        let mut sink = PySink::new(alloc.clone_ref(py), mode.is_some(), verify_mapped);
        let read = py.detach(|| format::read_container(&mut file, &mut sink));
        let infos = match read {
            Ok(infos) => infos,
            Err(e) => {
                return Err(match (sink.error.take(), e) {
                    (Some(pyerr), _) => pyerr,
                    (None, FormatError::Io(err)) => io_error(err, &output),
                    (None, other) => format_error(other),
                });
            }
        };
        let frames = sink.frames(infos);
        if mode.is_some_and(MapMode::writable) {
            let regions: Vec<(u64, u64)> = frames
                .iter()
                .filter(|f| f.frame_kind() == FrameKind::Buffer && f.is_mapped())
                .map(Frame::region)
                .collect();
            if !regions.is_empty() {
                py.detach(|| format::mark_mutable(&mut file, &regions))
                    .map_err(|e| match e {
                        FormatError::Io(err) => io_error(err, &output),
                        other => format_error(other),
                    })?;
            }
        }
        let value = load_frames.bind(py).call1((
            frames,
            output.to_string_lossy(),
            file.as_raw_fd(),
            mode.map(MapMode::name),
        ))?;
        drop(file);
        if verify_mapped {
            self.remember_mapped(entry, version);
        }
        Ok(Some(value.unbind()))
    }

    /// Look up and decode `entry`. `mapped`: arrays are memory-mapped with `mode` (without
    /// a mode, every found output is left to load by path).
    fn lookup(
        &self,
        py: Python<'_>,
        entry: &str,
        mapped: bool,
        mode: Option<MapMode>,
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
        let opts = ReadOptions {
            read_limit: if mapped { 0 } else { self.read_limit },
            verify,
            version: true,
            write: mode.is_some_and(MapMode::writable),
        };
        let read = py.detach(|| store::read_entry_open(Path::new(entry), &opts));
        let mut kept = None;
        let outcome = match read {
            Err(e) => Err(e.to_py_err()),
            Ok(EntryRead { hit: Hit::Miss, .. }) => Ok(None),
            Ok(EntryRead {
                hit: Hit::Damaged(reason),
                ..
            }) => {
                out.damage = Some(format!("ValueError: {reason}"));
                Ok(None)
            }
            Ok(EntryRead {
                hit: Hit::Found { data: None, size },
                version,
                file,
            }) => {
                let in_place = match file {
                    Some(file) if !mapped || mode.is_some() => {
                        self.load_open(py, entry, file, version, mode)
                    }
                    _ => Ok(None),
                };
                in_place.inspect(|value| {
                    if value.is_none() {
                        out.size = Some(size);
                    }
                })
            }
            Ok(EntryRead {
                hit: Hit::Found {
                    data: Some(data), ..
                },
                version,
                ..
            }) => self.decode(py, data).map(|(value, pickle)| {
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
    #[pyo3(signature = (loads, fallback, ensure_native, read_limit, alloc = None, load_frames = None))]
    fn new(
        loads: Py<PyAny>,
        fallback: Py<PyAny>,
        ensure_native: Py<PyAny>,
        read_limit: u64,
        alloc: Option<Py<PyAny>>,
        load_frames: Option<Py<PyAny>>,
    ) -> Self {
        Self {
            loads,
            fallback,
            ensure_native,
            read_limit,
            alloc,
            load_frames,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// Look up the entry folder `entry`. A found output comes back decoded: read in memory
    /// up to the read limit, read in place from the same open file when bigger, and with
    /// `mmap_mode` its arrays mapped from that file. With `mapped` and no `mmap_mode` (or a
    /// reader without `load_frames`), outputs read in place come back as their `size`, for
    /// the caller to load by path. The first hit of an entry, then one a second at most,
    /// also checks that the entry is whole and refreshes its access time (LRU). An error
    /// reading or decoding a present entry becomes `damage`, or is raised with `strict`.
    #[pyo3(signature = (entry, mapped = false, strict = false, mmap_mode = None))]
    fn fetch(
        &self,
        py: Python<'_>,
        entry: &str,
        mapped: bool,
        strict: bool,
        mmap_mode: Option<&str>,
    ) -> PyResult<StoreHit> {
        let mode = MapMode::parse(mmap_mode)?;
        self.lookup(py, entry, mapped || mode.is_some(), mode, strict, None)
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
    /// How mapped hits map the output (`mmap_mode`); None with `mapped`: load by path.
    mode: Option<MapMode>,
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
        opaque, coerce_mmap, mapped, mmap_mode = None
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
        mmap_mode: Option<&str>,
    ) -> PyResult<Self> {
        let mode = MapMode::parse(mmap_mode)?;
        Ok(Self {
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
            mapped: mapped || mode.is_some(),
            mode,
        })
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
            .lookup(py, &entry, self.mapped, self.mode, false, Some(args_id))
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
