//! Container frames as typed Python values, and the sink that fills Python buffers.
//!
//! ```text
//!  format::read_container ─► PySink::frame(head) ─► alloc(raw_len) (a numpy uint8 array,
//!                            filled in place without the GIL) │ Skip / Verify (mapped)
//!                        ─► [FrameInfo] + objects ─► frames_out ─► [Frame]
//!  format::inspect        ─► Inspection.frames ─► [FrameReport]
//! ```
//! `Frame` is what `read_path` / `read_bytes` / `read_fileobj` and a Memory hit return;
//! `FrameReport` is one line of `inspect_path`. Both are frozen values with named fields.
//! They also unpack as the tuples the functions used to return (`kind, codec, raw_len,
//! offset, verified, data = frame`; `report[6]`), for callers written against those.

use joblib_core::codec::Codec;
use joblib_core::format::{self, Dest, FormatError, FrameHead, FrameInfo, FrameKind, Sink};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::persist::Region;

/// A buffer or pickle frame of a container once read.
#[pyclass(frozen, module = "joblib_rs._core")]
#[derive(Debug)]
pub struct Frame {
    kind: FrameKind,
    codec: Codec,
    /// Length of the decoded payload.
    #[pyo3(get)]
    raw_len: u64,
    /// Offset of the payload in the file (where an uncompressed payload is mapped).
    #[pyo3(get)]
    offset: u64,
    /// Whether the payload's checksum was verified (false for a skipped, mapped payload
    /// not verified, and for frames marked mutable).
    #[pyo3(get)]
    verified: bool,
    /// The decoded payload (the object `alloc` returned, filled), or None for an
    /// uncompressed buffer left in the file to be memory-mapped.
    #[pyo3(get)]
    data: Option<Py<PyAny>>,
}

#[pymethods]
impl Frame {
    /// Kind of an out-of-band pickle buffer (an array's bytes).
    #[classattr]
    const BUFFER: u8 = FrameKind::Buffer as u8;
    /// Kind of the pickle stream.
    #[classattr]
    const PICKLE: u8 = FrameKind::Pickle as u8;
    /// Kind of the trailing index (never returned by the readers).
    #[classattr]
    const INDEX: u8 = FrameKind::Index as u8;

    /// The frame's kind: `Frame.BUFFER` or `Frame.PICKLE`.
    #[getter]
    fn kind(&self) -> u8 {
        self.kind as u8
    }

    /// The kind's name (`"buffer"`, `"pickle"`).
    #[getter]
    fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// The payload's codec name (`"none"`, `"zstd"`, ...).
    #[getter]
    fn codec(&self) -> &'static str {
        self.codec.name()
    }

    /// Whether the payload is still in the file, to be memory-mapped.
    #[getter]
    fn mapped(&self) -> bool {
        self.data.is_none()
    }

    /// `(kind, codec, raw_len, offset, verified, data)`: the tuple the readers returned
    /// before frames were values, for callers that unpack it.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let data = self
            .data
            .as_ref()
            .map_or_else(|| py.None(), |d| d.clone_ref(py));
        let tuple = (
            self.kind as u8,
            self.codec.name(),
            self.raw_len,
            self.offset,
            self.verified,
            data,
        )
            .into_pyobject(py)?;
        tuple.as_any().try_iter().map(Bound::into_any)
    }

    fn __repr__(&self) -> String {
        format!(
            "Frame(kind='{}', codec='{}', raw_len={}, offset={}, verified={}, mapped={})",
            self.kind.name(),
            self.codec.name(),
            self.raw_len,
            self.offset,
            py_bool(self.verified),
            py_bool(self.data.is_none())
        )
    }
}

impl Frame {
    /// Kind of the frame.
    pub fn frame_kind(&self) -> FrameKind {
        self.kind
    }

    /// Whether the payload was left in the file (mapped) rather than decoded.
    pub fn is_mapped(&self) -> bool {
        self.data.is_none()
    }

    /// Offset of the payload in the file and its length as stored (for uncompressed
    /// payloads, its raw length).
    pub fn region(&self) -> (u64, u64) {
        (self.offset, self.raw_len)
    }
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// One frame of a container as `inspect_path` verified it.
#[pyclass(frozen, module = "joblib_rs._core")]
#[derive(Debug)]
pub struct FrameReport {
    /// Sequence number in the file (buffers 0..n, then the pickle).
    #[pyo3(get)]
    index: u32,
    kind: FrameKind,
    codec: Codec,
    /// Length of the decoded payload.
    #[pyo3(get)]
    raw_len: u64,
    /// Bytes of the payload as stored.
    #[pyo3(get)]
    stored_len: u64,
    /// The recorded xxh3-64 of the stored payload.
    #[pyo3(get)]
    checksum: u64,
    /// Offset of the frame header in the file.
    #[pyo3(get)]
    header_offset: u64,
    /// Offset of the payload in the file.
    #[pyo3(get)]
    offset: u64,
}

#[pymethods]
impl FrameReport {
    /// The frame's kind (`Frame.BUFFER`, `Frame.PICKLE`).
    #[getter]
    fn kind(&self) -> u8 {
        self.kind as u8
    }

