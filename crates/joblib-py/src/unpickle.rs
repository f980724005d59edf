//! The restricted unpickler: a pickle VM that builds data itself and asks a policy for
//! everything else.
//!
//! ```text
//!  pickle bytes ─► joblib_core::pickle::OpReader ─► Op ─► this VM
//!                                                        │ data opcodes (ints, floats, str,
//!                                                        │ bytes, list, tuple, dict, set...):
//!                                                        │ built here, nothing imported
//!                                                        │
//!                                                        └ GLOBAL / STACK_GLOBAL / INST:
//!                                                          policy.resolve(module, name, proto)
//!                                                          ─► Resolved(call, value, new, build)
//!                                                          or pickle.UnpicklingError
//! ```
//!
//! Nothing named in the file is ever called directly: `REDUCE` calls the resolved `call`
//! (a validating constructor of the policy, or a global the user allowed), `NEWOBJ` and
//! `INST`/`OBJ` the resolved `new`, and `BUILD` applies only to an object made by such a
//! call, through the `build` handler that call's global came with — never to a global
//! itself (a class, a module, a function). Each object is built at most once, and objects
//! whose build handler validates data (numpy dtypes and arrays) cannot be built after they
//! were used. Persistent ids and the copyreg extension registry are refused.
//!
//! The policy (`joblib_rs._restricted`) decides what each name means; this VM decides only
//! the order of operations and the shapes of the stack. Every length comes from the
//! bounds-checked [`OpReader`].

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use joblib_core::pickle::{Op, OpReader, PickleError};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple};

use crate::errors::{corrupt, unpickling_error};

/// A global as the policy resolved it.
struct Resolved<'py> {
    /// `module.name`, for messages.
    name: String,
    /// What `REDUCE` calls (None: the global cannot be called).
    call: Option<Bound<'py, PyAny>>,
    /// What the global is when used as a value (None: it cannot be).
    value: Option<Bound<'py, PyAny>>,
    /// What `NEWOBJ`/`NEWOBJ_EX`/`INST`/`OBJ` call (None: not allowed).
    new: Option<Bound<'py, PyAny>>,
    /// `build(obj, state, stream) -> obj` for objects made from this global (None: `BUILD`
    /// on them is refused).
    build: Option<Bound<'py, PyAny>>,
    /// Whether objects made from this global may not be built once used as data.
    freeze_on_use: bool,
}

/// A value on the stack or in the memo.
#[derive(Clone)]
enum Val<'py> {
    /// Plain data.
    Obj(Bound<'py, PyAny>),
    /// A global, not yet called.
    Global(Rc<Resolved<'py>>),
    /// An object made by calling a global, with the global it came from (for `BUILD`).
    Made(Bound<'py, PyAny>, Rc<Resolved<'py>>),
}

/// Position in the data shared with Python build handlers (joblib's array wrappers read
/// the raw array bytes that follow their `BUILD` opcode and move it).
#[pyclass(module = "joblib_rs._core", name = "PickleStream")]
pub struct PickleStream {
    /// The whole input (a buffer object).
    #[pyo3(get)]
    data: Py<PyAny>,
    /// Offset of the next opcode.
    #[pyo3(get, set)]
    pos: usize,
    /// Where the input starts in its file (for memory maps), or None.
    #[pyo3(get)]
    file_offset: Option<u64>,
}

/// The memo: dense ids in a vector (what picklers write), sparse ones in a map, so a
/// hostile id never makes us allocate.
struct Memo<'py> {
    dense: Vec<Option<Val<'py>>>,
    sparse: HashMap<u64, Val<'py>>,
}

impl<'py> Memo<'py> {
    fn put(&mut self, id: u64, val: Val<'py>) {
        let len = self.dense.len() as u64;
        if id == len {
            self.dense.push(Some(val));
        } else if id < len {
            self.dense[id as usize] = Some(val);
        } else if id <= len + 1024 {
            self.dense.resize(id as usize + 1, None);
            self.dense[id as usize] = Some(val);
        } else {
            self.sparse.insert(id, val);
        }
    }

