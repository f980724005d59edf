//! `joblib_rs._core`: the PyO3 bindings of joblib-core.
//!
//! Thin by design: each file converts Python values for one core module, releases the GIL
//! around long operations, and maps errors through [`errors`]. Logic belongs in joblib-core.

use pyo3::prelude::*;

mod errors;
mod frames;
mod hash;
mod joblib_stream;
mod persist;
mod pool;
mod remote;
mod store;
mod store_hit;
mod tasks;
mod unpickle;

/// The compiled core of joblib-rs.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("HASH_FORMAT_VERSION", joblib_core::hash::FORMAT_VERSION)?;
    m.add_function(wrap_pyfunction!(hash::hash, m)?)?;
    pool::register(m)?;
    m.add_class::<joblib_stream::PyStreamEncoder>()?;
    store::register(m)?;
    store_hit::register(m)?;
    persist::register(m)?;
    frames::register(m)?;
    unpickle::register(m)?;
    remote::register(m)?;
    tasks::register(m)?;
    Ok(())
}
