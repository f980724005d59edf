//! Verifying a container without keeping it (the `joblib-rs inspect` command).
//!
//! ```text
//!  Source ─► Counting (remembers the header, counts bytes) ─► read_container
//!              VerifySink: every frame is Dest::Verify ─► payload read, xxh3-64 checked,
//!              compressed chunks decoded into scratch memory and dropped
//!  ─► Inspection { version, frames, file_len }
//! ```
//!
//! Memory stays bounded by one batch of chunks whatever the file's size.

use std::io::{self, Read};

use super::read::{Dest, FrameHead, FrameInfo, Sink, Source, read_container};
use super::{FormatError, le_u16};

/// What [`inspect`] found in a sound container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Format version `(major, minor)` from the file header.
    pub version: (u16, u16),
    /// Buffer frames then the pickle frame, each read and verified.
    pub frames: Vec<FrameInfo>,
    /// Bytes of the container, header to footer included.
    pub file_len: u64,
}

/// Asks the reader to verify and discard every payload.
#[derive(Debug, Default)]
struct VerifySink;

impl Sink for VerifySink {
    fn frame(&mut self, _head: &FrameHead) -> Result<Dest<'_>, FormatError> {
        Ok(Dest::Verify)
    }
}

/// A source that keeps the first bytes read (the header's version) and counts all bytes.
struct Counting<'s, S: Source + ?Sized> {
    inner: &'s mut S,
    head: [u8; 16],
    count: u64,
}

impl<S: Source + ?Sized> Read for Counting<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(at) = usize::try_from(self.count)
            && at < self.head.len()
        {
            let keep = (self.head.len() - at).min(n);
            self.head[at..at + keep].copy_from_slice(&buf[..keep]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

impl<S: Source + ?Sized> Source for Counting<'_, S> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        self.inner.skip(n)?;
        self.count += n;
        Ok(())
    }
    fn remaining(&mut self) -> Option<u64> {
        self.inner.remaining()
    }
}

/// Read a whole container, verifying every structure and payload checksum and decoding every
/// compressed chunk, without keeping the payloads. Any damage is the reader's error.
pub fn inspect<S: Source + ?Sized>(src: &mut S) -> Result<Inspection, FormatError> {
    let mut counting = Counting {
        inner: src,
        head: [0u8; 16],
        count: 0,
    };
    let frames = read_container(&mut counting, &mut VerifySink)?;
    Ok(Inspection {
        version: (le_u16(&counting.head, 8), le_u16(&counting.head, 10)),
        frames,
        file_len: counting.count,
    })
}
