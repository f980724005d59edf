//! A bounds-checked reader of pickle opcodes (protocols 0–5), for the data-only decoder.
//!
//! ```text
//!  pickle bytes ─► OpReader::next() ─► Op<'a> (borrowed payloads, numbers parsed)
//!                                        │
//!                                        └─► joblib-py's restricted unpickler (builds the
//!                                            Python objects and applies the load policy)
//! ```
//!
//! This module knows the *syntax* of a pickle and nothing of its meaning: it never allocates
//! more than the bytes it was given (every length is checked against what is left before a
//! payload is sliced), never follows a name and never executes anything. What is allowed to
//! be built from the opcodes is decided by the bindings (`crates/joblib-py/src/unpickle.rs`)
//! and the policy (`joblib_rs._restricted`). The opcode table is the one of CPython's
//! `pickletools`, which is the specification.

use thiserror::Error;

#[cfg(test)]
mod tests;

/// Why a pickle could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PickleError {
    /// The data ended in the middle of an opcode or its argument.
    #[error("pickle data was truncated at byte {0}")]
    Truncated(usize),
    /// A byte that is not an opcode of protocols 0–5.
    #[error("invalid pickle opcode 0x{op:02x} at byte {pos}")]
    UnknownOpcode {
        /// The byte.
        op: u8,
        /// Its offset.
        pos: usize,
    },
    /// An opcode argument that does not parse (a bad number, a negative length...).
    #[error("bad argument of pickle opcode {name} at byte {pos}: {why}")]
    BadArgument {
        /// The opcode's name, as pickletools spells it.
        name: &'static str,
        /// Its offset.
        pos: usize,
        /// What is wrong.
        why: &'static str,
    },
}

