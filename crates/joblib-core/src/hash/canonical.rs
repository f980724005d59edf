//! The canonical encoder: structure events in, one digest out.
//!
//! ```text
//!   walker (bindings)            CanonicalHasher
//!   ─────────────────            ───────────────────────────────────────────────
//!   int / str / bytes ...  ──►   tag + content appended to the current frame
//!   enter(List, id)        ──►   push frame ─┐
//!     ... children ...                       │  frame bytes = kind | items
//!   leave()                ──►   pop frame ◄─┘  NODE | digest(frame) into parent
//!   enter(Dict, id)              unordered frame: each entry digested on its own,
//!     begin_entry/end_entry      entry digests sorted, so insertion order is irrelevant
//!   finish()               ──►   digest(MAGIC | version | root item)
//! ```
//!
//! Containers are Merkle nodes: a parent holds the digest of each child container. That makes
//! the memo content-based: an object met again (shared reference) contributes the same digest
//! as its first visit, and an object met while it is still open (a cycle) contributes a back
//! reference counted in frames. The value therefore depends only on the object graph's content
//! and shape, never on ids, addresses or `PYTHONHASHSEED`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::HashError;
use super::blob::{BlobSource, encode_blob};
use super::digest::{Algorithm, Digest, Stream};

/// Bumped whenever the encoding changes; golden values in the tests pin each version.
pub const FORMAT_VERSION: u8 = 1;
const MAGIC: &[u8] = b"joblib-rs/hash";

/// Tags of items inside a frame.
mod tag {
    pub const NONE: u8 = 0x01;
    pub const TRUE: u8 = 0x02;
    pub const FALSE: u8 = 0x03;
    pub const INT: u8 = 0x04;
    pub const BIG_INT: u8 = 0x05;
    pub const FLOAT: u8 = 0x06;
    pub const COMPLEX: u8 = 0x07;
    pub const STR: u8 = 0x08;
    pub const BYTES: u8 = 0x09;
    pub const BYTEARRAY: u8 = 0x0a;
    pub const NODE: u8 = 0x0b;
    pub const CYCLE: u8 = 0x0c;
    pub const GLOBAL: u8 = 0x0d;
    pub const LABEL: u8 = 0x0e;
    pub const BUFFER: u8 = 0x0f;
}

/// Kinds of container frames. The discriminant is the first byte of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeKind {
    /// The implicit outermost frame.
    Root = 0x20,
    /// `list`.
    List = 0x21,
    /// `tuple`.
    Tuple = 0x22,
    /// `dict` (unordered).
    Dict = 0x23,
    /// `set` (unordered).
    Set = 0x24,
    /// `frozenset` (unordered).
    FrozenSet = 0x25,
    /// An object walked through `__reduce_ex__`: callable, args, state, items.
    Reduce = 0x26,
    /// `dictitems` of a reduce value (unordered, as joblib sorts them too).
    DictItems = 0x27,
    /// `listitems` of a reduce value.
    ListItems = 0x28,
    /// A numpy array of plain data: class marker, dtype, shape, data blob.
    Array = 0x29,
    /// A numpy array holding Python objects: dtype, shape, then each element.
    ObjectArray = 0x2a,
    /// A numpy scalar: dtype and data.
    NumpyScalar = 0x2b,
    /// A numpy dtype.
    Dtype = 0x2c,
    /// A Python function that cannot be named globally (lambda, nested, closure).
    Function = 0x2d,
    /// A code object.
    Code = 0x2e,
}

impl NodeKind {
    fn is_unordered(self) -> bool {
        matches!(
            self,
            Self::Dict | Self::Set | Self::FrozenSet | Self::DictItems
        )
    }
}

/// What [`CanonicalHasher::enter`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entered {
    /// A new frame is open: walk the children, then call `leave`.
    Walk,
    /// The object was seen before (shared or cyclic): its reference is written, walk nothing.
    Seen,
}

#[derive(Clone, Copy, Debug)]
enum Memo {
    /// Open at this frame depth.
    Open(usize),
    /// Finished with this digest.
    Done(Digest),
}

/// Identity hasher for object ids (already well spread addresses).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        // Objects are 16-byte aligned: mix the high bits down.
        self.0 = (n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_right(29);
    }
}

/// Bytes a frame buffers before they go into its streaming digest: a frame's memory stays
/// bounded however many items it holds (a huge list, an endless reducer iterator). The
/// digest is the same as of the whole frame at once.
const SPILL: usize = 1 << 20;

#[derive(Debug)]
struct Frame {
    kind: NodeKind,
    id: Option<usize>,
    buf: Vec<u8>,
    /// The digest state of the bytes already spilled out of `buf`, if any.
    spilled: Option<Stream>,
    /// Unordered frames only: digests of finished entries.
    entries: Vec<Digest>,
    /// Unordered frames only: bytes of the entry being written.
    entry: Option<Vec<u8>>,
}

