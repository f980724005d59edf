//! `hash(obj, hash_name, coerce_mmap)`: walks a Python object graph into the core's
//! [`CanonicalHasher`].
//!
//! ```text
//!  obj ─► exact builtin type? ── scalar / str / bytes ─────────────► tag + content
//!    │                        └─ list / tuple / dict / set ─────────► Merkle node (memo by id)
//!    ├─► numpy array / scalar / dtype ─► dtype label, shape, data blob (GIL released if big)
//!    ├─► function / class / code ─────► global name (+ code and closure for local functions)
//!    └─► anything else ───────────────► __reduce_ex__(5): callable, args, state, items
//! ```
//!
//! The walker only dispatches on types and converts values; every encoding rule lives in
//! `joblib_core::hash` and is tested there.

use std::collections::HashMap;

use joblib_core::hash::{
    Algorithm, BlobSource, CanonicalHasher, Entered, NodeKind, StridedLayout, is_large,
};
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyRecursionError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyByteArray, PyBytes, PyCode, PyComplex, PyDict, PyFloat, PyFrozenSet, PyFunction, PyInt,
    PyList, PySet, PyString, PyTuple, PyType,
};
use pyo3::{PyTypeInfo, ffi, intern};

use crate::errors::{CoreResultExt, PicklingError};

/// Deepest nesting walked before `RecursionError` (also bounded by `sys.getrecursionlimit()`);
/// keeps the walker's native stack use far below a thread's stack size.
const MAX_DEPTH: usize = 5_000;

/// Hash `obj` and return the hex digest.
#[pyfunction]
#[pyo3(signature = (obj, hash_name = "xxh3", coerce_mmap = false))]
pub fn hash(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    hash_name: &str,
    coerce_mmap: bool,
) -> PyResult<String> {
    let algo: Algorithm = hash_name.parse().into_py_result()?;
    let mut walker = Walker::new(py, algo, coerce_mmap)?;
    walker.walk(obj)?;
    Ok(walker.hasher.finish().into_py_result()?.to_hex())
}

/// numpy's classes, found once numpy is imported (it cannot hold an array otherwise, so the
/// walker never imports it itself) and kept for the life of the interpreter.
struct Numpy<'py> {
    ndarray: Bound<'py, PyType>,
    memmap: Bound<'py, PyType>,
    generic: Bound<'py, PyType>,
    dtype: Bound<'py, PyType>,
    asarray: Bound<'py, PyAny>,
}

struct NumpyRefs {
    ndarray: Py<PyType>,
    memmap: Py<PyType>,
    generic: Py<PyType>,
    dtype: Py<PyType>,
    asarray: Py<PyAny>,
}

/// Interpreter objects every call needs. Looking them up per call costs more than hashing a
/// small argument dict (`import` raises and swallows an `AttributeError` internally).
struct Interpreter {
    sys_modules: Py<PyDict>,
    getrecursionlimit: Py<PyAny>,
    dispatch_table: Py<PyDict>,
}

static INTERPRETER: PyOnceLock<Interpreter> = PyOnceLock::new();
static NUMPY: PyOnceLock<NumpyRefs> = PyOnceLock::new();

fn interpreter(py: Python<'_>) -> PyResult<&Interpreter> {
    INTERPRETER.get_or_try_init(py, || {
        let sys = py.import(intern!(py, "sys"))?;
        Ok(Interpreter {
            sys_modules: sys.getattr(intern!(py, "modules"))?.cast_into()?.unbind(),
            getrecursionlimit: sys.getattr(intern!(py, "getrecursionlimit"))?.unbind(),
            dispatch_table: py
                .import(intern!(py, "copyreg"))?
                .getattr(intern!(py, "dispatch_table"))?
                .cast_into()?
                .unbind(),
        })
    })
}