    /// The kind's name (`"buffer"`, `"pickle"`).
    #[getter]
    fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// The payload's codec name.
    #[getter]
    fn codec(&self) -> &'static str {
        self.codec.name()
    }

    /// `(index, kind name, codec, raw_len, stored_len, checksum, header offset)`: the tuple
    /// `inspect_path` returned before frames were values, for callers that index it.
    fn as_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (
            self.index,
            self.kind.name(),
            self.codec.name(),
            self.raw_len,
            self.stored_len,
            self.checksum,
            self.header_offset,
        )
            .into_pyobject(py)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.as_tuple(py)?.as_any().try_iter().map(Bound::into_any)
    }

    fn __len__(&self) -> usize {
        7
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        let tuple = self.as_tuple(py)?;
        let at = if index < 0 { index + 7 } else { index };
        usize::try_from(at)
            .ok()
            .filter(|&i| i < 7)
            .map(|i| tuple.get_item(i))
            .unwrap_or_else(|| Err(PyIndexError::new_err("frame report index out of range")))
    }

    fn __repr__(&self) -> String {
        format!(
            "FrameReport(index={}, kind='{}', codec='{}', raw_len={}, stored_len={}, \
             checksum={:#018x}, header_offset={})",
            self.index,
            self.kind.name(),
            self.codec.name(),
            self.raw_len,
            self.stored_len,
            self.checksum,
            self.header_offset
        )
    }
}

impl From<&FrameInfo> for FrameReport {
    fn from(f: &FrameInfo) -> Self {
        Self {
            index: f.head.index,
            kind: f.head.kind,
            codec: f.head.codec,
            raw_len: f.head.raw_len,
            stored_len: f.stored_len,
            checksum: f.checksum,
            header_offset: f.head.payload_offset - format::BLOCK as u64,
            offset: f.head.payload_offset,
        }
    }
}

/// Allocates each frame's destination by calling Python `alloc(nbytes)`; keeps the objects.
pub struct PySink {
    alloc: Py<PyAny>,
    /// Leave uncompressed buffer frames in the file (they are memory-mapped).
    skip_buffers: bool,
    /// With `skip_buffers`: still read the skipped payloads to check their checksums (a
    /// memory-mapped cache hit), without keeping them.
    verify_skipped: bool,
    objects: Vec<Option<Py<PyAny>>>,
    /// The Python error raised by `alloc`, reported instead of the format error.
    pub error: Option<PyErr>,
}

impl PySink {
    /// A sink allocating every destination with `alloc`, or (with `skip_buffers`) leaving
    /// uncompressed buffers in the file, verified when `verify_skipped`.
    pub fn new(alloc: Py<PyAny>, skip_buffers: bool, verify_skipped: bool) -> Self {
        Self {
            alloc,
            skip_buffers,
            verify_skipped,
            objects: Vec::new(),
            error: None,
        }
    }

    /// The frames read, with the objects filled.
    pub fn frames(self, infos: Vec<FrameInfo>) -> Vec<Frame> {
        infos
            .into_iter()
            .zip(self.objects)
            .map(|(f, data)| Frame {
                kind: f.head.kind,
                codec: f.head.codec,
                raw_len: f.head.raw_len,
                offset: f.head.payload_offset,
                verified: f.verified,
                data,
            })
            .collect()
    }
}

impl Sink for PySink {
    fn frame(&mut self, head: &FrameHead) -> Result<Dest<'_>, FormatError> {
        if self.skip_buffers && head.kind == FrameKind::Buffer && head.codec == Codec::None {
            self.objects.push(None);
            return Ok(if self.verify_skipped {
                Dest::Verify
            } else {
                Dest::Skip
            });
        }
        let raw_len = usize::try_from(head.raw_len)
            .map_err(|_| FormatError::Sink(format!("frame of {} bytes", head.raw_len)))?;
        let made = Python::attach(|py| -> PyResult<(Py<PyAny>, Region, bool)> {
            let obj = self.alloc.bind(py).call1((raw_len,))?;
            let buf = PyUntypedBuffer::get(&obj)?;
            let ok = !buf.readonly() && buf.is_c_contiguous() && buf.len_bytes() == raw_len;
            let region = Region {
                ptr: buf.buf_ptr() as usize,
                len: buf.len_bytes(),
            };
            drop(buf);
            Ok((obj.unbind(), region, ok))
        });
        let (obj, region, ok) = match made {
            Ok(v) => v,
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e);
                return Err(FormatError::Sink(msg));
            }
        };
        if !ok {
            return Err(FormatError::Sink(
                "alloc() must return a writable contiguous buffer of the asked size".into(),
            ));
        }
        self.objects.push(Some(obj));
        if region.len == 0 {
            return Ok(Dest::Fill(&mut []));
        }
        // SAFETY: the object owning this memory was just created by `alloc` (a fresh numpy
        // array or bytearray nobody else references) and is kept in `self.objects` for the
        // whole read, so the memory stays valid and is written by nobody else.
        let slice = unsafe { std::slice::from_raw_parts_mut(region.ptr as *mut u8, region.len) };
        Ok(Dest::Fill(slice))
    }
}

/// Register the frame classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Frame>()?;
    m.add_class::<FrameReport>()?;
    Ok(())
}
