//! The one place where core errors become Python exceptions.
//!
//! Binding code calls `.into_py_result()` on a core `Result`; which exception class and message
//! each core error becomes is decided here and nowhere else.

use joblib_core::hash::HashError;
use joblib_core::store::StoreError;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

pyo3::import_exception!(pickle, PicklingError);

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