impl<'py> Numpy<'py> {
    fn lookup(py: Python<'py>, modules: &Bound<'py, PyDict>) -> PyResult<Option<Self>> {
        let refs = match NUMPY.get(py) {
            Some(refs) => refs,
            None => {
                let Some(np) = modules.get_item(intern!(py, "numpy"))? else {
                    return Ok(None);
                };
                let ty = |name: &str| -> PyResult<Py<PyType>> {
                    Ok(np.getattr(name)?.cast_into::<PyType>()?.unbind())
                };
                NUMPY.get_or_try_init(py, || -> PyResult<NumpyRefs> {
                    Ok(NumpyRefs {
                        ndarray: ty("ndarray")?,
                        memmap: ty("memmap")?,
                        generic: ty("generic")?,
                        dtype: ty("dtype")?,
                        asarray: np.getattr("asarray")?.unbind(),
                    })
                })?
            }
        };
        Ok(Some(Self {
            ndarray: refs.ndarray.bind(py).clone(),
            memmap: refs.memmap.bind(py).clone(),
            generic: refs.generic.bind(py).clone(),
            dtype: refs.dtype.bind(py).clone(),
            asarray: refs.asarray.bind(py).clone(),
        }))
    }
}

struct Walker<'py> {
    py: Python<'py>,
    hasher: CanonicalHasher,
    coerce_mmap: bool,
    numpy: Option<Numpy<'py>>,
    max_depth: usize,
    /// Objects whose id is in the memo: kept alive so no id is reused during the walk.
    keep_alive: Vec<Bound<'py, PyAny>>,
    /// dtype object address → canonical descriptor.
    dtype_labels: HashMap<usize, String>,
    /// `copyreg.dispatch_table`: reducers registered for types (numpy ufuncs use it), which
    /// pickle consults before `__reduce_ex__`.
    dispatch_table: Bound<'py, PyDict>,
}

/// Most items taken from one reducer's `listitems` iterator (2**26): beyond, `hash` fails
/// instead of running on (an endless iterator). Memory stays flat meanwhile: ordered frames
/// stream into their digest (see `docs/hashing.md`).
const MAX_LIST_ITEMS: usize = 1 << 26;
/// Most entries taken from one reducer's `dictitems` iterator (2**24): each entry keeps a
/// 16-20 byte digest until the frame is sorted, so this bounds that memory to about 350 MB.
const MAX_DICT_ITEMS: usize = 1 << 24;

fn too_many_items(obj: &Bound<'_, PyAny>, what: &str, cap: usize) -> PyErr {
    PicklingError::new_err(format!(
        "Cannot hash object of type {}: its reducer yields more than {cap} {what} items (an \
         endless iterator?)",
        type_name(obj)
    ))
}

fn id_of(obj: &Bound<'_, PyAny>) -> usize {
    obj.as_ptr() as usize
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    let ty = obj.get_type();
    match (ty.module(), ty.qualname()) {
        (Ok(m), Ok(q)) if m.to_cow().is_ok_and(|m| m == "builtins") => q.to_string(),
        (Ok(m), Ok(q)) => format!("{m}.{q}"),
        _ => "<unknown type>".to_owned(),
    }
}

impl<'py> Walker<'py> {
    fn new(py: Python<'py>, algo: Algorithm, coerce_mmap: bool) -> PyResult<Self> {
        let interp = interpreter(py)?;
        let limit: usize = interp.getrecursionlimit.bind(py).call0()?.extract()?;
        Ok(Self {
            py,
            hasher: CanonicalHasher::new(algo),
            coerce_mmap,
            numpy: Numpy::lookup(py, interp.sys_modules.bind(py))?,
            max_depth: limit.min(MAX_DEPTH),
            keep_alive: Vec::new(),
            dtype_labels: HashMap::new(),
            dispatch_table: interp.dispatch_table.bind(py).clone(),
        })
    }

    /// Opens a memoised container node for `obj`; `false` when it was seen before.
    fn enter(&mut self, kind: NodeKind, obj: &Bound<'py, PyAny>) -> PyResult<bool> {
        if self.hasher.depth() >= self.max_depth {
            return Err(PyRecursionError::new_err(format!(
                "maximum recursion depth exceeded while hashing an object of type {}",
                type_name(obj)
            )));
        }
        match self.hasher.enter(kind, Some(id_of(obj))) {
            Entered::Seen => Ok(false),
            Entered::Walk => {
                self.keep_alive.push(obj.clone());
                Ok(true)
            }
        }
    }