    fn get(&self, id: u64) -> Option<&Val<'py>> {
        match usize::try_from(id).ok().and_then(|i| self.dense.get(i)) {
            Some(Some(v)) => Some(v),
            _ => self.sparse.get(&id),
        }
    }

    fn next_id(&self) -> u64 {
        self.dense.len() as u64 + self.sparse.len() as u64
    }
}

struct Vm<'py> {
    py: Python<'py>,
    policy: Bound<'py, PyAny>,
    /// Whether containers of other types than list/dict/set may receive items (their own
    /// `append`/`extend`/`__setitem__`/`add` run: only when the user allowed classes).
    generic: bool,
    /// Exact types besides list whose `extend` takes APPENDS even when `generic` is off.
    appendable: Vec<Bound<'py, pyo3::types::PyType>>,
    buffers: Option<Bound<'py, pyo3::types::PyIterator>>,
    stack: Vec<Val<'py>>,
    marks: Vec<usize>,
    memo: Memo<'py>,
    globals: HashMap<(String, String), Rc<Resolved<'py>>>,
    /// Objects already built (by address; they stay alive in the memo or the stack).
    built: HashSet<usize>,
    /// Objects used as data whose global wants no `BUILD` after use.
    frozen: HashSet<usize>,
    /// Reused between opcodes that collect items (tuples, lists, dicts).
    scratch: Vec<Bound<'py, PyAny>>,
    proto: u8,
}

fn damaged(pos: usize, why: &str) -> PyErr {
    corrupt(format!("pickle data is damaged at byte {pos}: {why}"))
}

impl<'py> Vm<'py> {
    fn pop(&mut self, pos: usize) -> PyResult<Val<'py>> {
        let base = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= base {
            return Err(damaged(pos, "stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| damaged(pos, "stack underflow"))
    }

    fn top(&self, pos: usize) -> PyResult<&Val<'py>> {
        let base = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= base {
            return Err(damaged(pos, "stack underflow"));
        }
        self.stack
            .last()
            .ok_or_else(|| damaged(pos, "stack underflow"))
    }

    /// The object on top of the stack that APPENDS/SETITEMS/ADDITEMS fill: never a global
    /// (a class or function must not be changed by the file).
    fn container(&mut self, pos: usize) -> PyResult<Bound<'py, PyAny>> {
        match self.top(pos)?.clone() {
            Val::Global(g) => Err(unpickling_error(format!(
                "adding items to global '{}' at byte {pos} is refused in a restricted load",
                g.name
            ))),
            other => self.obj(other),
        }
    }

