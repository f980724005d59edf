//! `ProcessPool`: the Rust worker pool, seen from Python.
//!
//! Payloads are opaque bytes both ways (the Python side pickles). Every call that may block —
//! starting workers, waiting for events, shutting down — releases the GIL.

use std::path::PathBuf;
use std::time::Duration;

use joblib_core::pool::{Event, ExitInfo, PoolError, ProcessPool, WorkerCommand};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::CoreResultExt;

/// A pool of `python -m joblib_rs._worker` processes exchanging pickled payloads.
#[pyclass(name = "ProcessPool", module = "joblib_rs._core", frozen)]
#[derive(Debug)]
pub struct PyProcessPool {
    inner: ProcessPool,
}

fn exit_description(exit: ExitInfo) -> (&'static str, i32) {
    match exit {
        ExitInfo::Code(code) => ("code", code),
        ExitInfo::Signal(sig) => ("signal", sig),
        ExitInfo::Unknown => ("unknown", 0),
    }
}

#[pymethods]
impl PyProcessPool {
    /// Starts `size` workers running `program args` with `env` added to the environment, in
    /// `cwd`; `init` is the first frame each worker receives.
    #[new]
    #[pyo3(signature = (size, program, args, env, cwd, init))]
    fn new(
        py: Python<'_>,
        size: usize,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<PathBuf>,
        init: Vec<u8>,
    ) -> PyResult<Self> {
        let command = WorkerCommand {
            program,
            args,
            env,
            cwd,
        };
        let inner = py
            .detach(|| ProcessPool::start(size, &command, &init))
            .into_py_result()?;
        Ok(Self { inner })
    }

    /// Queues a pickled task; returns its id. A small task is written to a worker's socket
    /// before this returns: a short non-blocking write, done with the GIL held because
    /// giving the GIL up and taking it back costs more than the write.
    fn submit(&self, payload: &[u8]) -> PyResult<u64> {
        self.inner.submit(payload.to_vec()).into_py_result()
    }

    /// Waits for the next event, at most `timeout` seconds (`None`: no limit).
    ///
    /// Returns `None` on timeout, else `(kind, ident, data)`: `("ready", pid, None)`,
    /// `("done", task_id, bytes)`, `("failed", task_id, bytes)`,
    /// `("died", pid, (how, value, lost_task_ids))` with `how` in `code`/`signal`/`unknown`,
    /// or `("closed", 0, None)` once the pool is shut down and drained.
    #[pyo3(signature = (timeout = None))]
    fn next_event(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<Option<(&'static str, u64, Py<PyAny>)>> {
        let timeout = match timeout {
            Some(t) if !(t.is_finite() && t >= 0.0) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "timeout must be a non-negative number of seconds, got {t}"
                )));
            }
            Some(t) => Some(Duration::from_secs_f64(t)),
            None => None,
        };
        let event = match py.detach(|| self.inner.next_event(timeout)) {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(None),
            Err(PoolError::Closed(_)) => return Ok(Some(("closed", 0, py.None()))),
            Err(other) => return Err(other).into_py_result(),
        };
        Ok(Some(match event {
            Event::Ready { pid } => ("ready", u64::from(pid), py.None()),
            Event::Done { task_id, payload } => (
                "done",
                task_id,
                PyBytes::new(py, &payload).into_any().unbind(),
            ),
            Event::Failed { task_id, payload } => (
                "failed",
                task_id,
                PyBytes::new(py, &payload).into_any().unbind(),
            ),
            Event::WorkerDied { pid, exit, lost } => {
                let (how, value) = exit_description(exit);
                (
                    "died",
                    u64::from(pid),
                    (how, value, lost).into_pyobject(py)?.into_any().unbind(),
                )
            }
        }))
    }

    /// Lets workers finish their tasks and exit, killing those still running after `grace`
    /// seconds.
    #[pyo3(signature = (grace = 5.0))]
    fn shutdown(&self, py: Python<'_>, grace: f64) {
        let grace = Duration::from_secs_f64(if grace.is_finite() {
            grace.max(0.0)
        } else {
            0.0
        });
        py.detach(|| self.inner.shutdown(grace));
    }

    /// Kills every worker now.
    fn terminate(&self, py: Python<'_>) {
        py.detach(|| self.inner.terminate());
    }

    /// Number of workers.
    #[getter]
    fn size(&self) -> usize {
        self.inner.size()
    }

    /// Process ids of the workers.
    #[getter]
    fn pids(&self) -> Vec<u32> {
        self.inner.pids()
    }

    /// Why the pool is broken, or `None`.
    #[getter]
    fn broken(&self) -> Option<String> {
        self.inner.broken()
    }
}
