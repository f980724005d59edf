//! Bindings of the persistence core (`joblib_core::format`, `joblib_core::codec`) used by
//! `joblib_rs.numpy_pickle`.
//!
//! ```text
//!  dump: pickle bytes + PickleBuffer.raw() views ─► write_path / write_fileobj ─► file
//!  load: file path / bytes ─► read_path / read_bytes ─► alloc(n) gives each destination buffer
//!        (a numpy uint8 array), filled in place without the GIL ─► [Frame] (frames.rs)
//!  inspect: file path ─► inspect_path ─► every frame verified and discarded ─► dict
//! ```
//! Every long operation runs inside `py.detach`; the Python objects whose memory Rust reads
//! or writes are kept referenced for the whole call.

use std::fs::File;
use std::io::{self, Cursor, Write};
use std::path::PathBuf;

use joblib_core::codec::{self, Codec};
use joblib_core::format::{self, FormatError, FrameInfo, FrameKind, WriteOptions};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict};

use crate::errors::{format_error, io_error};
use crate::frames::{Frame, FrameReport, PySink};

/// A byte region of a Python buffer, as plain numbers so it can cross `detach`.
#[derive(Clone, Copy)]
pub(crate) struct Region {
    pub(crate) ptr: usize,
    pub(crate) len: usize,
}

