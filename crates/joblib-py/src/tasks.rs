//! Tasks as `Parallel` builds and batches them: `delayed`'s callable and the compact form of a
//! batch.
//!
//! ```text
//!  delayed(f)(*args, **kwargs) ─► Delayed.__call__ ─► (f, args, kwargs)   no Python frame
//!  [(f, args, {}), ...] ── compact_tasks ──► (f, [args, ...], false)
//!                                         or (f, [arg, ...], true)     every args of length 1
//!                                         or None                       mixed functions, kwargs
//!  input iterator ── take_tasks(n) ──► the same two forms, read without keeping the tuples
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

/// What [`take_tasks`] read: its arguments while every task so far is compact.
enum Taken<'py> {
    Compact {
        function: Bound<'py, PyAny>,
        one_argument: bool,
        arguments: Vec<Bound<'py, PyAny>>,
    },
    Tasks(Vec<Bound<'py, PyAny>>),
}

/// `task` as `(function, args)` when it is a `(function, args tuple, falsy kwargs)` triple.
fn split_task<'py>(
    task: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyTuple>)>> {
    let Ok(task) = task.cast::<PyTuple>() else {
        return Ok(None);
    };
    if task.len() != 3 || task.get_item(2)?.is_truthy()? {
        return Ok(None);
    }
    let Ok(args) = task.get_item(1)?.cast_into::<PyTuple>() else {
        return Ok(None);
    };
    Ok(Some((task.get_item(0)?, args)))
}

/// Read up to `n` tasks from `iterator`: `(True, function, arguments, one_argument)` when
/// they all call `function` without keyword arguments (the compact form of
/// [`compact_tasks`]), else `(False, None, tasks, False)` with the tasks as read (those
/// read while the form was compact rebuilt as equal triples). Nothing read:
/// `(True, None, [], True)`.
///
/// The compact form keeps only the arguments, so the task tuples die as they are read: a
/// large batch leaves nothing for the garbage collector to traverse, which reading it into
/// a list of tuples does (most of the cost of 100k tiny tasks).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn take_tasks<'py>(
    py: Python<'py>,
    iterator: &Bound<'py, PyAny>,
    n: usize,
) -> PyResult<(bool, Option<Bound<'py, PyAny>>, Bound<'py, PyList>, bool)> {
    let mut taken: Option<Taken<'py>> = None;
    let iterator = iterator.try_iter()?;
    for task in iterator.take(n) {
        let task = task?;
        taken = Some(match taken {
            None => match split_task(&task)? {
                Some((function, args)) => Taken::Compact {
                    function,
                    one_argument: args.len() == 1,
                    arguments: vec![single_or_all(args)?],
                },
                None => Taken::Tasks(vec![task]),
            },
            Some(Taken::Compact {
                function,
                one_argument,
                mut arguments,
            }) => match split_task(&task)? {
                Some((this, args)) if this.is(&function) => {
                    let one = one_argument && args.len() == 1;
                    if one_argument && !one {
                        // Arguments kept single so far become 1-tuples.
                        for value in &mut arguments {
                            *value = PyTuple::new(py, [value.clone()])?.into_any();
                        }
                    }
                    arguments.push(if one {
                        single_or_all(args)?
                    } else {
                        args.into_any()
                    });
                    Taken::Compact {
                        function,
                        one_argument: one,
                        arguments,
                    }
                }
                _ => {
                    let mut tasks = expand(py, &function, arguments, one_argument)?;
                    tasks.push(task);
                    Taken::Tasks(tasks)
                }
            },
            Some(Taken::Tasks(mut tasks)) => {
                tasks.push(task);
                Taken::Tasks(tasks)
            }
        });
    }
    Ok(match taken {
        None => (true, None, PyList::empty(py), true),
        Some(Taken::Compact {
            function,
            one_argument,
            arguments,
        }) => (
            true,
            Some(function),
            PyList::new(py, arguments)?,
            one_argument,
        ),
        Some(Taken::Tasks(tasks)) => (false, None, PyList::new(py, tasks)?, false),
    })
}

/// The single argument of a 1-tuple, else the tuple.
fn single_or_all<'py>(args: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    if args.len() == 1 {
        args.get_item(0)
    } else {
        Ok(args.into_any())
    }
}

/// Compact arguments back to `(function, args, {})` triples.
fn expand<'py>(
    py: Python<'py>,
    function: &Bound<'py, PyAny>,
    arguments: Vec<Bound<'py, PyAny>>,
    one_argument: bool,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    arguments
        .into_iter()
        .map(|value| {
            let args = if one_argument {
                PyTuple::new(py, [value])?.into_any()
            } else {
                value
            };
            Ok(PyTuple::new(py, [function.clone(), args, PyDict::new(py).into_any()])?.into_any())
        })
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDelayed>()?;
    m.add_function(wrap_pyfunction!(compact_tasks, m)?)?;
    m.add_function(wrap_pyfunction!(take_tasks, m)?)?;
    Ok(())
}
