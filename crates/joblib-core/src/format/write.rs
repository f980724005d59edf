//! Writing a container: frames in order, so any `Write` works (no seeking).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::Xxh3;

use super::{
    BLOCK, END_MAGIC, FOOTER_MAGIC, FRAME_MAGIC, FormatError, FrameKind, INDEX_ENTRY, MAGIC,
    VERSION_MAJOR, VERSION_MINOR, pad_len, seal,
};
use crate::codec::{self, CHUNK, Codec};

/// How frames are encoded.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Codec of every frame (buffers and pickle).
    pub codec: Codec,
    /// Codec level (checked against the codec's range).
    pub level: i32,
    /// Raw bytes per compressed chunk (ignored for [`Codec::None`]).
    pub chunk: usize,
    /// [`write_file_atomic`] only: fsync the file and its folder, so the new content also
    /// survives a power loss or kernel crash. Without it the write is still atomic for
    /// readers and against a crash of the writing process (temporary file + rename).
    pub durable: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            codec: Codec::None,
            level: 0,
            chunk: CHUNK,
            durable: true,
        }
    }
}

/// Chunks per pipelined batch: two per thread keeps every core busy while the previous batch
/// is written, and small batches start writing early.
fn batch_chunks() -> usize {
    (2 * crate::threads::available_threads()).clamp(2, 32)
}
/// Uncompressed payloads are hashed and written in pieces of this size.
const PIECE: usize = 16 << 20;
const ZEROS: [u8; BLOCK] = [0u8; BLOCK];

struct Counting<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

struct Entry {
    offset: u64,
    kind: FrameKind,
    codec: Codec,
    raw_len: u64,
    stored_len: u64,
    checksum: u64,
}

fn frame_header(
    index: u32,
    kind: FrameKind,
    codec: Codec,
    chunk: u32,
    raw_len: u64,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[0..4].copy_from_slice(&FRAME_MAGIC);
    h[4] = kind as u8;
    h[5] = codec.id();
    h[8..12].copy_from_slice(&index.to_le_bytes());
    h[12..16].copy_from_slice(&chunk.to_le_bytes());
    h[16..24].copy_from_slice(&raw_len.to_le_bytes());
    seal(&mut h);
    h
}

fn end_record(index: u32, stored_len: u64, checksum: u64) -> [u8; BLOCK] {
    let mut e = [0u8; BLOCK];
    e[0..4].copy_from_slice(&END_MAGIC);
    e[4..8].copy_from_slice(&index.to_le_bytes());
    e[8..16].copy_from_slice(&stored_len.to_le_bytes());
    e[16..24].copy_from_slice(&checksum.to_le_bytes());
    seal(&mut e);
    e
}

fn put_chunks<W: Write>(
    out: &mut Counting<W>,
    hasher: &mut Xxh3,
    stored: Vec<Vec<u8>>,
) -> Result<(), FormatError> {
    for s in stored {
        let len = u32::try_from(s.len()).map_err(|_| {
            FormatError::Sink(format!(
                "compressed chunk of {} bytes is too large",
                s.len()
            ))
        })?;
        let len = len.to_le_bytes();
        hasher.update(&len);
        hasher.update(&s);
        out.put(&len)?;
        out.put(&s)?;
    }
    Ok(())
}