/// Streams structure events into a canonical digest. See the module documentation.
#[derive(Debug)]
pub struct CanonicalHasher {
    algo: Algorithm,
    stack: Vec<Frame>,
    memo: HashMap<usize, Memo, BuildHasherDefault<IdHasher>>,
    spare: Vec<Vec<u8>>,
}

impl CanonicalHasher {
    /// A hasher whose nodes and final value use `algo`.
    pub fn new(algo: Algorithm) -> Self {
        let mut root = Vec::with_capacity(256);
        root.extend_from_slice(MAGIC);
        root.push(FORMAT_VERSION);
        root.push(NodeKind::Root as u8);
        let frame = Frame {
            kind: NodeKind::Root,
            id: None,
            buf: root,
            spilled: None,
            entries: Vec::new(),
            entry: None,
        };
        Self {
            algo,
            stack: vec![frame],
            memo: HashMap::default(),
            spare: Vec::new(),
        }
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        self.algo
    }

    /// Number of open container frames (0 at top level): the walker's recursion depth.
    pub fn depth(&self) -> usize {
        self.stack.len() - 1
    }

    fn sink(&mut self) -> &mut Vec<u8> {
        let algo = self.algo;
        let last = self.stack.len() - 1;
        let top = &mut self.stack[last];
        match top.entry.as_mut() {
            Some(entry) => entry,
            None => {
                if top.buf.len() >= SPILL {
                    top.spilled
                        .get_or_insert_with(|| algo.stream())
                        .update(&top.buf);
                    top.buf.clear();
                }
                &mut top.buf
            }
        }
    }

    fn put(&mut self, tag: u8, content: &[u8]) {
        let sink = self.sink();
        sink.push(tag);
        sink.extend_from_slice(content);
    }

