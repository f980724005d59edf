//! The one place where core errors become Python exceptions.
//!
//! Binding code calls `.into_py_result()` on a core `Result`; which exception class and message
//! each core error becomes is decided here and nowhere else.

use joblib_core::hash::HashError;
use joblib_core::pool::PoolError;
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
