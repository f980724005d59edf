//! Binding of `joblib_core::codec::StreamEncoder`: the whole-file compressed streams of files
//! written in joblib's format (`joblib_rs._joblib_format`).
//!
//! ```text
//!  pickler bytes / array memory ─► StreamEncoder.write(buf) ─► compressed bytes ─► file.write
//!                                  (GIL released, chunks on all cores)
//! ```

use joblib_core::codec::{Codec, StreamEncoder};
use joblib_core::format::FormatError;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{codec_error, format_error, not_contiguous};

/// `StreamEncoder(codec, level)`: compresses a whole file as one stream of `codec` ("zlib",
/// "gzip", "bz2", "lzma", "xz" or "lz4") in the layout joblib's compressors read. `write`
/// and `finish` return the compressed bytes produced so far.
#[pyclass(name = "StreamEncoder", module = "joblib_rs._core")]
#[derive(Debug)]
pub struct PyStreamEncoder {
    inner: Option<StreamEncoder>,
}

fn finished() -> PyErr {
    pyo3::exceptions::PyValueError::new_err("the stream is already finished")
}

#[pymethods]
impl PyStreamEncoder {
    #[new]
    fn new(codec: &str, level: i32) -> PyResult<Self> {
        let codec = Codec::from_name(codec).map_err(|e| format_error(FormatError::Options(e)))?;
        let inner = StreamEncoder::new(codec, level).map_err(codec_error)?;
        Ok(Self { inner: Some(inner) })
    }

    /// Add the bytes of `data` (any C-contiguous buffer); returns the compressed bytes that
    /// became ready (often empty: data is compressed by whole chunks).
    fn write<'py>(
        &mut self,
        py: Python<'py>,
        data: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let enc = self.inner.as_mut().ok_or_else(finished)?;
        let buf = PyUntypedBuffer::get(&data)?;
        if !buf.is_c_contiguous() {
            return Err(not_contiguous());
        }
        let (ptr, len) = (buf.buf_ptr() as usize, buf.len_bytes());
        let res = py.detach(|| {
            let src: &[u8] = if len == 0 {
                &[]
            } else {
                // SAFETY: `buf` holds the export of `data` until after this closure, so the
                // memory stays valid and unmoved; nothing here writes to it.
                unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }
            };
            let mut out = Vec::new();
            enc.write(src, &mut out).map(|()| out)
        });
        drop(buf);
        let out = res.map_err(codec_error)?;
        Ok(PyBytes::new(py, &out))
    }

    /// End the stream; returns its last compressed bytes. The encoder cannot be used after.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let enc = self.inner.take().ok_or_else(finished)?;
        let res = py.detach(|| {
            let mut out = Vec::new();
            enc.finish(&mut out).map(|()| out)
        });
        let out = res.map_err(codec_error)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Raw (uncompressed) bytes written so far.
    #[getter]
    fn raw_len(&self) -> u64 {
        self.inner.as_ref().map_or(0, StreamEncoder::raw_len)
    }
}