    /// Opens an anonymous node (never shared, no memo entry).
    fn enter_anonymous(&mut self, kind: NodeKind) -> PyResult<()> {
        if self.hasher.depth() >= self.max_depth {
            return Err(PyRecursionError::new_err(
                "maximum recursion depth exceeded while hashing an object",
            ));
        }
        self.hasher.enter(kind, None);
        Ok(())
    }

    fn leave(&mut self) -> PyResult<()> {
        self.hasher.leave().into_py_result()?;
        Ok(())
    }

    fn walk(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        let ty = obj.get_type_ptr();
        if obj.is_none() {
            self.hasher.none();
        } else if ty == PyInt::type_object_raw(py) {
            self.int(obj)?;
        } else if ty == PyString::type_object_raw(py) {
            self.str(obj.cast::<PyString>()?)?;
        } else if ty == PyFloat::type_object_raw(py) {
            self.hasher.float(obj.cast::<PyFloat>()?.value());
        } else if ty == pyo3::types::PyBool::type_object_raw(py) {
            self.hasher.boolean(obj.is_truthy()?);
        } else if ty == PyTuple::type_object_raw(py) {
            if self.enter(NodeKind::Tuple, obj)? {
                for item in obj.cast::<PyTuple>()?.iter() {
                    self.walk(&item)?;
                }
                self.leave()?;
            }
        } else if ty == PyList::type_object_raw(py) {
            if self.enter(NodeKind::List, obj)? {
                // Index loop: the list may legally change length while user code runs.
                let list = obj.cast::<PyList>()?;
                let mut i = 0;
                while let Ok(item) = list.get_item(i) {
                    self.walk(&item)?;
                    i += 1;
                }
                self.leave()?;
            }
        } else if ty == PyDict::type_object_raw(py) {
            if self.enter(NodeKind::Dict, obj)? {
                self.dict_entries(obj.cast::<PyDict>()?)?;
                self.leave()?;
            }
        } else if ty == PyBytes::type_object_raw(py) {
            let data = obj.cast::<PyBytes>()?.as_bytes();
            if is_large(data.len()) {
                let hasher = &mut self.hasher;
                py.detach(|| hasher.bytes(data));
            } else {
                self.hasher.bytes(data);
            }
        } else if ty == PySet::type_object_raw(py) || ty == PyFrozenSet::type_object_raw(py) {
            let kind = if ty == PySet::type_object_raw(py) {
                NodeKind::Set
            } else {
                NodeKind::FrozenSet
            };
            if self.enter(kind, obj)? {
                for item in obj.try_iter()? {
                    self.hasher.begin_entry().into_py_result()?;
                    self.walk(&item?)?;
                    self.hasher.end_entry().into_py_result()?;
                }
                self.leave()?;
            }
        } else if ty == PyByteArray::type_object_raw(py) {
            self.byte_buffer(obj, true)?;
        } else if ty == PyComplex::type_object_raw(py) {
            let c = obj.cast::<PyComplex>()?;
            self.hasher.complex(c.real(), c.imag());
        } else if !self.numpy_value(obj)? {
            self.other(obj)?;
        }
        Ok(())
    }