impl Region {
    /// # Safety
    /// The buffer export the region was taken from must still be held.
    unsafe fn slice<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: guaranteed by the caller: ptr/len describe a live, exported buffer.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

fn contiguous(obj: &Bound<'_, PyAny>) -> PyResult<(PyUntypedBuffer, Region)> {
    let buf = PyUntypedBuffer::get(obj)?;
    if !buf.is_c_contiguous() {
        return Err(crate::errors::not_contiguous());
    }
    let region = Region {
        ptr: buf.buf_ptr() as usize,
        len: buf.len_bytes(),
    };
    Ok((buf, region))
}

fn options(codec: &str, level: i32, durable: bool) -> PyResult<WriteOptions> {
    let codec = Codec::from_name(codec).map_err(|e| format_error(FormatError::Options(e)))?;
    if codec != Codec::None {
        codec
            .check_level(level)
            .map_err(|e| format_error(FormatError::Options(e)))?;
    }
    Ok(WriteOptions {
        codec,
        level,
        chunk: codec::CHUNK,
        durable,
    })
}

/// Export every buffer; the returned exports keep the memory alive and unmoved.
fn export_all(
    buffers: &[Bound<'_, PyAny>],
    pickle: &Bound<'_, PyAny>,
) -> PyResult<(Vec<PyUntypedBuffer>, Vec<Region>, Region)> {
    let mut held = Vec::with_capacity(buffers.len() + 1);
    let mut regions = Vec::with_capacity(buffers.len());
    for b in buffers {
        let (buf, region) = contiguous(b)?;
        held.push(buf);
        regions.push(region);
    }
    let (pbuf, pregion) = contiguous(pickle)?;
    held.push(pbuf);
    Ok((held, regions, pregion))
}

/// Write a container atomically to `path` (temporary file, rename; with `durable`, fsync of
/// the file and its folder before and after the rename). Returns its size.
#[pyfunction]
#[pyo3(signature = (path, buffers, pickle, codec, level, durable=true))]
pub fn write_path(
    py: Python<'_>,
    path: PathBuf,
    buffers: Vec<Bound<'_, PyAny>>,
    pickle: Bound<'_, PyAny>,
    codec: &str,
    level: i32,
    durable: bool,
) -> PyResult<u64> {
    let opts = options(codec, level, durable)?;
    let (held, regions, pregion) = export_all(&buffers, &pickle)?;
    let target = path.clone();
    let res = py.detach(move || {
        // SAFETY: every region comes from an export in `held`, which lives until after this
        // closure returns; exported buffers cannot be resized or freed while exported.
        let slices: Vec<&[u8]> = regions.iter().map(|r| unsafe { r.slice() }).collect();
        // SAFETY: as above, the pickle's export is the last element of `held`.
        let pickle = unsafe { pregion.slice() };
        format::write_file_atomic(&target, &slices, pickle, &opts)
    });
    drop(held);
    res.map_err(|e| match e {
        FormatError::Io(err) => io_error(err, &path),
        other => format_error(other),
    })
}

/// `Write` into a Python file object: each call takes the GIL for one `write` of at most
/// `PIECE` bytes (copied into a `bytes`, so memory stays bounded whatever the file keeps).
struct PyFileWriter {
    file: Py<PyAny>,
}

const PIECE: usize = 8 << 20;

impl Write for PyFileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(PIECE);
        Python::attach(|py| {
            let bytes = PyBytes::new(py, &buf[..n]);
            let written = self.file.bind(py).call_method1("write", (bytes,))?;
            // Raw files may write less than asked and return the count; buffered files
            // return the full count or None.
            if written.is_none() {
                Ok(n)
            } else {
                written.extract::<usize>().map(|w| w.min(n))
            }
        })
        .map_err(io::Error::other)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write a container into a Python file object (any object with `write`, seekable or not).
#[pyfunction]
#[pyo3(signature = (fileobj, buffers, pickle, codec, level))]
pub fn write_fileobj(
    py: Python<'_>,
    fileobj: Py<PyAny>,
    buffers: Vec<Bound<'_, PyAny>>,
    pickle: Bound<'_, PyAny>,
    codec: &str,
    level: i32,
) -> PyResult<u64> {
    let opts = options(codec, level, false)?;
    let (held, regions, pregion) = export_all(&buffers, &pickle)?;
    let res = py.detach(move || {
        // SAFETY: the regions come from exports in `held`, alive until after this closure.
        let slices: Vec<&[u8]> = regions.iter().map(|r| unsafe { r.slice() }).collect();
        // SAFETY: as above.
        let pickle = unsafe { pregion.slice() };
        let out = io::BufWriter::with_capacity(1 << 20, PyFileWriter { file: fileobj });
        format::write_container(out, &slices, pickle, &opts)
    });
    drop(held);
    res.map_err(|e| match e {
        FormatError::Io(err) => match err.downcast::<PyErr>() {
            Ok(pyerr) => pyerr,
            Err(err) => format_error(FormatError::Io(err)),
        },
        other => format_error(other),
    })
}

fn finish_read(
    res: Result<Vec<FrameInfo>, FormatError>,
    mut sink: PySink,
    path: Option<&PathBuf>,
) -> PyResult<Vec<Frame>> {
    match res {
        Ok(infos) => Ok(sink.frames(infos)),
        Err(e) => Err(match (sink.error.take(), e) {
            (Some(pyerr), _) => pyerr,
            (None, FormatError::Io(err)) => match path {
                Some(p) => io_error(err, p),
                None => format_error(FormatError::Io(err)),
            },
            (None, other) => format_error(other),
        }),
    }
}

/// Read a container file. Returns a [`Frame`] for each buffer then the pickle frame; its
/// `data` is `alloc(raw_len)` filled with the payload, or `None` for uncompressed buffers
/// skipped under `skip_buffers` (whose checksums are still verified, reading them once, with
/// `verify_skipped`).
#[pyfunction]
#[pyo3(signature = (path, alloc, skip_buffers=false, verify_skipped=false))]
pub fn read_path(
    py: Python<'_>,
    path: PathBuf,
    alloc: Py<PyAny>,
    skip_buffers: bool,
    verify_skipped: bool,
) -> PyResult<Vec<Frame>> {
    let mut sink = PySink::new(alloc, skip_buffers, verify_skipped);
    let res = py.detach(|| {
        let mut file = File::open(&path)?;
        format::read_container(&mut file, &mut sink)
    });
    finish_read(res, sink, Some(&path))
}

/// Read a container held in memory (a bytes-like object), as [`read_path`].
#[pyfunction]
#[pyo3(signature = (data, alloc))]
pub fn read_bytes(
    py: Python<'_>,
    data: Bound<'_, PyAny>,
    alloc: Py<PyAny>,
) -> PyResult<Vec<Frame>> {
    let (held, region) = contiguous(&data)?;
    let mut sink = PySink::new(alloc, false, false);
    let res = py.detach(|| {
        // SAFETY: `held` keeps the export alive until after this closure.
        let bytes = unsafe { region.slice() };
        format::read_container(&mut Cursor::new(bytes), &mut sink)
    });
    drop(held);
    finish_read(res, sink, None)
}

/// `Read` from a Python file object (its `read`), after `prefix` (bytes the caller already
/// read to detect the format). Each call takes the GIL for one `read` of at most `PIECE`.
struct PyFileSource {
    file: Py<PyAny>,
    prefix: Vec<u8>,
    at: usize,
    /// Bytes the object holds from the prefix on, when known (a regular file).
    size: Option<u64>,
    /// Bytes returned so far, prefix included.
    consumed: u64,
}

impl io::Read for PyFileSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.at);
            buf[..n].copy_from_slice(&self.prefix[self.at..self.at + n]);
            self.at += n;
            self.consumed += n as u64;
            return Ok(n);
        }
        let want = buf.len().min(PIECE);
        Python::attach(|py| -> PyResult<usize> {
            let data = self.file.bind(py).call_method1("read", (want,))?;
            if data.is_none() {
                return Ok(0);
            }
            let (held, region) = contiguous(&data)?;
            let n = region.len.min(want);
            // SAFETY: `held` keeps the export of `data` alive while it is copied.
            buf[..n].copy_from_slice(&unsafe { region.slice() }[..n]);
            drop(held);
            Ok(n)
        })
        .map_err(io::Error::other)
        .inspect(|&n| self.consumed += n as u64)
    }
}