/// One pickle opcode with its argument.
///
/// Payloads borrow from the input; text arguments of protocol 0 are returned as they stand
/// (their decoding needs Python's codecs, except `STRING`'s escapes, decoded here).
#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a> {
    /// `PROTO n`.
    Proto(u8),
    /// `FRAME n`: a framing hint of protocol 4+ (its length is checked, then ignored).
    Frame(u64),
    /// `STOP`.
    Stop,
    /// `MARK`.
    Mark,
    /// `POP`.
    Pop,
    /// `POP_MARK`.
    PopMark,
    /// `DUP`.
    Dup,
    /// `NONE`.
    None,
    /// `NEWTRUE` / `NEWFALSE`, and the `I01`/`I00` spellings of protocol 0.
    Bool(bool),
    /// `BININT`, `BININT1`, `BININT2`, and `INT` when the value fits.
    Int(i64),
    /// `LONG1`/`LONG4`: little-endian two's complement bytes.
    LongBytes(&'a [u8]),
    /// `LONG` and an `INT` too big for `i64`: ASCII decimal digits, sign allowed.
    LongText(&'a str),
    /// `FLOAT` / `BINFLOAT`.
    Float(f64),
    /// `STRING` (escapes decoded), `BINSTRING`, `SHORT_BINSTRING`: a Python 2 `str`.
    String(std::borrow::Cow<'a, [u8]>),
    /// `UNICODE`: raw-unicode-escape text.
    UnicodeRawEscape(&'a [u8]),
    /// `BINUNICODE`, `SHORT_BINUNICODE`, `BINUNICODE8`: UTF-8 (surrogates allowed).
    Unicode(&'a [u8]),
    /// `BINBYTES`, `SHORT_BINBYTES`, `BINBYTES8`.
    Bytes(&'a [u8]),
    /// `BYTEARRAY8`.
    ByteArray(&'a [u8]),
    /// `NEXT_BUFFER`.
    NextBuffer,
    /// `READONLY_BUFFER`.
    ReadonlyBuffer,
    /// `EMPTY_LIST`.
    EmptyList,
    /// `APPEND`.
    Append,
    /// `APPENDS`.
    Appends,
    /// `LIST`.
    List,
    /// `EMPTY_TUPLE`.
    EmptyTuple,
    /// `TUPLE`.
    Tuple,
    /// `TUPLE1`, `TUPLE2`, `TUPLE3`.
    TupleN(u8),
    /// `EMPTY_DICT`.
    EmptyDict,
    /// `DICT`.
    Dict,
    /// `SETITEM`.
    SetItem,
    /// `SETITEMS`.
    SetItems,
    /// `EMPTY_SET`.
    EmptySet,
    /// `ADDITEMS`.
    AddItems,
    /// `FROZENSET`.
    FrozenSet,
    /// `GLOBAL module name` (protocol 0–3 spelling).
    Global(&'a str, &'a str),
    /// `STACK_GLOBAL`.
    StackGlobal,
    /// `INST module name`.
    Inst(&'a str, &'a str),
    /// `OBJ`.
    Obj,
    /// `REDUCE`.
    Reduce,
    /// `BUILD`.
    Build,
    /// `NEWOBJ`.
    NewObj,
    /// `NEWOBJ_EX`.
    NewObjEx,
    /// `PUT n` / `BINPUT` / `LONG_BINPUT`.
    Put(u64),
    /// `MEMOIZE`.
    Memoize,
    /// `GET n` / `BINGET` / `LONG_BINGET`.
    Get(u64),
    /// `EXT1`/`EXT2`/`EXT4`: the copyreg extension registry (a code naming a global).
    Ext(u32),
    /// `PERSID` / `BINPERSID`: an object the pickler's owner resolves.
    PersId,
}

impl Op<'_> {
    /// The opcode's name as `pickletools` spells it (for messages).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Proto(_) => "PROTO",
            Op::Frame(_) => "FRAME",
            Op::Stop => "STOP",
            Op::Mark => "MARK",
            Op::Pop => "POP",
            Op::PopMark => "POP_MARK",
            Op::Dup => "DUP",
            Op::None => "NONE",
            Op::Bool(_) => "NEWTRUE/NEWFALSE",
            Op::Int(_) => "INT",
            Op::LongBytes(_) | Op::LongText(_) => "LONG",
            Op::Float(_) => "FLOAT",
            Op::String(_) => "STRING",
            Op::UnicodeRawEscape(_) | Op::Unicode(_) => "UNICODE",
            Op::Bytes(_) => "BINBYTES",
            Op::ByteArray(_) => "BYTEARRAY8",
            Op::NextBuffer => "NEXT_BUFFER",
            Op::ReadonlyBuffer => "READONLY_BUFFER",
            Op::EmptyList => "EMPTY_LIST",
            Op::Append => "APPEND",
            Op::Appends => "APPENDS",
            Op::List => "LIST",
            Op::EmptyTuple => "EMPTY_TUPLE",
            Op::Tuple => "TUPLE",
            Op::TupleN(_) => "TUPLE1/2/3",
            Op::EmptyDict => "EMPTY_DICT",
            Op::Dict => "DICT",
            Op::SetItem => "SETITEM",
            Op::SetItems => "SETITEMS",
            Op::EmptySet => "EMPTY_SET",
            Op::AddItems => "ADDITEMS",
            Op::FrozenSet => "FROZENSET",
            Op::Global(..) => "GLOBAL",
            Op::StackGlobal => "STACK_GLOBAL",
            Op::Inst(..) => "INST",
            Op::Obj => "OBJ",
            Op::Reduce => "REDUCE",
            Op::Build => "BUILD",
            Op::NewObj => "NEWOBJ",
            Op::NewObjEx => "NEWOBJ_EX",
            Op::Put(_) => "PUT",
            Op::Memoize => "MEMOIZE",
            Op::Get(_) => "GET",
            Op::Ext(_) => "EXT",
            Op::PersId => "PERSID",
        }
    }
}

/// Reads opcodes one at a time from a byte slice.
#[derive(Debug, Clone)]
pub struct OpReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> OpReader<'a> {
    /// A reader positioned at `pos` of `data` (joblib's files put raw array bytes between
    /// opcodes: the caller moves the position past them with [`OpReader::skip`]).
    pub fn new(data: &'a [u8], pos: usize) -> Self {
        OpReader {
            data,
            pos: pos.min(data.len()),
        }
    }

    /// The offset of the next opcode.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Takes `n` raw bytes (not opcodes) at the current position.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated(self.data.len()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Bytes left after the current position.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32le(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64le(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn sized(&mut self, n: u64) -> Result<&'a [u8], PickleError> {
        let n = usize::try_from(n).map_err(|_| PickleError::Truncated(self.data.len()))?;
        self.take(n)
    }

    /// A protocol-0 argument: the bytes up to (not including) the next `\n`.
    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated(self.data.len()))?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    fn text_line(&mut self, name: &'static str, at: usize) -> Result<&'a str, PickleError> {
        let line = self.line()?;
        std::str::from_utf8(line).map_err(|_| PickleError::BadArgument {
            name,
            pos: at,
            why: "not UTF-8 text",
        })
    }

    fn decimal(&mut self, name: &'static str, at: usize) -> Result<u64, PickleError> {
        let text = self.text_line(name, at)?;
        text.trim()
            .parse::<u64>()
            .map_err(|_| PickleError::BadArgument {
                name,
                pos: at,
                why: "not a non-negative decimal number",
            })
    }

    /// Reads the next opcode. `Ok(None)` at the end of the data.
    pub fn next_op(&mut self) -> Result<Option<Op<'a>>, PickleError> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let at = self.pos;
        let code = self.byte()?;
        let bad = |name, why| PickleError::BadArgument { name, pos: at, why };
        let op = match code {
            0x80 => Op::Proto(self.byte()?),
            0x95 => {
                let n = self.u64le()?;
                if n > self.remaining() as u64 {
                    return Err(PickleError::Truncated(self.data.len()));
                }
                Op::Frame(n)
            }
            b'.' => Op::Stop,
            b'(' => Op::Mark,
            b'0' => Op::Pop,
            b'1' => Op::PopMark,
            b'2' => Op::Dup,
            b'N' => Op::None,
            0x88 => Op::Bool(true),
            0x89 => Op::Bool(false),
            b'I' => {
                let text = self.text_line("INT", at)?;
                match text {
                    "00" => Op::Bool(false),
                    "01" => Op::Bool(true),
                    _ => match text.parse::<i64>() {
                        Ok(v) => Op::Int(v),
                        Err(_) if is_decimal(text) => Op::LongText(text),
                        Err(_) => return Err(bad("INT", "not a decimal integer")),
                    },
                }
            }
            b'J' => Op::Int(i64::from(i32::from_le_bytes(self.array()?))),
            b'K' => Op::Int(i64::from(self.byte()?)),
            b'M' => Op::Int(i64::from(u16::from_le_bytes(self.array()?))),
            b'L' => {
                let text = self.text_line("LONG", at)?;
                let text = text.strip_suffix('L').unwrap_or(text);
                if !is_decimal(text) {
                    return Err(bad("LONG", "not a decimal integer"));
                }
                Op::LongText(text)
            }
            0x8a => {
                let n = self.byte()?;
                Op::LongBytes(self.take(usize::from(n))?)
            }
            0x8b => {
                let n = i32::from_le_bytes(self.array()?);
                let n = u64::try_from(n).map_err(|_| bad("LONG4", "negative length"))?;
                Op::LongBytes(self.sized(n)?)
            }
            b'F' => {
                let text = self.text_line("FLOAT", at)?;
                Op::Float(
                    parse_float(text.trim()).ok_or_else(|| bad("FLOAT", "not a float literal"))?,
                )
            }
            b'G' => Op::Float(f64::from_be_bytes(self.array()?)),
            b'S' => {
                let line = self.line()?;
                Op::String(std::borrow::Cow::Owned(
                    unquote_string(line).ok_or_else(|| bad("STRING", "not a quoted string"))?,
                ))
            }
            b'T' => {
                let n = i32::from_le_bytes(self.array()?);
                let n = u64::try_from(n).map_err(|_| bad("BINSTRING", "negative length"))?;
                Op::String(std::borrow::Cow::Borrowed(self.sized(n)?))
            }
            b'U' => {
                let n = self.byte()?;
                Op::String(std::borrow::Cow::Borrowed(self.take(usize::from(n))?))
            }
            b'V' => Op::UnicodeRawEscape(self.line()?),
            b'X' => {
                let n = self.u32le()?;
                Op::Unicode(self.sized(u64::from(n))?)
            }
            0x8c => {
                let n = self.byte()?;
                Op::Unicode(self.take(usize::from(n))?)
            }
            0x8d => {
                let n = self.u64le()?;
                Op::Unicode(self.sized(n)?)
            }
            b'B' => {
                let n = self.u32le()?;
                Op::Bytes(self.sized(u64::from(n))?)
            }
            b'C' => {
                let n = self.byte()?;
                Op::Bytes(self.take(usize::from(n))?)
            }
            0x8e => {
                let n = self.u64le()?;
                Op::Bytes(self.sized(n)?)
            }
            0x96 => {
                let n = self.u64le()?;
                Op::ByteArray(self.sized(n)?)
            }
            0x97 => Op::NextBuffer,
            0x98 => Op::ReadonlyBuffer,
            b']' => Op::EmptyList,
            b'a' => Op::Append,
            b'e' => Op::Appends,
            b'l' => Op::List,
            b')' => Op::EmptyTuple,
            b't' => Op::Tuple,
            0x85 => Op::TupleN(1),
            0x86 => Op::TupleN(2),
            0x87 => Op::TupleN(3),
            b'}' => Op::EmptyDict,
            b'd' => Op::Dict,
            b's' => Op::SetItem,
            b'u' => Op::SetItems,
            0x8f => Op::EmptySet,
            0x90 => Op::AddItems,
            0x91 => Op::FrozenSet,
            b'c' => {
                let module = self.text_line("GLOBAL", at)?;
                let name = self.text_line("GLOBAL", at)?;
                Op::Global(module, name)
            }
            0x93 => Op::StackGlobal,
            b'i' => {
                let module = self.text_line("INST", at)?;
                let name = self.text_line("INST", at)?;
                Op::Inst(module, name)
            }
            b'o' => Op::Obj,
            b'R' => Op::Reduce,
            b'b' => Op::Build,
            0x81 => Op::NewObj,
            0x92 => Op::NewObjEx,
            b'p' => Op::Put(self.decimal("PUT", at)?),
            b'q' => Op::Put(u64::from(self.byte()?)),
            b'r' => Op::Put(u64::from(self.u32le()?)),
            0x94 => Op::Memoize,
            b'g' => Op::Get(self.decimal("GET", at)?),
            b'h' => Op::Get(u64::from(self.byte()?)),
            b'j' => Op::Get(u64::from(self.u32le()?)),
            0x82 => Op::Ext(u32::from(self.byte()?)),
            0x83 => Op::Ext(u32::from(u16::from_le_bytes(self.array()?))),
            0x84 => Op::Ext(self.u32le()?),
            b'P' => {
                self.line()?;
                Op::PersId
            }
            b'Q' => Op::PersId,
            op => return Err(PickleError::UnknownOpcode { op, pos: at }),
        };
        Ok(Some(op))
    }
}

fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Python's `float()` of a protocol-0 `FLOAT` argument (`repr` of a float).
fn parse_float(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => Some(f64::NAN),
        t if t
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.e".contains(&b)) =>
        {
            t.parse().ok()
        }
        _ => None,
    }
}

/// The bytes of a protocol-0 `STRING` argument: a Python 2 `repr` of a byte string, quoted
/// with `'` or `"`, with backslash escapes.
fn unquote_string(line: &[u8]) -> Option<Vec<u8>> {
    let (&first, rest) = line.split_first()?;
    if first != b'\'' && first != b'"' {
        return None;
    }
    let (&last, body) = rest.split_last()?;
    if last != first {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let &e = body.get(i)?;
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'x' => {
                let hex = body.get(i..i + 2)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut value = u32::from(e - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xff) as u8);
            }
            // Python keeps unknown escapes as they are.
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}
