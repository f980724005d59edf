//! The one place where core errors become Python exceptions.
//!
//! Binding code calls `.into_py_result()` on a core `Result` (or one of the mapping functions
//! below); which exception class and message each core error becomes is decided here and
//! nowhere else.

use std::path::Path;

use joblib_core::codec::CodecError;
use joblib_core::format::FormatError;
use joblib_core::hash::HashError;
use joblib_core::pool::PoolError;
use joblib_core::store::StoreError;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

pyo3::import_exception!(pickle, PicklingError);
pyo3::import_exception!(pickle, UnpicklingError);

/// A core error that knows its Python exception.
pub trait ToPyErr {
    /// The Python exception for this error.
    fn to_py_err(&self) -> PyErr;
}

impl ToPyErr for HashError {
    fn to_py_err(&self) -> PyErr {
        match self {
            HashError::UnknownAlgorithm(_) | HashError::InvalidLayout(_) => {
                PyValueError::new_err(self.to_string())
            }
            HashError::Unbalanced(_) => PyRuntimeError::new_err(self.to_string()),
        }
    }
}

impl ToPyErr for StoreError {
    fn to_py_err(&self) -> PyErr {
        // OSError(errno, strerror, filename) becomes the matching subclass (PermissionError,
        // FileNotFoundError, ...), so callers catch store failures as they would open()'s.
        match (
            self.io_error().and_then(std::io::Error::raw_os_error),
            self.path(),
        ) {
            (Some(errno), Some(path)) => {
                PyOSError::new_err((errno, self.to_string(), path.to_string_lossy().into_owned()))
            }
            _ => match self {
                StoreError::InvalidName(_) => PyValueError::new_err(self.to_string()),
                StoreError::Io { .. } => PyOSError::new_err(self.to_string()),
            },
        }
    }
}

impl ToPyErr for PoolError {
    fn to_py_err(&self) -> PyErr {
        match self {
            PoolError::Io(_) => PyOSError::new_err(self.to_string()),
            PoolError::InvalidSize(_) => PyValueError::new_err(self.to_string()),
            PoolError::Protocol(_) | PoolError::Closed(_) => {
                PyRuntimeError::new_err(self.to_string())
            }
        }
    }
}

/// `Result<T, CoreError>` → `PyResult<T>`.
pub trait CoreResultExt<T> {
    /// Maps the error through [`ToPyErr`].
    fn into_py_result(self) -> PyResult<T>;
}

impl<T, E: ToPyErr> CoreResultExt<T> for Result<T, E> {
    fn into_py_result(self) -> PyResult<T> {
        self.map_err(|e| e.to_py_err())
    }
}

static CORRUPT_FILE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `joblib_rs.CorruptFileError`: raised for a damaged or foreign file. It subclasses both
/// `pickle.UnpicklingError` and `ValueError`, so code written for either keeps catching it.
pub fn corrupt_file_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    CORRUPT_FILE_ERROR
        .get_or_try_init(py, || {
            let unpickling = py.import("pickle")?.getattr("UnpicklingError")?;
            let value = py.get_type::<PyValueError>();
            let bases = PyTuple::new(py, [unpickling, value.into_any()])?;
            let ns = PyDict::new(py);
            ns.set_item("__module__", "joblib_rs")?;
            ns.set_item(
                "__doc__",
                "The file is damaged, truncated or not a joblib/joblib-rs file.",
            )?;
            let ty = py
                .get_type::<PyType>()
                .call1(("CorruptFileError", bases, ns))?
                .cast_into::<PyType>()?;
            Ok(ty.unbind())
        })
        .map(|t| t.bind(py))
}

/// A `CorruptFileError` with this message.
pub fn corrupt(msg: String) -> PyErr {
    Python::attach(|py| match corrupt_file_error(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), msg),
        Err(e) => e,
    })
}

/// Map a persistence error: damage → `CorruptFileError`, bad options → `ValueError`,
/// I/O → `OSError`.
pub fn format_error(err: FormatError) -> PyErr {
    match err {
        FormatError::Io(e) => PyErr::from(e),
        FormatError::Options(e) => PyValueError::new_err(e.to_string()),
        FormatError::Sink(msg) => PyValueError::new_err(msg),
        other @ (FormatError::BadMagic
        | FormatError::UnsupportedVersion { .. }
        | FormatError::Truncated { .. }
        | FormatError::Damaged { .. }
        | FormatError::ChecksumMismatch { .. }
        | FormatError::Codec { .. }) => corrupt(other.to_string()),
    }
}

/// Map a codec error on a whole stream: corrupt data → `CorruptFileError`, options →
/// `ValueError`.
pub fn codec_error(err: CodecError) -> PyErr {
    match err {
        CodecError::Corrupt { .. }
        | CodecError::LengthMismatch { .. }
        | CodecError::TooLarge { .. } => corrupt(format!("file is damaged: {err}")),
        CodecError::Unrecognized { .. } => {
            corrupt(format!("not a joblib-rs or joblib file: {err}"))
        }
        other => PyValueError::new_err(other.to_string()),
    }
}

/// An `OSError` (the subclass matching errno, e.g. `FileNotFoundError`) naming `path`.
pub fn io_error(err: std::io::Error, path: &Path) -> PyErr {
    match err.raw_os_error() {
        Some(code) => {
            let msg = std::io::Error::from_raw_os_error(code).to_string();
            let msg = msg.split(" (os error").next().unwrap_or(&msg).to_owned();
            PyOSError::new_err((code, msg, path.display().to_string()))
        }
        None => PyOSError::new_err(format!("{}: {err}", path.display())),
    }
}

/// A buffer handed to the persistence functions is not C-contiguous.
pub fn not_contiguous() -> PyErr {
    PyValueError::new_err("buffers given to dump/load must be C-contiguous")
}

/// A `pickle.UnpicklingError`: what a restricted load raises for something it refuses.
pub fn unpickling_error(msg: impl Into<String>) -> PyErr {
    UnpicklingError::new_err(msg.into())
}

/// Map a remote-store error: bad URL or option → `ValueError`, damaged entry →
/// `CorruptFileError`, missing object → `FileNotFoundError`, refused credentials →
/// `PermissionError`, anything else from the network or the server → `OSError`.
pub fn remote_error(err: joblib_core::remote::RemoteError) -> PyErr {
    use joblib_core::remote::RemoteError;
    match &err {
        RemoteError::UnknownScheme(_)
        | RemoteError::InvalidUrl { .. }
        | RemoteError::UnknownOption { .. } => PyValueError::new_err(err.to_string()),
        RemoteError::Damaged { .. } => corrupt(err.to_string()),
        _ if err.is_not_found() => pyo3::exceptions::PyFileNotFoundError::new_err(err.to_string()),
        _ if err.is_permission() => pyo3::exceptions::PyPermissionError::new_err(err.to_string()),
        RemoteError::Store { .. } | RemoteError::Runtime(_) => PyOSError::new_err(err.to_string()),
    }
}