    fn take_buf(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= 1 << 16 {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// `None`.
    pub fn none(&mut self) {
        self.put(tag::NONE, &[]);
    }

    /// `True` / `False`.
    pub fn boolean(&mut self, value: bool) {
        self.put(if value { tag::TRUE } else { tag::FALSE }, &[]);
    }

    /// An integer that fits in 64 bits.
    pub fn int(&mut self, value: i64) {
        self.put(tag::INT, &value.to_le_bytes());
    }

    /// An integer of any size, as little-endian two's complement bytes (any length).
    /// Values that fit in 64 bits are encoded exactly as [`Self::int`] would.
    pub fn int_bytes(&mut self, le: &[u8]) {
        let negative = le.last().is_some_and(|&b| b & 0x80 != 0);
        let fill = if negative { 0xff } else { 0x00 };
        // Shortest form that keeps the sign bit.
        let mut len = le.len();
        while len > 1 && le[len - 1] == fill && (le[len - 2] & 0x80 != 0) == negative {
            len -= 1;
        }
        let le = &le[..len];
        if le.len() <= 8 {
            let mut wide = [fill; 8];
            wide[..le.len()].copy_from_slice(le);
            self.int(i64::from_le_bytes(wide));
        } else {
            let sink = self.sink();
            sink.push(tag::BIG_INT);
            sink.extend_from_slice(&(le.len() as u64).to_le_bytes());
            sink.extend_from_slice(le);
        }
    }

    /// A float; every NaN encodes alike, `-0.0` differs from `0.0`.
    pub fn float(&mut self, value: f64) {
        self.put(tag::FLOAT, &canonical_f64(value));
    }

    /// A complex number.
    pub fn complex(&mut self, re: f64, im: f64) {
        let mut content = [0u8; 16];
        content[..8].copy_from_slice(&canonical_f64(re));
        content[8..].copy_from_slice(&canonical_f64(im));
        self.put(tag::COMPLEX, &content);
    }

    fn small_blob(&mut self, tag: u8, data: &[u8]) {
        let algo = self.algo;
        let sink = self.sink();
        sink.push(tag);
        // Bytes sources cannot fail.
        let _ = encode_blob(algo, BlobSource::Bytes(data), sink);
    }

    /// A `str`, as its UTF-8 bytes (lone surrogates as `surrogatepass` would write them).
    pub fn str(&mut self, utf8: &[u8]) {
        self.small_blob(tag::STR, utf8);
    }

    /// `bytes`.
    pub fn bytes(&mut self, data: &[u8]) {
        self.small_blob(tag::BYTES, data);
    }

    /// `bytearray`.
    pub fn bytearray(&mut self, data: &[u8]) {
        self.small_blob(tag::BYTEARRAY, data);
    }

    /// A descriptive string inside a node (a dtype, a class marker): distinct from `str` values.
    pub fn label(&mut self, text: &str) {
        self.small_blob(tag::LABEL, text.as_bytes());
    }

    /// A raw data buffer: array data or a pickle buffer. Large sources are chunk-digested in
    /// parallel, so call this without holding any interpreter lock.
    pub fn buffer(&mut self, src: BlobSource<'_>) -> Result<(), HashError> {
        let algo = self.algo;
        let sink = self.sink();
        sink.push(tag::BUFFER);
        encode_blob(algo, src, sink)
    }

    /// A module-level object named by reference: a class, a function, a pickle global.
    pub fn global(&mut self, module: &str, qualname: &str) {
        let algo = self.algo;
        let sink = self.sink();
        sink.push(tag::GLOBAL);
        let _ = encode_blob(algo, BlobSource::Bytes(module.as_bytes()), sink);
        let _ = encode_blob(algo, BlobSource::Bytes(qualname.as_bytes()), sink);
    }

    /// Opens a container. `id` identifies the object for the memo (`None`: never shared).
    pub fn enter(&mut self, kind: NodeKind, id: Option<usize>) -> Entered {
        if let Some(id) = id {
            match self.memo.get(&id).copied() {
                Some(Memo::Done(digest)) => {
                    self.put(tag::NODE, digest.as_bytes());
                    return Entered::Seen;
                }
                Some(Memo::Open(depth)) => {
                    let distance = (self.stack.len() - depth) as u64;
                    self.put(tag::CYCLE, &distance.to_le_bytes());
                    return Entered::Seen;
                }
                None => {
                    self.memo.insert(id, Memo::Open(self.stack.len()));
                }
            }
        }
        let mut buf = self.take_buf();
        buf.push(kind as u8);
        self.stack.push(Frame {
            kind,
            id,
            buf,
            spilled: None,
            entries: Vec::new(),
            entry: None,
        });
        Entered::Walk
    }

    /// Starts one entry of an unordered container (a dict pair or a set element).
    pub fn begin_entry(&mut self) -> Result<(), HashError> {
        let buf = self.take_buf();
        let top = self.stack.len() - 1;
        let frame = &mut self.stack[top];
        if !frame.kind.is_unordered() || frame.entry.is_some() {
            return Err(HashError::Unbalanced(
                "begin_entry outside an unordered container",
            ));
        }
        frame.entry = Some(buf);
        Ok(())
    }

    /// Ends the entry started by [`Self::begin_entry`].
    pub fn end_entry(&mut self) -> Result<(), HashError> {
        let algo = self.algo;
        let top = self.stack.len() - 1;
        let frame = &mut self.stack[top];
        let entry = frame
            .entry
            .take()
            .ok_or(HashError::Unbalanced("end_entry without begin_entry"))?;
        frame.entries.push(algo.digest(&entry));
        self.recycle(entry);
        Ok(())
    }

    /// Closes the innermost container and writes its digest into its parent.
    pub fn leave(&mut self) -> Result<Digest, HashError> {
        if self.stack.len() < 2 {
            return Err(HashError::Unbalanced("leave without enter"));
        }
        let Some(mut frame) = self.stack.pop() else {
            return Err(HashError::Unbalanced("leave without enter"));
        };
        if frame.entry.is_some() {
            return Err(HashError::Unbalanced("leave inside an open entry"));
        }
        if frame.kind.is_unordered() {
            frame.entries.sort_unstable();
            frame
                .buf
                .extend_from_slice(&(frame.entries.len() as u64).to_le_bytes());
            for d in &frame.entries {
                frame.buf.extend_from_slice(d.as_bytes());
            }
        }
        let digest = match frame.spilled.take() {
            Some(mut stream) => {
                stream.update(&frame.buf);
                stream.finish()
            }
            None => self.algo.digest(&frame.buf),
        };
        if let Some(id) = frame.id {
            self.memo.insert(id, Memo::Done(digest));
        }
        self.recycle(frame.buf);
        self.put(tag::NODE, digest.as_bytes());
        Ok(digest)
    }

    /// The final digest. Fails if a container is still open.
    pub fn finish(mut self) -> Result<Digest, HashError> {
        let unbalanced = HashError::Unbalanced("finish with open containers");
        if self.stack.len() != 1 {
            return Err(unbalanced);
        }
        let Some(root) = self.stack.pop() else {
            return Err(unbalanced);
        };
        if root.entry.is_some() {
            return Err(unbalanced);
        }
        Ok(match root.spilled {
            Some(mut stream) => {
                stream.update(&root.buf);
                stream.finish()
            }
            None => self.algo.digest(&root.buf),
        })
    }
}

/// Bytes of a float with every NaN folded to one quiet NaN.
fn canonical_f64(value: f64) -> [u8; 8] {
    if value.is_nan() {
        f64::NAN.to_le_bytes()
    } else {
        value.to_le_bytes()
    }
}

#[cfg(test)]
mod tests;