    fn pop_mark(&mut self, pos: usize) -> PyResult<Vec<Val<'py>>> {
        let base = self.marks.pop().ok_or_else(|| damaged(pos, "no MARK"))?;
        if base > self.stack.len() {
            return Err(damaged(pos, "MARK beyond the stack"));
        }
        Ok(self.stack.split_off(base))
    }

    /// A value as a Python object: globals only where the policy gave them a value.
    fn obj(&mut self, val: Val<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_obj(&mut self.frozen, val)
    }

    fn objs(&mut self, vals: Vec<Val<'py>>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        vals.into_iter().map(|v| self.obj(v)).collect()
    }

    /// Pops the top value as an object.
    fn pop_obj(&mut self, pos: usize) -> PyResult<Bound<'py, PyAny>> {
        let v = self.pop(pos)?;
        self.obj(v)
    }

    /// Pops the innermost MARK: the stack index where its items start.
    fn mark_start(&mut self, pos: usize) -> PyResult<usize> {
        let base = self.marks.pop().ok_or_else(|| damaged(pos, "no MARK"))?;
        if base > self.stack.len() {
            return Err(damaged(pos, "MARK beyond the stack"));
        }
        Ok(base)
    }

    /// Moves the stack from `start` on into the scratch vector, as objects (the hot path
    /// of tuples, lists and dicts: no allocation once the scratch vector has grown).
    fn take_from(&mut self, start: usize) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let Vm { stack, frozen, .. } = self;
        for v in stack.drain(start..) {
            out.push(to_obj(frozen, v)?);
        }
        Ok(out)
    }

    /// Gives the scratch vector back for the next `take_from`.
    fn give_back(&mut self, mut items: Vec<Bound<'py, PyAny>>) {
        items.clear();
        self.scratch = items;
    }

    /// Index where the last `n` stack items start, within the current MARK.
    fn last_n(&self, n: usize, pos: usize) -> PyResult<usize> {
        let base = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < base + n {
            return Err(damaged(pos, "stack underflow"));
        }
        Ok(self.stack.len() - n)
    }

    fn resolve(&mut self, module: &str, name: &str) -> PyResult<Rc<Resolved<'py>>> {
        let key = (module.to_owned(), name.to_owned());
        if let Some(r) = self.globals.get(&key) {
            return Ok(r.clone());
        }
        let res = self
            .policy
            .call_method1("resolve", (module, name, self.proto))?;
        let field = |attr: &str| -> PyResult<Option<Bound<'py, PyAny>>> {
            let v = res.getattr(attr)?;
            Ok(if v.is_none() { None } else { Some(v) })
        };
        let resolved = Rc::new(Resolved {
            name: format!("{module}.{name}"),
            call: field("call")?,
            value: if res.getattr("has_value")?.is_truthy()? {
                Some(res.getattr("value")?)
            } else {
                None
            },
            new: field("new")?,
            build: field("build")?,
            freeze_on_use: res.getattr("freeze_on_use")?.is_truthy()?,
        });
        self.globals.insert(key, resolved.clone());
        Ok(resolved)
    }

    fn global_of(&mut self, val: Val<'py>, pos: usize, what: &str) -> PyResult<Rc<Resolved<'py>>> {
        match val {
            Val::Global(g) => Ok(g),
            Val::Obj(_) | Val::Made(..) => Err(unpickling_error(format!(
                "{what} at byte {pos} applies to a value that is not a global: refused in a \
                 restricted load"
            ))),
        }
    }

    fn tuple_arg(
        &mut self,
        val: Val<'py>,
        pos: usize,
        what: &str,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let o = self.obj(val)?;
        o.cast_into::<PyTuple>()
            .map_err(|_| damaged(pos, &format!("{what} arguments are not a tuple")))
    }

    fn made(&self, obj: Bound<'py, PyAny>, from: &Rc<Resolved<'py>>) -> Val<'py> {
        Val::Made(obj, from.clone())
    }

    fn reduce(&mut self, pos: usize) -> PyResult<()> {
        let args = self.pop(pos)?;
        let func = self.pop(pos)?;
        let g = self.global_of(func, pos, "REDUCE")?;
        let args = self.tuple_arg(args, pos, "REDUCE")?;
        let call = g.call.clone().ok_or_else(|| {
            unpickling_error(format!(
                "global '{}' cannot be called in a restricted load",
                g.name
            ))
        })?;
        let out = call.call1(args)?;
        let val = self.made(out, &g);
        self.stack.push(val);
        Ok(())
    }

    fn new_of(&self, g: &Rc<Resolved<'py>>, op: &str) -> PyResult<Bound<'py, PyAny>> {
        g.new.clone().ok_or_else(|| {
            unpickling_error(format!(
                "{op} of global '{}' is not allowed in a restricted load",
                g.name
            ))
        })
    }

    fn newobj(&mut self, pos: usize, with_kwargs: bool) -> PyResult<()> {
        let kwargs = if with_kwargs {
            let k = self.pop(pos)?;
            let k = self.obj(k)?;
            Some(
                k.cast_into::<PyDict>()
                    .map_err(|_| damaged(pos, "NEWOBJ_EX keyword arguments are not a dict"))?,
            )
        } else {
            None
        };
        let args = self.pop(pos)?;
        let cls = self.pop(pos)?;
        let g = self.global_of(cls, pos, "NEWOBJ")?;
        let args = self.tuple_arg(args, pos, "NEWOBJ")?;
        let new = self.new_of(&g, "NEWOBJ")?;
        let out = new.call(args, kwargs.as_ref())?;
        let val = self.made(out, &g);
        self.stack.push(val);
        Ok(())
    }

    fn instantiate(&mut self, g: Rc<Resolved<'py>>, args: Vec<Val<'py>>) -> PyResult<()> {
        let args = self.objs(args)?;
        let args = PyTuple::new(self.py, args)?;
        let new = self.new_of(&g, "INST/OBJ")?;
        let out = new.call1(args)?;
        let val = self.made(out, &g);
        self.stack.push(val);
        Ok(())
    }

    fn build(&mut self, pos: usize, stream: &Bound<'py, PickleStream>) -> PyResult<()> {
        let state = self.pop(pos)?;
        let state = self.obj(state)?;
        let target = self.pop(pos)?;
        let (obj, from) = match target {
            Val::Made(o, from) => (o, from),
            Val::Global(g) => {
                return Err(unpickling_error(format!(
                    "BUILD on global '{}' (a class, function or module, not an instance) is \
                     refused in a restricted load",
                    g.name
                )));
            }
            Val::Obj(o) => {
                let t = o.get_type().name()?.to_string();
                return Err(unpickling_error(format!(
                    "BUILD on a value of type '{t}' that the file did not make by calling an \
                     allowed global is refused in a restricted load"
                )));
            }
        };
        let addr = obj.as_ptr() as usize;
        if self.frozen.contains(&addr) || !self.built.insert(addr) {
            return Err(unpickling_error(format!(
                "BUILD of an object made by '{}' twice, or after it was used, is refused in a \
                 restricted load",
                from.name
            )));
        }
        let handler = from.build.clone().ok_or_else(|| {
            unpickling_error(format!(
                "BUILD (setting the state) of objects made by '{}' is refused in a restricted \
                 load",
                from.name
            ))
        })?;
        stream.borrow_mut().pos = pos;
        let out = handler.call1((obj, state, stream))?;
        // The result is plain data from now on.
        self.stack.push(Val::Obj(out));
        Ok(())
    }

    fn run(
        &mut self,
        data: &[u8],
        start: usize,
        stream: &Bound<'py, PickleStream>,
    ) -> PyResult<(Bound<'py, PyAny>, usize)> {
        let py = self.py;
        let mut reader = OpReader::new(data, start);
        loop {
            let pos = reader.position();
            let op = reader
                .next_op()
                .map_err(pickle_error)?
                .ok_or_else(|| corrupt(format!("pickle data was truncated at byte {pos}")))?;
            match op {
                Op::Proto(p) => {
                    if p > 5 {
                        return Err(damaged(pos, &format!("unsupported pickle protocol {p}")));
                    }
                    self.proto = p;
                }
                Op::Frame(_) => {}
                Op::Stop => {
                    let v = self.pop(pos)?;
                    let o = self.obj(v)?;
                    return Ok((o, reader.position()));
                }
                Op::Mark => self.marks.push(self.stack.len()),
                Op::Pop => {
                    let base = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() > base {
                        self.stack.pop();
                    } else {
                        self.pop_mark(pos)?;
                    }
                }
                Op::PopMark => {
                    self.pop_mark(pos)?;
                }
                Op::Dup => {
                    let v = self.top(pos)?.clone();
                    self.stack.push(v);
                }
                Op::None => self.stack.push(Val::Obj(py.None().into_bound(py))),
                Op::Bool(b) => self.stack.push(Val::Obj(
                    pyo3::types::PyBool::new(py, b).to_owned().into_any(),
                )),
                Op::Int(i) => self.stack.push(Val::Obj(i.into_pyobject(py)?.into_any())),
                Op::LongBytes(b) => self.stack.push(Val::Obj(long_from_bytes(py, b)?)),
                Op::LongText(t) => {
                    let int = py.get_type::<pyo3::types::PyInt>();
                    self.stack.push(Val::Obj(int.call1((t,))?));
                }
                Op::Float(f) => self.stack.push(Val::Obj(f.into_pyobject(py)?.into_any())),
                Op::String(b) => {
                    // A Python 2 str: decoded as ASCII, as pickle.load's default encoding.
                    let s = std::str::from_utf8(&b)
                        .ok()
                        .filter(|s| s.is_ascii())
                        .ok_or_else(|| damaged(pos, "non-ASCII Python 2 string"))?;
                    self.stack.push(Val::Obj(PyString::new(py, s).into_any()));
                }
                Op::Unicode(b) => self.stack.push(Val::Obj(utf8(py, b)?)),
                Op::UnicodeRawEscape(b) => self.stack.push(Val::Obj(raw_unicode_escape(py, b)?)),
                Op::Bytes(b) => self.stack.push(Val::Obj(PyBytes::new(py, b).into_any())),
                Op::ByteArray(b) => self
                    .stack
                    .push(Val::Obj(PyByteArray::new(py, b).into_any())),
                Op::NextBuffer => {
                    let next = self
                        .buffers
                        .as_mut()
                        .and_then(|it| it.next())
                        .transpose()?
                        .ok_or_else(|| damaged(pos, "NEXT_BUFFER without an out-of-band buffer"))?;
                    self.stack.push(Val::Obj(next));
                }
                Op::ReadonlyBuffer => {
                    let v = self.pop(pos)?;
                    let o = self.obj(v)?;
                    let view = py
                        .get_type::<pyo3::types::PyMemoryView>()
                        .call1((o,))?
                        .call_method0("toreadonly")?;
                    self.stack.push(Val::Obj(view));
                }
                Op::EmptyList => self.stack.push(Val::Obj(PyList::empty(py).into_any())),
                Op::List => {
                    let start = self.mark_start(pos)?;
                    let mut items = self.take_from(start)?;
                    let list = PyList::new(py, items.drain(..))?;
                    self.give_back(items);
                    self.stack.push(Val::Obj(list.into_any()));
                }
                Op::Append | Op::Appends => {
                    let start = if matches!(op, Op::Append) {
                        self.last_n(1, pos)?
                    } else {
                        self.mark_start(pos)?
                    };
                    let items = self.take_from(start)?;
                    let target = self.container(pos)?;
                    let items = self.append(&target, items, pos)?;
                    self.give_back(items);
                }
                Op::EmptyTuple => self.stack.push(Val::Obj(PyTuple::empty(py).into_any())),
                Op::TupleN(n @ 1..=3) => {
                    // The commonest tuples, straight from the stack.
                    self.last_n(usize::from(n), pos)?;
                    let c = self.pop_obj(pos)?;
                    let tuple = if n == 1 {
                        PyTuple::new(py, [c])?
                    } else {
                        let b = self.pop_obj(pos)?;
                        if n == 2 {
                            PyTuple::new(py, [b, c])?
                        } else {
                            let a = self.pop_obj(pos)?;
                            PyTuple::new(py, [a, b, c])?
                        }
                    };
                    self.stack.push(Val::Obj(tuple.into_any()));
                }
                Op::Tuple | Op::TupleN(_) => {
                    let start = match op {
                        Op::TupleN(n) => self.last_n(usize::from(n), pos)?,
                        _ => self.mark_start(pos)?,
                    };
                    let mut items = self.take_from(start)?;
                    let tuple = PyTuple::new(py, items.drain(..))?;
                    self.give_back(items);
                    self.stack.push(Val::Obj(tuple.into_any()));
                }
                Op::EmptyDict => self.stack.push(Val::Obj(PyDict::new(py).into_any())),
                Op::Dict => {
                    let start = self.mark_start(pos)?;
                    if !(self.stack.len() - start).is_multiple_of(2) {
                        return Err(damaged(pos, "odd number of items for DICT"));
                    }
                    let items = self.take_from(start)?;
                    let dict = PyDict::new(py);
                    for pair in items.chunks_exact(2) {
                        dict.set_item(&pair[0], &pair[1])?;
                    }
                    self.give_back(items);
                    self.stack.push(Val::Obj(dict.into_any()));
                }
                Op::SetItem | Op::SetItems => {
                    let start = if matches!(op, Op::SetItem) {
                        self.last_n(2, pos)?
                    } else {
                        self.mark_start(pos)?
                    };
                    if !(self.stack.len() - start).is_multiple_of(2) {
                        return Err(damaged(pos, "odd number of items for SETITEMS"));
                    }
                    let items = self.take_from(start)?;
                    let target = self.container(pos)?;
                    self.set_items(&target, &items, pos)?;
                    self.give_back(items);
                }
                Op::EmptySet => self.stack.push(Val::Obj(PySet::empty(py)?.into_any())),
                Op::AddItems => {
                    let items = self.pop_mark(pos)?;
                    let items = self.objs(items)?;
                    let target = self.container(pos)?;
                    if let Ok(set) = target.cast_exact::<PySet>() {
                        for item in items {
                            set.add(item)?;
                        }
                    } else if self.generic {
                        for item in items {
                            target.call_method1("add", (item,))?;
                        }
                    } else {
                        return Err(unpickling_error(format!(
                            "ADDITEMS on a '{}' is refused in a restricted load",
                            target.get_type().name()?
                        )));
                    }
                }
                Op::FrozenSet => {
                    let items = self.pop_mark(pos)?;
                    let items = self.objs(items)?;
                    self.stack
                        .push(Val::Obj(PyFrozenSet::new(py, items)?.into_any()));
                }
                Op::Global(module, name) => {
                    let g = self.resolve(module, name)?;
                    self.stack.push(Val::Global(g));
                }
                Op::StackGlobal => {
                    let name = self.pop(pos)?;
                    let module = self.pop(pos)?;
                    let (module, name) = (self.obj(module)?, self.obj(name)?);
                    let (module, name) = match (module.cast::<PyString>(), name.cast::<PyString>())
                    {
                        (Ok(m), Ok(n)) => (m.to_str()?.to_owned(), n.to_str()?.to_owned()),
                        _ => return Err(damaged(pos, "STACK_GLOBAL names are not strings")),
                    };
                    let g = self.resolve(&module, &name)?;
                    self.stack.push(Val::Global(g));
                }
                Op::Inst(module, name) => {
                    let args = self.pop_mark(pos)?;
                    let g = self.resolve(module, name)?;
                    self.instantiate(g, args)?;
                }
                Op::Obj => {
                    let mut args = self.pop_mark(pos)?;
                    if args.is_empty() {
                        return Err(damaged(pos, "OBJ without a class"));
                    }
                    let cls = args.remove(0);
                    let g = self.global_of(cls, pos, "OBJ")?;
                    self.instantiate(g, args)?;
                }
                Op::Reduce => self.reduce(pos)?,
                Op::NewObj => self.newobj(pos, false)?,
                Op::NewObjEx => self.newobj(pos, true)?,
                Op::Build => {
                    self.build(pos, stream)?;
                    // A build handler may have consumed raw bytes after the opcode.
                    let moved = stream.borrow().pos;
                    if moved != pos {
                        if moved < reader.position() || moved > data.len() {
                            return Err(damaged(pos, "array data beyond the file"));
                        }
                        reader = OpReader::new(data, moved);
                    }
                }
                Op::Put(id) => {
                    let v = self.top(pos)?.clone();
                    self.memo.put(id, v);
                }
                Op::Memoize => {
                    let v = self.top(pos)?.clone();
                    let id = self.memo.next_id();
                    self.memo.put(id, v);
                }
                Op::Get(id) => {
                    let v =
                        self.memo.get(id).cloned().ok_or_else(|| {
                            damaged(pos, &format!("memo key {id} was never stored"))
                        })?;
                    self.stack.push(v);
                }
                Op::Ext(code) => {
                    return Err(unpickling_error(format!(
                        "the copyreg extension registry (EXT code {code}) is refused in a \
                         restricted load"
                    )));
                }
                Op::PersId => {
                    return Err(unpickling_error(
                        "persistent ids (PERSID) are refused in a restricted load",
                    ));
                }
            }
        }
    }

    /// Appends `items` to `target`; gives the emptied vector back.
    fn append(
        &self,
        target: &Bound<'py, PyAny>,
        mut items: Vec<Bound<'py, PyAny>>,
        pos: usize,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        if let Ok(list) = target.cast_exact::<PyList>() {
            for item in items.drain(..) {
                list.append(item)?;
            }
            return Ok(items);
        }
        let extendable = self.appendable.iter().any(|t| target.get_type().is(t));
        if !self.generic && !extendable {
            return Err(unpickling_error(format!(
                "APPEND at byte {pos} on a '{}' is refused in a restricted load",
                target.get_type().name()?
            )));
        }
        // As pickle: `extend` if the object has it, else `append` item by item.
        if let Ok(extend) = target.getattr("extend") {
            extend.call1((PyList::new(self.py, items.drain(..))?,))?;
        } else {
            let append = target.getattr("append")?;
            for item in items.drain(..) {
                append.call1((item,))?;
            }
        }
        Ok(items)
    }

    fn set_items(
        &self,
        target: &Bound<'py, PyAny>,
        items: &[Bound<'py, PyAny>],
        pos: usize,
    ) -> PyResult<()> {
        if let Ok(dict) = target.cast_exact::<PyDict>() {
            for pair in items.chunks_exact(2) {
                dict.set_item(&pair[0], &pair[1])?;
            }
            return Ok(());
        }
        // dict subclasses (OrderedDict, Counter, defaultdict) keep their own __setitem__.
        if self.generic || target.cast::<PyDict>().is_ok() {
            for pair in items.chunks_exact(2) {
                target.set_item(&pair[0], &pair[1])?;
            }
            return Ok(());
        }
        Err(unpickling_error(format!(
            "SETITEM at byte {pos} on a '{}' is refused in a restricted load",
            target.get_type().name()?
        )))
    }
}

/// A value as a Python object (see `Vm::obj`); `frozen` records objects whose state may
/// no longer be set once used.
fn to_obj<'py>(frozen: &mut HashSet<usize>, val: Val<'py>) -> PyResult<Bound<'py, PyAny>> {
    match val {
        Val::Obj(o) => Ok(o),
        Val::Made(o, from) => {
            if from.freeze_on_use {
                frozen.insert(o.as_ptr() as usize);
            }
            Ok(o)
        }
        Val::Global(g) => g.value.clone().ok_or_else(|| {
            unpickling_error(format!(
                "global '{}' can be called but not stored as a value in a restricted load",
                g.name
            ))
        }),
    }
}