fn write_frame<W: Write>(
    out: &mut Counting<W>,
    index: u32,
    kind: FrameKind,
    data: &[u8],
    opts: &WriteOptions,
) -> Result<Entry, FormatError> {
    let offset = out.pos;
    let codec = opts.codec;
    let chunk = opts.chunk.clamp(1, codec::MAX_CHUNK);
    let chunk_field = if codec == Codec::None {
        0
    } else {
        u32::try_from(chunk).unwrap_or(u32::MAX)
    };
    out.put(&frame_header(
        index,
        kind,
        codec,
        chunk_field,
        data.len() as u64,
    ))?;
    let mut hasher = Xxh3::new();
    let start = out.pos;
    if codec == Codec::None {
        for piece in data.chunks(PIECE) {
            hasher.update(piece);
            out.put(piece)?;
        }
    } else {
        // Pipeline: batch k+1 compresses on the thread pool while batch k is written.
        let level = opts.level;
        std::thread::scope(|scope| -> Result<(), FormatError> {
            let mut pending: Option<Vec<Vec<u8>>> = None;
            for batch in data.chunks(chunk * batch_chunks()) {
                let job = scope.spawn(move || codec::compress_chunks(codec, level, batch, chunk));
                if let Some(done) = pending.take() {
                    put_chunks(out, &mut hasher, done)?;
                }
                let stored = job
                    .join()
                    .map_err(|_| FormatError::Sink("compression thread panicked".into()))?
                    .map_err(FormatError::Options)?;
                pending = Some(stored);
            }
            if let Some(done) = pending {
                put_chunks(out, &mut hasher, done)?;
            }
            Ok(())
        })?;
    }
    let stored_len = out.pos - start;
    let pad = pad_len(stored_len) as usize;
    out.put(&ZEROS[..pad])?;
    let checksum = hasher.digest();
    out.put(&end_record(index, stored_len, checksum))?;
    Ok(Entry {
        offset,
        kind,
        codec,
        raw_len: data.len() as u64,
        stored_len,
        checksum,
    })
}

/// Write a whole container: `buffers` (out-of-band pickle buffers, in pickle order), then
/// `pickle`, the index and the footer. Returns the number of bytes written.
pub fn write_container<W: Write>(
    out: W,
    buffers: &[&[u8]],
    pickle: &[u8],
    opts: &WriteOptions,
) -> Result<u64, FormatError> {
    if opts.codec != Codec::None {
        opts.codec
            .check_level(opts.level)
            .map_err(FormatError::Options)?;
    }
    let mut out = Counting { inner: out, pos: 0 };
    let mut header = [0u8; BLOCK];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    header[10..12].copy_from_slice(&VERSION_MINOR.to_le_bytes());
    seal(&mut header);
    out.put(&header)?;

    let mut entries = Vec::with_capacity(buffers.len() + 1);
    for (i, buf) in buffers.iter().enumerate() {
        let index =
            u32::try_from(i).map_err(|_| FormatError::Sink("more than 2^32 buffers".to_owned()))?;
        entries.push(write_frame(&mut out, index, FrameKind::Buffer, buf, opts)?);
    }
    let pickle_index = u32::try_from(buffers.len())
        .map_err(|_| FormatError::Sink("more than 2^32 buffers".to_owned()))?;
    entries.push(write_frame(
        &mut out,
        pickle_index,
        FrameKind::Pickle,
        pickle,
        opts,
    )?);

    let mut index_payload = Vec::with_capacity(entries.len() * INDEX_ENTRY);
    for e in &entries {
        let mut rec = [0u8; INDEX_ENTRY];
        rec[0..8].copy_from_slice(&e.offset.to_le_bytes());
        rec[8] = e.kind as u8;
        rec[9] = e.codec.id();
        rec[16..24].copy_from_slice(&e.raw_len.to_le_bytes());
        rec[24..32].copy_from_slice(&e.stored_len.to_le_bytes());
        rec[32..40].copy_from_slice(&e.checksum.to_le_bytes());
        index_payload.extend_from_slice(&rec);
    }
    let index_offset = out.pos;
    let plain = WriteOptions {
        codec: Codec::None,
        level: 0,
        ..*opts
    };
    write_frame(
        &mut out,
        pickle_index + 1,
        FrameKind::Index,
        &index_payload,
        &plain,
    )?;

    let mut footer = [0u8; BLOCK];
    footer[0..8].copy_from_slice(&FOOTER_MAGIC);
    footer[8..16].copy_from_slice(&index_offset.to_le_bytes());
    footer[16..24].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    footer[24..32].copy_from_slice(&(out.pos + BLOCK as u64).to_le_bytes());
    seal(&mut footer);
    out.put(&footer)?;
    out.inner.flush()?;
    Ok(out.pos)
}

/// Bytes written between two background `fdatasync`s.
const SYNC_EVERY: u64 = 64 << 20;