impl format::Source for PyFileSource {
    fn bound(&mut self) -> Option<u64> {
        self.size.map(|s| s.saturating_sub(self.consumed))
    }
}

/// Read a container from a Python file object (streaming, in place), as [`read_path`];
/// `prefix` holds the bytes already read from it. `size`, when known (a regular file), is
/// how many bytes the object holds from the prefix on: lengths are checked against it.
#[pyfunction]
#[pyo3(signature = (fileobj, prefix, alloc, size=None))]
pub fn read_fileobj(
    py: Python<'_>,
    fileobj: Py<PyAny>,
    prefix: Vec<u8>,
    alloc: Py<PyAny>,
    size: Option<u64>,
) -> PyResult<Vec<Frame>> {
    let mut sink = PySink::new(alloc, false, false);
    let mut source = PyFileSource {
        file: fileobj,
        prefix,
        at: 0,
        size,
        consumed: 0,
    };
    let res = py.detach(|| format::read_container(&mut source, &mut sink));
    let res = match res {
        Err(FormatError::Io(err)) => match err.downcast::<PyErr>() {
            Ok(pyerr) => return Err(pyerr),
            Err(err) => Err(FormatError::Io(err)),
        },
        other => other,
    };
    finish_read(res, sink, None)
}

/// Whether decoded bytes can start a file `load` reads: a container, or a pickle (protocol 2
/// and later start with PROTO; protocols 0 and 1 with one of a few opcodes).
fn loadable_start(start: &[u8]) -> bool {
    start.starts_with(&format::MAGIC)
        || start
            .first()
            .is_some_and(|b| *b == 0x80 || b"()]}cNIJKLMFGSTUVX".contains(b))
}