/// A `PickleError` from the opcode reader: the data is damaged.
fn pickle_error(err: PickleError) -> PyErr {
    corrupt(format!("pickle data is damaged: {err}"))
}

fn long_from_bytes<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if b.is_empty() {
        return Ok(0i64.into_pyobject(py)?.into_any());
    }
    if b.len() <= 8 {
        let mut buf = if b[b.len() - 1] & 0x80 != 0 {
            [0xffu8; 8]
        } else {
            [0u8; 8]
        };
        buf[..b.len()].copy_from_slice(b);
        return Ok(i64::from_le_bytes(buf).into_pyobject(py)?.into_any());
    }
    let int = py.get_type::<pyo3::types::PyInt>();
    let kwargs = [("signed", true)].into_py_dict(py)?;
    int.call_method("from_bytes", (PyBytes::new(py, b), "little"), Some(&kwargs))
}

fn utf8<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // As pickle: UTF-8 with 'surrogatepass' (lone surrogates are written that way); one
    // pass of CPython's decoder, which has an ASCII fast path.
    let len = isize::try_from(b.len()).map_err(|_| PyValueError::new_err("string too long"))?;
    // SAFETY: `b` is a live slice of `len` bytes and the error handler a NUL-terminated
    // C string; the call returns a new reference or NULL with an exception set.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeUTF8(b.as_ptr().cast(), len, c"surrogatepass".as_ptr());
        Bound::from_owned_ptr_or_err(py, ptr)
    }
}

