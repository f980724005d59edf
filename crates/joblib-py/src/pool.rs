//! `ProcessPool`: the Rust worker pool, seen from Python.
//!
//! ```text
//!  _process_pool.ProcessPool ── submit(bytes) ──► ProcessPool (joblib-core) ══► workers
//!        result thread ◄── PoolEvent (kind, ident, payload | exit) ◄── next_event()
//!  _worker.py reads the frame kind numbers from POOL_FRAME_KINDS (FrameKind::ALL)
//! ```
//!
//! Payloads are opaque bytes both ways (the Python side pickles). Every call that may block —
//! starting workers, waiting for events, shutting down — releases the GIL.

use std::path::PathBuf;
use std::time::Duration;

use joblib_core::pool::{
    Event, ExitInfo, FrameKind, PoolError, ProcessPool, WorkerCommand, die_with_parent,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::errors::{CoreResultExt, ToPyErr};

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

/// One event of the pool, as `ProcessPool.next_event` returns it.
///
/// `kind` is one of the class attributes `READY`, `DONE`, `FAILED`, `DIED`, `CLOSED`;
/// `ident` is a worker's pid (`READY`, `DIED`) or a task id (`DONE`, `FAILED`); `payload`
/// the pickled outcome of a task; for `DIED`, `exit_how` (`"code"`, `"signal"` or
/// `"unknown"`), `exit_value` and the ids of the tasks it held (`lost`).
#[pyclass(name = "PoolEvent", module = "joblib_rs._core", frozen, get_all)]
#[derive(Debug)]
pub struct PyPoolEvent {
    kind: u8,
    ident: u64,
    payload: Option<Py<PyBytes>>,
    exit_how: Option<&'static str>,
    exit_value: i32,
    lost: Vec<u64>,
}

#[pymethods]
impl PyPoolEvent {
    /// A worker finished its start-up (`ident`: its pid).
    #[classattr]
    const READY: u8 = 0;
    /// A task returned (`payload`: its pickled value).
    #[classattr]
    const DONE: u8 = 1;
    /// A task raised (`payload`: its pickled exception and traceback text).
    #[classattr]
    const FAILED: u8 = 2;
    /// A worker died: the pool is broken.
    #[classattr]
    const DIED: u8 = 3;
    /// The pool is shut down and drained: no event will follow.
    #[classattr]
    const CLOSED: u8 = 4;

    fn __repr__(&self) -> String {
        format!("PoolEvent(kind={}, ident={})", self.kind, self.ident)
    }
}

impl PyPoolEvent {
    fn new(kind: u8, ident: u64) -> Self {
        Self {
            kind,
            ident,
            payload: None,
            exit_how: None,
            exit_value: 0,
            lost: Vec::new(),
        }
    }

    fn with_payload(py: Python<'_>, kind: u8, task_id: u64, payload: &[u8]) -> Self {
        Self {
            payload: Some(PyBytes::new(py, payload).unbind()),
            ..Self::new(kind, task_id)
        }
    }
}

/// Called by a worker first thing: Linux kills it when the parent that spawned it dies
/// (and it exits now if that parent is already gone). Returns whether that is armed.
#[pyfunction(name = "die_with_parent")]
fn py_die_with_parent() -> PyResult<bool> {
    die_with_parent().map_err(|e| PoolError::Io(e).to_py_err())
}

/// Registers the pool's classes and the frame kind numbers (`POOL_FRAME_KINDS`).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyProcessPool>()?;
    m.add_function(wrap_pyfunction!(py_die_with_parent, m)?)?;
    m.add_class::<PyPoolEvent>()?;
    let kinds = PyDict::new(m.py());
    for kind in FrameKind::ALL {
        kinds.set_item(kind.name(), kind as u8)?;
    }
    m.add("POOL_FRAME_KINDS", kinds)?;
    Ok(())
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

    /// Waits for the next event, at most `timeout` seconds (`None`: no limit); `None` on
    /// timeout. After the pool is shut down and drained, every call returns a `CLOSED` event.
    #[pyo3(signature = (timeout = None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyPoolEvent>> {
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
            Err(PoolError::Closed(_)) => return Ok(Some(PyPoolEvent::new(PyPoolEvent::CLOSED, 0))),
            Err(other) => return Err(other).into_py_result(),
        };
        Ok(Some(match event {
            Event::Ready { pid } => PyPoolEvent::new(PyPoolEvent::READY, u64::from(pid)),
            Event::Done { task_id, payload } => {
                PyPoolEvent::with_payload(py, PyPoolEvent::DONE, task_id, &payload)
            }
            Event::Failed { task_id, payload } => {
                PyPoolEvent::with_payload(py, PyPoolEvent::FAILED, task_id, &payload)
            }
            Event::WorkerDied { pid, exit, lost } => {
                let (how, value) = exit_description(exit);
                PyPoolEvent {
                    exit_how: Some(how),
                    exit_value: value,
                    lost,
                    ..PyPoolEvent::new(PyPoolEvent::DIED, u64::from(pid))
                }
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
