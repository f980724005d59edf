//! The joblib-rs container: the bytes of a `dump` file (specified in `docs/format.md`).
//!
//! ```text
//!  dump:  out-of-band buffers ─┐
//!         pickle bytes ────────┴─► write_container ─► header | buffer frames.. | pickle frame
//!                                   (codec/ compresses         | index frame | footer
//!                                    chunks on all cores)
//!  load:  Source (file, bytes) ─► read_container ─► Sink::frame(head) gives the destination
//!                                   │                 (a numpy buffer, or Skip for mmap)
//!                                   └─► payload read / decompressed in place, xxh3-64 checked
//! ```
//!
//! `inspect` reads a whole container through the same reader with every payload verified and
//! discarded (the command line's `inspect`).
//!
//! Every structure is a multiple of 64 bytes and starts on a 64-byte boundary, so an
//! uncompressed payload can be memory-mapped in place with any dtype alignment. Headers carry
//! their own xxh3-64, end records carry the payload's: a damaged file is detected, and every
//! allocation is bounded by a checked header and by the bytes left in the source.

mod inspect;
mod read;
mod split_read;
pub mod stale;
mod write;

pub use inspect::{Inspection, inspect};
pub use read::{Dest, FrameHead, FrameInfo, Sink, Source, read_container};
pub use write::{WriteOptions, write_container, write_file_atomic};

use crate::codec::CodecError;

/// First 8 bytes of every container.
pub const MAGIC: [u8; 8] = *b"\x89JRS\r\n\x1a\n";
/// Format major version written and read by this code.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version written by this code (readers accept any minor of their major).
pub const VERSION_MINOR: u16 = 0;
/// Size and alignment of every structure.
pub const BLOCK: usize = 64;

const FRAME_MAGIC: [u8; 4] = *b"JRSF";
const END_MAGIC: [u8; 4] = *b"JRSE";
const FOOTER_MAGIC: [u8; 8] = *b"JRSTAIL\0";
/// Bytes per entry of the index frame.
const INDEX_ENTRY: usize = 48;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// One out-of-band pickle buffer (an array's data).
    Buffer = 1,
    /// The pickle stream (protocol 5, buffers referenced in frame order).
    Pickle = 2,
    /// The index of all previous frames.
    Index = 3,
}

impl FrameKind {
    fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::Buffer),
            2 => Some(Self::Pickle),
            3 => Some(Self::Index),
            _ => None,
        }
    }

    /// Lower-case name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Buffer => "buffer",
            Self::Pickle => "pickle",
            Self::Index => "index",
        }
    }
}

/// Errors of reading or writing a container.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// An operating-system error (open, read, write, rename).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The source does not start with [`MAGIC`].
    #[error("not a joblib-rs file (bad magic bytes)")]
    BadMagic,
    /// A major version this code cannot read.
    #[error(
        "unsupported joblib-rs format version {major}.{minor} (this version reads {VERSION_MAJOR}.x)"
    )]
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The source ended inside a structure.
    #[error("file is truncated: {what} at byte {offset} is incomplete")]
    Truncated {
        /// Which structure was cut.
        what: &'static str,
        /// Offset where it starts.
        offset: u64,
    },
    /// A structure that is inconsistent or fails its own checksum.
    #[error("file is damaged: {what} at byte {offset}")]
    Damaged {
        /// What is wrong.
        what: String,
        /// Offset of the structure.
        offset: u64,
    },
    /// A payload whose xxh3-64 differs from the one recorded when it was written.
    #[error(
        "file is damaged: checksum mismatch in {kind} frame {index} at byte {offset} \
         (recorded {expected:016x}, computed {actual:016x})"
    )]
    ChecksumMismatch {
        /// Kind of frame.
        kind: &'static str,
        /// Frame number.
        index: u32,
        /// Offset of the frame header.
        offset: u64,
        /// Checksum in the end record.
        expected: u64,
        /// Checksum of the bytes read.
        actual: u64,
    },
    /// A compressed payload the codec rejects.
    #[error("file is damaged: {kind} frame {index} at byte {offset}: {source}")]
    Codec {
        /// Kind of frame.
        kind: &'static str,
        /// Frame number.
        index: u32,
        /// Offset of the frame header.
        offset: u64,
        /// Codec error.
        source: CodecError,
    },
    /// Invalid writer options (unknown codec or level).
    #[error("{0}")]
    Options(CodecError),
    /// The sink refused a frame (e.g. it could not allocate the destination).
    #[error("{0}")]
    Sink(String),
}

fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Seal a 64-byte block: its last 8 bytes are the xxh3-64 of the first 56.
fn seal(block: &mut [u8; BLOCK]) {
    let sum = xxh3(&block[..56]);
    block[56..].copy_from_slice(&sum.to_le_bytes());
}

fn sealed(block: &[u8; BLOCK]) -> bool {
    xxh3(&block[..56]) == le_u64(block, 56)
}

/// Padding after `len` bytes to reach the next multiple of [`BLOCK`].
fn pad_len(len: u64) -> u64 {
    (BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64
}

/// Bit of the end record's flags byte (offset 24): the payload may be modified in place
/// (it was memory-mapped writable), so its checksum is no longer enforced.
pub const END_FLAG_MUTABLE: u8 = 1;

/// Mark uncompressed buffer frames as mutable before they are memory-mapped writable: their
/// end records get [`END_FLAG_MUTABLE`] (and a new seal), so later loads skip the payload
/// checksum that writes through the map invalidate. `frames` are `(payload_offset,
/// stored_len)` pairs as returned by the reader for uncompressed frames.
pub fn mark_mutable<F: std::io::Read + std::io::Write + std::io::Seek>(
    file: &mut F,
    frames: &[(u64, u64)],
) -> Result<(), FormatError> {
    use std::io::SeekFrom;
    for &(payload_offset, stored_len) in frames {
        let at = payload_offset
            .checked_add(stored_len)
            .and_then(|v| v.checked_add(pad_len(stored_len)))
            .ok_or_else(|| damaged_at("frame length overflows", payload_offset))?;
        file.seek(SeekFrom::Start(at))?;
        let mut end = [0u8; BLOCK];
        file.read_exact(&mut end)?;
        if end[0..4] != END_MAGIC || !sealed(&end) || le_u64(&end, 8) != stored_len {
            return Err(damaged_at("frame end record is damaged", at));
        }
        if end[24] & END_FLAG_MUTABLE != 0 {
            continue;
        }
        end[24] |= END_FLAG_MUTABLE;
        seal(&mut end);
        file.seek(SeekFrom::Start(at))?;
        file.write_all(&end)?;
    }
    file.flush()?;
    Ok(())
}

fn damaged_at(what: &str, offset: u64) -> FormatError {
    FormatError::Damaged {
        what: what.to_owned(),
        offset,
    }
}

#[cfg(test)]
mod tests;