fn raw_unicode_escape<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let len = isize::try_from(b.len()).map_err(|_| PyValueError::new_err("string too long"))?;
    // SAFETY: as in `utf8`: a live slice, a NUL-terminated error handler, a new reference.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeRawUnicodeEscape(b.as_ptr().cast(), len, c"strict".as_ptr());
        Bound::from_owned_ptr_or_err(py, ptr)
    }
}

use pyo3::types::IntoPyDict;

/// `unpickle(data, policy, buffers=None, start=0, file_offset=None) -> (obj, end)`
///
/// Decodes the pickle starting at `start` of `data` (any buffer) under `policy` (see
/// `joblib_rs._restricted`), taking out-of-band buffers from `buffers`. Returns the object
/// and the offset just after its `STOP`.
#[pyfunction]
#[pyo3(signature = (data, policy, buffers=None, start=0, file_offset=None))]
pub fn unpickle<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    policy: &Bound<'py, PyAny>,
    buffers: Option<&Bound<'py, PyAny>>,
    start: usize,
    file_offset: Option<u64>,
) -> PyResult<(Bound<'py, PyAny>, usize)> {
    let buf = PyUntypedBuffer::get(data)?;
    if !buf.is_c_contiguous() {
        return Err(crate::errors::not_contiguous());
    }
    let (ptr, len) = (buf.buf_ptr() as *const u8, buf.len_bytes());
    let bytes: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: `buf` holds the export of `data` until the end of this function, and the
        // GIL is held throughout, so the memory stays valid and is not resized; nothing
        // here writes through it.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    };
    let generic = policy.getattr("generic")?.is_truthy()?;
    let appendable = policy
        .getattr("appendable")?
        .try_iter()?
        .map(|t| Ok(t?.cast_into::<pyo3::types::PyType>()?))
        .collect::<PyResult<Vec<_>>>()?;
    let buffers = match buffers {
        Some(b) if !b.is_none() => Some(b.try_iter()?),
        _ => None,
    };
    let stream = Bound::new(
        py,
        PickleStream {
            data: data.clone().unbind(),
            pos: start,
            file_offset,
        },
    )?;
    let mut vm = Vm {
        py,
        policy: policy.clone(),
        generic,
        appendable,
        buffers,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo {
            dense: Vec::new(),
            sparse: HashMap::new(),
        },
        globals: HashMap::new(),
        built: HashSet::new(),
        frozen: HashSet::new(),
        scratch: Vec::new(),
        proto: 0,
    };
    let out = vm.run(bytes, start, &stream);
    drop(vm);
    drop(buf);
    out
}

/// Registers the unpickler in `joblib_rs._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PickleStream>()?;
    m.add_function(wrap_pyfunction!(unpickle, m)?)?;
    Ok(())
}