/// Decompress a whole-file stream of `codec` (joblib's compressed pickles, containers wrapped
/// by a compressed file object) into a new `bytearray`, written in place (never copied after
/// decoding: arrays loaded from it may be views of it). The first decoded bytes must start a
/// file `load` reads and the output is capped by the codec's largest ratio
/// (`CorruptFileError` otherwise), so a hostile stream is refused before it inflates.
#[pyfunction]
pub fn decompress_stream<'py>(
    py: Python<'py>,
    codec: &str,
    data: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyByteArray>> {
    let codec = Codec::from_name(codec).map_err(|e| format_error(FormatError::Options(e)))?;
    let (held, region) = contiguous(&data)?;
    let mut sink = ByteArraySink::new(py);
    let res = py.detach(|| {
        // SAFETY: `held` keeps the export alive until after this closure.
        let bytes = unsafe { region.slice() };
        codec::decompress_stream_into(codec, bytes, loadable_start, &mut sink)
    });
    drop(held);
    res.map_err(crate::errors::codec_error)?;
    sink.finish(py)
}

/// An [`codec::OutputSink`] writing straight into a Python `bytearray`. The decoder runs
/// without the GIL; the array is resized (geometrically) with it.
struct ByteArraySink {
    array: Py<PyByteArray>,
    ptr: *mut u8,
    size: usize,
    len: usize,
}

// SAFETY: the sink is used by one thread at a time (the one that released the GIL, which
// re-acquires it to resize), and its bytearray is unreachable from Python code until
// `finish` returns it.
unsafe impl Send for ByteArraySink {}

impl ByteArraySink {
    fn new(py: Python<'_>) -> Self {
        let array = PyByteArray::new(py, &[]);
        let ptr = array.data();
        Self {
            array: array.unbind(),
            ptr,
            size: 0,
            len: 0,
        }
    }

    fn finish(self, py: Python<'_>) -> PyResult<Bound<'_, PyByteArray>> {
        let array = self.array.into_bound(py);
        array.resize(self.len)?;
        Ok(array)
    }
}

impl codec::OutputSink for ByteArraySink {
    fn len(&self) -> usize {
        self.len
    }

    fn committed(&self) -> &[u8] {
        // SAFETY: `ptr` addresses the bytearray's `size >= len` bytes, all initialised, and
        // nothing else uses the array while it is being decoded into.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn spare(&mut self, min: usize) -> io::Result<&mut [u8]> {
        if self.size - self.len < min {
            let grow = min.max(self.size / 2).max(1 << 16);
            let size = self
                .size
                .checked_add(grow)
                .ok_or_else(|| io::Error::other("too large"))?;
            let old = self.size;
            Python::attach(|py| {
                let array = self.array.bind(py);
                array
                    .resize(size)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                self.ptr = array.data();
                Ok::<(), io::Error>(())
            })?;
            // SAFETY: the resize made `size` bytes valid at `ptr`; the new ones are
            // initialised here, before any slice covers them.
            unsafe { std::ptr::write_bytes(self.ptr.add(old), 0, size - old) };
            self.size = size;
        }
        // SAFETY: as in `committed`; `len <= size`.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(self.len), self.size - self.len) })
    }

    fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(self.size);
    }
}

/// Compress a whole buffer as one stream of `codec` (for tests and tools).
#[pyfunction]
pub fn compress_stream<'py>(
    py: Python<'py>,
    codec: &str,
    level: i32,
    data: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let codec = Codec::from_name(codec).map_err(|e| format_error(FormatError::Options(e)))?;
    let (held, region) = contiguous(&data)?;
    let res = py.detach(|| {
        // SAFETY: `held` keeps the export alive until after this closure.
        let bytes = unsafe { region.slice() };
        codec::compress_stream(codec, level, bytes)
    });
    drop(held);
    let out = res.map_err(crate::errors::codec_error)?;
    Ok(PyBytes::new(py, &out))
}