    fn int(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        match obj.extract::<i64>() {
            Ok(v) => self.hasher.int(v),
            Err(_) => {
                // Beyond 64 bits: minimal little-endian two's complement, as the core expects.
                let py = self.py;
                let bits: usize = obj.call_method0(intern!(py, "bit_length"))?.extract()?;
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "signed"), true)?;
                let le = obj.call_method(
                    intern!(py, "to_bytes"),
                    (bits / 8 + 1, intern!(py, "little")),
                    Some(&kwargs),
                )?;
                self.hasher.int_bytes(le.cast::<PyBytes>()?.as_bytes());
            }
        }
        Ok(())
    }

    fn str(&mut self, s: &Bound<'py, PyString>) -> PyResult<()> {
        match s.to_str() {
            Ok(text) => self.hasher.str(text.as_bytes()),
            Err(_) => {
                // Lone surrogates: their surrogatepass bytes are never valid UTF-8, so they
                // cannot collide with any other string.
                let py = self.py;
                let raw = s.call_method1(
                    intern!(py, "encode"),
                    (intern!(py, "utf-8"), intern!(py, "surrogatepass")),
                )?;
                self.hasher.str(raw.cast::<PyBytes>()?.as_bytes());
            }
        }
        Ok(())
    }

    fn dict_entries(&mut self, dict: &Bound<'py, PyDict>) -> PyResult<()> {
        // A snapshot of the items for big dicts would cost a tuple per entry; instead iterate
        // in place and turn a size change (user code mutating the dict) into RuntimeError.
        let expected = dict.len();
        let mut pos: ffi::Py_ssize_t = 0;
        loop {
            let mut key: *mut ffi::PyObject = std::ptr::null_mut();
            let mut value: *mut ffi::PyObject = std::ptr::null_mut();
            // SAFETY: `dict` is a live dict; PyDict_Next only writes borrowed pointers into the
            // out-parameters, which are turned into owned references before any Python runs.
            let more = unsafe { ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut key, &mut value) };
            if more == 0 {
                break;
            }
            // SAFETY: PyDict_Next returned 1, so both pointers are valid borrowed references.
            let (key, value) = unsafe {
                (
                    Bound::from_borrowed_ptr(self.py, key),
                    Bound::from_borrowed_ptr(self.py, value),
                )
            };
            self.hasher.begin_entry().into_py_result()?;
            self.walk(&key)?;
            self.walk(&value)?;
            self.hasher.end_entry().into_py_result()?;
            if dict.len() != expected {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "dictionary changed size during hashing",
                ));
            }
        }
        Ok(())
    }

    /// bytearray and pickle buffers: hashed through the buffer protocol. The buffer export
    /// prevents resizing, so the memory stays valid while the GIL is released.
    fn byte_buffer(&mut self, obj: &Bound<'py, PyAny>, is_bytearray: bool) -> PyResult<()> {
        let buffer = PyUntypedBuffer::get(obj)?;
        if !buffer.is_c_contiguous() {
            return Err(PicklingError::new_err(format!(
                "cannot hash non-contiguous buffer of {}",
                type_name(obj)
            )));
        }
        let (ptr, len) = (buffer.buf_ptr() as usize, buffer.len_bytes());
        let hasher = &mut self.hasher;
        let mut run = move || {
            // SAFETY: `buffer` holds an export of a C-contiguous buffer of `len` bytes at `ptr`,
            // alive until `buffer` is dropped after this closure returns.
            let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
            if is_bytearray {
                hasher.bytearray(data);
                Ok(())
            } else {
                hasher.buffer(BlobSource::Bytes(data))
            }
        };
        let result = if is_large(len) {
            self.py.detach(run)
        } else {
            run()
        };
        drop(buffer);
        result.into_py_result()
    }

    /// numpy arrays, scalars and dtypes. Returns `false` if `obj` is none of them.
    fn numpy_value(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<bool> {
        let Some(np) = &self.numpy else {
            return Ok(false);
        };
        let ty = obj.get_type();
        if ty.is(&np.ndarray) {
            self.array(obj, "ndarray")?;
        } else if ty.is(&np.memmap) {
            self.array(
                obj,
                if self.coerce_mmap {
                    "ndarray"
                } else {
                    "memmap"
                },
            )?;
        } else if obj.is_instance(&np.generic)? && !obj.is_instance(&np.ndarray)? {
            let as_array = np.asarray.call1((obj,))?;
            self.enter_anonymous(NodeKind::NumpyScalar)?;
            self.array_content(&as_array)?;
            self.leave()?;
        } else if obj.is_instance(&np.dtype)? {
            let label = self.dtype_label(obj)?;
            self.enter_anonymous(NodeKind::Dtype)?;
            self.hasher.label(&label);
            self.leave()?;
        } else {
            // ndarray subclasses other than memmap (matrix, masked arrays) carry extra state:
            // they go through __reduce_ex__ like any other object.
            return Ok(false);
        }
        Ok(true)
    }

    fn dtype_label(&mut self, dtype: &Bound<'py, PyAny>) -> PyResult<String> {
        let key = id_of(dtype);
        if let Some(label) = self.dtype_labels.get(&key) {
            return Ok(label.clone());
        }
        let py = self.py;
        let mut label: String = dtype.getattr(intern!(py, "str"))?.extract()?;
        if !dtype.getattr(intern!(py, "fields"))?.is_none() {
            // Structured: names, formats and padding all matter.
            label.push('|');
            label.push_str(&dtype.getattr(intern!(py, "descr"))?.repr()?.to_cow()?);
        }
        self.keep_alive.push(dtype.clone());
        self.dtype_labels.insert(key, label.clone());
        Ok(label)
    }

    fn array(&mut self, obj: &Bound<'py, PyAny>, class_label: &str) -> PyResult<()> {
        if self.enter(NodeKind::Array, obj)? {
            self.hasher.label(class_label);
            self.array_content(obj)?;
            self.leave()?;
        }
        Ok(())
    }

    /// dtype, shape and data of an array (the node is already open).
    fn array_content(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let array = obj.cast::<PyUntypedArray>()?;
        let dtype = array.dtype();
        let label = self.dtype_label(dtype.as_any())?;
        self.hasher.label(&label);
        self.hasher.int(array.ndim() as i64);
        for &n in array.shape() {
            self.hasher.int(n as i64);
        }
        if dtype.has_object() {
            // Python objects inside: walk them in C order.
            let items = obj
                .call_method0(intern!(self.py, "ravel"))?
                .call_method0(intern!(self.py, "tolist"))?;
            self.enter_anonymous(NodeKind::ObjectArray)?;
            for item in items.cast::<PyList>()?.iter() {
                self.walk(&item)?;
            }
            return self.leave();
        }
        let layout = StridedLayout::new(dtype.itemsize(), array.shape(), array.strides())
            .into_py_result()?;
        // SAFETY: `as_array_ptr` points at the live PyArrayObject behind `array`.
        let data = unsafe { (*array.as_array_ptr()).fields.data } as usize;
        let (start, span) = (data.wrapping_sub(layout.first()), layout.span());
        let hasher = &mut self.hasher;
        let layout = &layout;
        let mut run = move || {
            let region: &[u8] = if span == 0 {
                &[]
            } else {
                // SAFETY: numpy guarantees every element of the array lies inside its
                // allocation; `first`/`span` are the lowest and highest bytes the strides reach
                // from the data pointer. `obj` keeps the memory alive for the whole call (and
                // holds a reference, so numpy refuses to resize it).
                unsafe { std::slice::from_raw_parts(start as *const u8, span) }
            };
            hasher.buffer(BlobSource::Strided { layout, region })
        };
        let result = if is_large(span) {
            self.py.detach(run)
        } else {
            run()
        };
        result.into_py_result()
    }

    /// Functions, classes, code objects, and everything else through `__reduce_ex__`.
    fn other(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        if obj.is_instance_of::<PyFunction>() {
            return self.function(obj);
        }
        if obj.is_instance_of::<PyType>() {
            let module: String = obj.getattr(intern!(py, "__module__"))?.str()?.extract()?;
            let qualname: String = obj.getattr(intern!(py, "__qualname__"))?.str()?.extract()?;
            self.hasher.global(&module, &qualname);
            return Ok(());
        }
        if obj.is_instance_of::<PyCode>() {
            return self.code(obj);
        }
        if obj.get_type().name()?.to_cow()? == "PickleBuffer" {
            let raw = obj.call_method0(intern!(py, "raw"))?;
            return self.byte_buffer(&raw, false);
        }
        self.reduce(obj)
    }

    fn function(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        let module = obj.getattr(intern!(py, "__module__"))?;
        let module: String = if module.is_none() {
            String::new()
        } else {
            module.str()?.extract()?
        };
        let qualname: String = obj.getattr(intern!(py, "__qualname__"))?.str()?.extract()?;
        if !qualname.contains('<') {
            // Importable by name, as pickle would reference it.
            self.hasher.global(&module, &qualname);
            return Ok(());
        }
        // Lambdas and nested functions: two of them may share a name, so their code,
        // defaults and closure contents identify them.
        if self.enter(NodeKind::Function, obj)? {
            self.hasher.global(&module, &qualname);
            self.walk(&obj.getattr(intern!(py, "__code__"))?)?;
            self.walk(&obj.getattr(intern!(py, "__defaults__"))?)?;
            self.walk(&obj.getattr(intern!(py, "__kwdefaults__"))?)?;
            let closure = obj.getattr(intern!(py, "__closure__"))?;
            if closure.is_none() {
                self.hasher.none();
            } else {
                self.enter_anonymous(NodeKind::Tuple)?;
                for cell in closure.try_iter()? {
                    match cell?.getattr(intern!(py, "cell_contents")) {
                        Ok(value) => self.walk(&value)?,
                        Err(_) => self.hasher.label("<empty cell>"),
                    }
                }
                self.leave()?;
            }
            self.leave()?;
        }
        Ok(())
    }

    fn code(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        if self.enter(NodeKind::Code, obj)? {
            for attr in [
                intern!(py, "co_name"),
                intern!(py, "co_code"),
                intern!(py, "co_consts"),
                intern!(py, "co_names"),
                intern!(py, "co_varnames"),
                intern!(py, "co_argcount"),
                intern!(py, "co_kwonlyargcount"),
            ] {
                self.walk(&obj.getattr(attr)?)?;
            }
            self.leave()?;
        }
        Ok(())
    }

    fn reduce(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        let reduced = match self.dispatch_table.get_item(obj.get_type())? {
            Some(reducer) => reducer.call1((obj,)),
            None => obj.call_method1(intern!(py, "__reduce_ex__"), (5,)),
        };
        let rv = reduced.map_err(|err| {
            let wrapped = PicklingError::new_err(format!(
                "Cannot hash object of type {}: {err}",
                type_name(obj)
            ));
            wrapped.set_cause(py, Some(err));
            wrapped
        })?;
        if let Ok(name) = rv.cast::<PyString>() {
            // A global, named by reference.
            let module = obj
                .getattr(intern!(py, "__module__"))
                .ok()
                .filter(|m| !m.is_none());
            let module: String = match module {
                Some(m) => m.str()?.extract()?,
                None => String::new(),
            };
            self.hasher.global(&module, &name.to_cow()?);
            return Ok(());
        }
        let parts = match rv.cast::<PyTuple>() {
            Ok(t) if (2..=6).contains(&t.len()) => t.clone(),
            _ => {
                return Err(PicklingError::new_err(format!(
                    "Cannot hash object of type {}: __reduce_ex__ returned {}, not a tuple of 2 to 6 items",
                    type_name(obj),
                    type_name(&rv)
                )));
            }
        };
        if !self.enter(NodeKind::Reduce, obj)? {
            return Ok(());
        }
        // Keep the reduce value alive too: its parts are memoised by id.
        self.keep_alive.push(rv.clone());
        for i in 0..3 {
            match parts.get_item(i) {
                Ok(part) => self.walk(&part)?,
                Err(_) => self.hasher.none(),
            }
        }
        match parts.get_item(3) {
            Ok(items) if !items.is_none() => {
                self.enter_anonymous(NodeKind::ListItems)?;
                for (n, item) in items.try_iter()?.enumerate() {
                    if n >= MAX_LIST_ITEMS {
                        return Err(too_many_items(obj, "list", MAX_LIST_ITEMS));
                    }
                    self.walk(&item?)?;
                }
                self.leave()?;
            }
            _ => self.hasher.none(),
        }
        match parts.get_item(4) {
            Ok(items) if !items.is_none() => {
                self.enter_anonymous(NodeKind::DictItems)?;
                for (n, pair) in items.try_iter()?.enumerate() {
                    if n >= MAX_DICT_ITEMS {
                        return Err(too_many_items(obj, "dict", MAX_DICT_ITEMS));
                    }
                    let pair = pair?;
                    let (key, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = pair.extract().map_err(|_| {
                        PicklingError::new_err(format!(
                            "Cannot hash object of type {}: its dict items are not (key, value) pairs",
                            type_name(obj)
                        ))
                    })?;
                    self.hasher.begin_entry().into_py_result()?;
                    self.walk(&key)?;
                    self.walk(&value)?;
                    self.hasher.end_entry().into_py_result()?;
                }
                self.leave()?;
            }
            _ => self.hasher.none(),
        }
        if let Ok(setter) = parts.get_item(5) {
            self.walk(&setter)?;
        }
        self.leave()
    }
}