/// A file writer that starts flushing to disk in a background thread every [`SYNC_EVERY`]
/// bytes, so the final fsync of a big file waits for the tail only (writeback overlaps the
/// writing instead of following it).
struct SyncingWriter {
    file: File,
    enabled: bool,
    since_sync: u64,
    syncer: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl SyncingWriter {
    fn new(file: File, enabled: bool) -> Self {
        Self {
            file,
            enabled,
            since_sync: 0,
            syncer: None,
        }
    }

    fn kick(&mut self) -> io::Result<()> {
        if let Some(h) = &self.syncer
            && !h.is_finished()
        {
            return Ok(()); // the previous flush is still running: let it catch up
        }
        if let Some(h) = self.syncer.take() {
            h.join()
                .map_err(|_| io::Error::other("background fsync thread panicked"))??;
        }
        let clone = self.file.try_clone()?;
        self.syncer = std::thread::Builder::new()
            .name("joblib-rs-fsync".into())
            .spawn(move || clone.sync_data())
            .ok();
        self.since_sync = 0;
        Ok(())
    }

    fn finish(mut self) -> io::Result<File> {
        if let Some(h) = self.syncer.take() {
            h.join()
                .map_err(|_| io::Error::other("background fsync thread panicked"))??;
        }
        Ok(self.file)
    }
}

impl Write for SyncingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.since_sync += n as u64;
        if self.enabled && self.since_sync >= SYNC_EVERY {
            self.kick()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Follow `path` through symbolic links (relative targets resolve against the link's folder)
/// to the path that is actually written: `dump` to a link replaces the link's target and
/// keeps the link, as writing through it with `open(path, 'wb')` would.
fn resolve_links(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&p)?;
                p = match p.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(io::Error::other(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// Give the new file `file` the permission bits of the file it replaces, and its owner and
/// group when allowed (root; or a group the writer belongs to). Errors of `chown` are
/// ignored (a user cannot give files away); errors of `chmod` are not.
fn keep_mode(file: &File, old: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let new = file.metadata()?;
    if (new.uid() != old.uid() || new.gid() != old.gid())
        && std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())).is_err()
    {
        // Not root: the group alone may still be kept (one the writer belongs to).
        let _ = std::os::unix::fs::fchown(file, None, Some(old.gid()));
    }
    // After chown, which clears set-id bits.
    file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
}

/// Write a container to `path` atomically: a temporary file in the same folder is written,
/// fsynced and renamed over `path`, so `path` holds either its old content or the whole new
/// file, never part of it. An existing file's permission bits (and owner, as root) are kept;
/// a symbolic link is written through (its target is replaced, the link stays). Temporary
/// files of writers killed earlier in that folder are removed first (see `stale`).
pub fn write_file_atomic(
    path: &Path,
    buffers: &[&[u8]],
    pickle: &[u8],
    opts: &WriteOptions,
) -> Result<u64, FormatError> {
    let resolved = resolve_links(path)?;
    let path = resolved.as_path();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        FormatError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file name", path.display()),
        ))
    })?;
    super::stale::reap_stale_temps(&dir);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}.{}{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
        super::stale::TEMP_SUFFIX,
    ));
    let tmp = dir.join(tmp_name);
    let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    let mut guard = TempGuard(Some(tmp.clone()));
    if let Ok(old) = fs::metadata(path)
        && old.is_file()
    {
        keep_mode(&file, &old)?;
    }
    let mut w = BufWriter::with_capacity(1 << 20, SyncingWriter::new(file, opts.durable));
    let n = write_container(&mut w, buffers, pickle, opts)?;
    let syncing = w
        .into_inner()
        .map_err(|e| FormatError::Io(e.into_error()))?;
    let file = syncing.finish()?;
    if opts.durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, path)?;
    guard.0 = None;
    // Make the rename itself durable; a failure here leaves a complete file, so it is ignored.
    if opts.durable
        && let Ok(d) = File::open(&dir)
    {
        let _ = d.sync_all();
    }
    Ok(n)
}