/// Verify the container at `path` without loading it: every structure and payload checksum,
/// every compressed chunk decoded (without the GIL, memory bounded). Returns
/// `{"version": (major, minor), "file_size": n, "frames": [FrameReport, ...]}` (buffer
/// frames then the pickle frame). Damage raises `CorruptFileError`.
#[pyfunction]
pub fn inspect_path<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let res = py.detach(|| {
        let mut file = File::open(&path)?;
        format::inspect(&mut file)
    });
    let found = res.map_err(|e| match e {
        FormatError::Io(err) => io_error(err, &path),
        other => format_error(other),
    })?;
    let frames: Vec<FrameReport> = found.frames.iter().map(FrameReport::from).collect();
    let out = PyDict::new(py);
    out.set_item("version", found.version)?;
    out.set_item("file_size", found.file_len)?;
    out.set_item("frames", frames)?;
    Ok(out)
}

/// Whether the process `pid`, which last wrote a leftover at `mtime` (seconds since the
/// epoch), is certainly gone: no such process, or one that started after that time (the id
/// was reused). See `format::stale`.
#[pyfunction]
pub fn writer_gone(pid: u32, mtime: f64) -> bool {
    let written = std::time::Duration::try_from_secs_f64(mtime.max(0.0))
        .ok()
        .and_then(|d| std::time::SystemTime::UNIX_EPOCH.checked_add(d));
    written.is_some_and(|w| format::stale::writer_is_gone(pid, w))
}

/// Register the persistence functions on the `_core` module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(write_path, m)?)?;
    m.add_function(wrap_pyfunction!(write_fileobj, m)?)?;
    m.add_function(wrap_pyfunction!(read_path, m)?)?;
    m.add_function(wrap_pyfunction!(read_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(read_fileobj, m)?)?;
    m.add_function(wrap_pyfunction!(decompress_stream, m)?)?;
    m.add_function(wrap_pyfunction!(compress_stream, m)?)?;
    m.add_function(wrap_pyfunction!(mark_mutable, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_path, m)?)?;
    m.add_function(wrap_pyfunction!(writer_gone, m)?)?;
    m.add("CONTAINER_MAGIC", PyBytes::new(m.py(), &format::MAGIC))?;
    m.add("CODECS", codec::Codec::NAMES.to_vec())?;
    // The codec table, defined once in `joblib_core::codec`: the level used when only a
    // codec is named, the levels accepted, and joblib's 1-9 scale in each codec's levels.
    let levels = PyDict::new(m.py());
    for codec in Codec::ALL {
        let scale: Vec<i32> = (0..=9).map(|l| codec.from_joblib_level(l)).collect();
        levels.set_item(
            codec.name(),
            (codec.default_level(), codec.level_range(), scale),
        )?;
    }
    m.add("CODEC_LEVELS", levels)?;
    let kinds = PyDict::new(m.py());
    for kind in [FrameKind::Buffer, FrameKind::Pickle, FrameKind::Index] {
        kinds.set_item(kind.name(), kind as u8)?;
    }
    m.add("CONTAINER_FRAME_KINDS", kinds)?;
    // How whole-file streams of each codec start (`load` recognises them by it) and the
    // file-name extension selecting it in `dump`: defined in `joblib_core::codec`.
    let magic = PyDict::new(m.py());
    let extensions = PyDict::new(m.py());
    for codec in Codec::ALL.into_iter().filter(|&c| c != Codec::None) {
        magic.set_item(codec.name(), PyBytes::new(m.py(), codec.stream_magic()))?;
        extensions.set_item(codec.name(), codec.extension())?;
    }
    m.add("CODEC_MAGIC", magic)?;
    m.add("CODEC_EXTENSIONS", extensions)?;
    m.add(
        "CorruptFileError",
        crate::errors::corrupt_file_error(m.py())?,
    )?;
    Ok(())
}

/// Flag the given uncompressed frames `(payload_offset, stored_len)` of the container at
/// `path` as mutable before they are mapped writable (see `format::mark_mutable`).
#[pyfunction]
pub fn mark_mutable(py: Python<'_>, path: PathBuf, frames: Vec<(u64, u64)>) -> PyResult<()> {
    let res = py.detach(|| {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        format::mark_mutable(&mut file, &frames)
    });
    res.map_err(|e| match e {
        FormatError::Io(err) => io_error(err, &path),
        other => format_error(other),
    })
}
