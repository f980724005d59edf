//! Length-prefixed frames on the parent ↔ worker socket (spec: `docs/pool.md`).
//!
//! ```text
//!  u64 LE  length of what follows (9 + payload)
//!  u8      kind
//!  u64 LE  task id (0 for control frames)
//!  ...     payload (pickle bytes, opaque here)
//! ```

use std::io::{self, Read, Write};

use super::PoolError;

/// Frames larger than this are refused: a corrupt length must not trigger a huge allocation.
pub const MAX_FRAME: u64 = 1 << 40;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Parent → worker: start-up settings (pickled).
    Init = 1,
    /// Parent → worker: a pickled callable to run.
    Task = 2,
    /// Parent → worker: exit cleanly.
    Shutdown = 3,
    /// Worker → parent: imports done, ready for tasks.
    Ready = 10,
    /// Worker → parent: the pickled return value of a task.
    Done = 11,
    /// Worker → parent: the pickled exception (with its traceback text) of a task.
    Failed = 12,
}

impl FrameKind {
    /// Every kind, for the bindings (the Python worker reads the kind numbers from here).
    pub const ALL: [FrameKind; 6] = [
        Self::Init,
        Self::Task,
        Self::Shutdown,
        Self::Ready,
        Self::Done,
        Self::Failed,
    ];

    /// The name of the kind, as in `docs/pool.md`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::Task => "TASK",
            Self::Shutdown => "SHUTDOWN",
            Self::Ready => "READY",
            Self::Done => "DONE",
            Self::Failed => "FAILED",
        }
    }

    fn from_byte(b: u8) -> Result<Self, PoolError> {
        Ok(match b {
            1 => Self::Init,
            2 => Self::Task,
            3 => Self::Shutdown,
            10 => Self::Ready,
            11 => Self::Done,
            12 => Self::Failed,
            other => return Err(PoolError::Protocol(format!("unknown frame kind {other}"))),
        })
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its kind.
    pub kind: FrameKind,
    /// The task it belongs to (0 for control frames).
    pub task_id: u64,
    /// The opaque payload.
    pub payload: Vec<u8>,
}

/// Writes one frame (header and payload in one buffered write).
pub fn write_frame(
    out: &mut impl Write,
    kind: FrameKind,
    task_id: u64,
    payload: &[u8],
) -> io::Result<()> {
    let mut header = [0u8; 17];
    header[..8].copy_from_slice(&(9 + payload.len() as u64).to_le_bytes());
    header[8] = kind as u8;
    header[9..].copy_from_slice(&task_id.to_le_bytes());
    if payload.len() < 64 * 1024 {
        let mut buf = Vec::with_capacity(17 + payload.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(payload);
        out.write_all(&buf)?;
    } else {
        out.write_all(&header)?;
        out.write_all(payload)?;
    }
    out.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub fn read_frame(input: &mut impl Read) -> Result<Option<Frame>, PoolError> {
    let mut len = [0u8; 8];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(PoolError::Io(e)),
    }
    let len = u64::from_le_bytes(len);
    if !(9..=MAX_FRAME).contains(&len) {
        return Err(PoolError::Protocol(format!(
            "frame length {len} out of range"
        )));
    }
    let mut head = [0u8; 9];
    input.read_exact(&mut head)?;
    let kind = FrameKind::from_byte(head[0])?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&head[1..]);
    let body =
        usize::try_from(len - 9).map_err(|_| PoolError::Protocol("frame too large".into()))?;
    let mut payload = Vec::new();
    // Grow as bytes arrive rather than trusting the length with one allocation.
    input.take(body as u64).read_to_end(&mut payload)?;
    if payload.len() != body {
        return Err(PoolError::Protocol("stream ended inside a frame".into()));
    }
    Ok(Some(Frame {
        kind,
        task_id: u64::from_le_bytes(id),
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_small_and_large() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameKind::Task, 7, b"hello").unwrap();
        let big = vec![3u8; 200_000];
        write_frame(&mut buf, FrameKind::Done, 8, &big).unwrap();
        write_frame(&mut buf, FrameKind::Shutdown, 0, b"").unwrap();
        let mut r = buf.as_slice();
        assert_eq!(
            read_frame(&mut r).unwrap().unwrap(),
            Frame {
                kind: FrameKind::Task,
                task_id: 7,
                payload: b"hello".to_vec()
            }
        );
        assert_eq!(read_frame(&mut r).unwrap().unwrap().payload, big);
        assert_eq!(
            read_frame(&mut r).unwrap().unwrap().kind,
            FrameKind::Shutdown
        );
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn every_kind_is_listed_once_and_decodes_to_itself() {
        let mut names: Vec<&str> = FrameKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FrameKind::ALL.len());
        for kind in FrameKind::ALL {
            assert_eq!(FrameKind::from_byte(kind as u8).unwrap(), kind);
        }
    }

    #[test]
    fn golden_bytes() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameKind::Task, 258, b"ab").unwrap();
        assert_eq!(
            buf,
            [
                11, 0, 0, 0, 0, 0, 0, 0, 2, 2, 1, 0, 0, 0, 0, 0, 0, b'a', b'b'
            ]
        );
    }

    #[test]
    fn damaged_streams_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameKind::Task, 1, b"payload").unwrap();
        // Truncated inside the payload.
        assert!(read_frame(&mut &buf[..buf.len() - 1]).is_err());
        // Truncated inside the header.
        assert!(read_frame(&mut &buf[..12]).is_err());
        // Unknown kind.
        let mut bad = buf.clone();
        bad[8] = 99;
        assert!(matches!(
            read_frame(&mut bad.as_slice()),
            Err(PoolError::Protocol(_))
        ));
        // Absurd length: refused without allocating it.
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[2; 9]);
        assert!(matches!(
            read_frame(&mut huge.as_slice()),
            Err(PoolError::Protocol(_))
        ));
        let mut short = 3u64.to_le_bytes().to_vec();
        short.extend_from_slice(&[2; 9]);
        assert!(read_frame(&mut short.as_slice()).is_err());
    }
}
