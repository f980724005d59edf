//! Tasks as `Parallel` builds and batches them: `delayed`'s callable and the compact form of a
//! batch.
//!
//! ```text
//!  delayed(f)(*args, **kwargs) ─► Delayed.__call__ ─► (f, args, kwargs)   no Python frame
//!  [(f, args, {}), ...] ── compact_tasks ──► (f, [args, ...], false)
//!                                         or (f, [arg, ...], true)     every args of length 1
//!                                         or None                       mixed functions, kwargs
//! ```
//!
//! Both run once per task in the caller's process, so they are here rather than in Python:
//! a `Parallel` call of 100k tiny tasks spends most of its parent-side time building and
//! inspecting these tuples.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

/// `delayed(function)`: calling it returns `(function, args, kwargs)` without running it.
///
/// The base class of `joblib_rs.parallel._DelayedFunction`, which adds the attributes
/// `functools.wraps` would copy and pickling.
#[pyclass(name = "Delayed", module = "joblib_rs._core", subclass, frozen)]
#[derive(Debug)]
pub struct PyDelayed {
    function: Py<PyAny>,
}

#[pymethods]
impl PyDelayed {
    #[new]
    fn new(function: Py<PyAny>) -> Self {
        Self { function }
    }

    /// The function whose calls are recorded.
    #[getter(__wrapped__)]
    fn wrapped(&self, py: Python<'_>) -> Py<PyAny> {
        self.function.clone_ref(py)
    }

    /// `(function, args, kwargs)`; `kwargs` is a new dict, as a Python `**kwargs` would be.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let kwargs = match kwargs {
            Some(given) => given.copy()?,
            None => PyDict::new(py),
        };
        PyTuple::new(
            py,
            [
                self.function.bind(py).clone(),
                args.into_any(),
                kwargs.into_any(),
            ],
        )
    }
}

/// The compact form of a batch: `(function, arguments, one_argument)` when every task of
/// `tasks` is a `(function, args, kwargs)` tuple calling the same `function` (identity) with
/// a tuple `args` and empty `kwargs`; `arguments` holds each task's single argument when
/// every `args` has length 1 (`one_argument`), else each `args` tuple. None otherwise (or
/// for an empty list): the batch then travels task by task.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn compact_tasks<'py>(
    py: Python<'py>,
    tasks: &Bound<'py, PyList>,
) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyList>, bool)>> {
    let mut function: Option<Bound<'py, PyAny>> = None;
    let mut one_argument = true;
    for item in tasks.iter() {
        let Ok(task) = item.cast::<PyTuple>() else {
            return Ok(None);
        };
        if task.len() != 3 {
            return Ok(None);
        }
        let this = task.get_item(0)?;
        match &function {
            None => function = Some(this),
            Some(first) if first.is(&this) => {}
            Some(_) => return Ok(None),
        }
        if task.get_item(2)?.is_truthy()? {
            return Ok(None);
        }
        let args = task.get_item(1)?;
        let Ok(args) = args.cast::<PyTuple>() else {
            return Ok(None);
        };
        if args.len() != 1 {
            one_argument = false;
        }
    }
    let Some(function) = function else {
        return Ok(None);
    };
    let arguments = PyList::empty(py);
    for item in tasks.iter() {
        let task = item.cast_into::<PyTuple>()?;
        let args = task.get_item(1)?;
        if one_argument {
            arguments.append(args.cast_into::<PyTuple>()?.get_item(0)?)?;
        } else {
            arguments.append(args)?;
        }
    }
    Ok(Some((function, arguments, one_argument)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDelayed>()?;
    m.add_function(wrap_pyfunction!(compact_tasks, m)?)?;
    Ok(())
}
