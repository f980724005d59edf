//! Reading, staging, committing and removing entries.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::layout::{METADATA, OUTPUT, TEMP_PREFIX, TRASH_PREFIX, file_name, unique_sibling};
use super::version::FileVersion;
use super::{IoContext, StoreError, TOUCH_INTERVAL_SECS};

/// What a lookup found at an entry folder.
#[derive(Debug, PartialEq, Eq)]
pub enum Hit {
    /// No entry: compute.
    Miss,
    /// Half an entry (one of its files is missing): a damaged cache, recompute and warn.
    Damaged(&'static str),
    /// A complete entry. `data` holds the output's bytes when its size is at most the
    /// caller's `read_limit`; bigger outputs are left for the loader to map or stream.
    Found {
        /// Size of `output.jrs` in bytes.
        size: u64,
        /// The bytes of `output.jrs`, if read.
        data: Option<Vec<u8>>,
    },
}

/// Look up the entry at `entry_dir` with the fewest system calls: `open`, `fstat` and (up to
/// `read_limit` bytes) one `read` of `output.jrs`.
///
/// With `verify`, the entry is also checked to be whole (`stat(metadata.json)`) and the
/// output's access time is refreshed when it lags by more than [`TOUCH_INTERVAL_SECS`], so
/// LRU accounting never rewrites any file; a refresh that fails (read-only cache) is ignored.
/// Callers verify the first hit of an entry and then at most once per interval (see
/// `docs/store.md`): entries are immutable once published, so what was whole stays whole.
pub fn read_entry(entry_dir: &Path, read_limit: u64, verify: bool) -> Result<Hit, StoreError> {
    read_entry_versioned(entry_dir, read_limit, verify, false).map(|(hit, _)| hit)
}

/// [`read_entry`], also returning the [`FileVersion`] of the output file read (one more
/// `fstat` on unverified reads) when `version` is asked for and the entry was found.
pub fn read_entry_versioned(
    entry_dir: &Path,
    read_limit: u64,
    verify: bool,
    version: bool,
) -> Result<(Hit, Option<FileVersion>), StoreError> {
    let opts = ReadOptions {
        read_limit,
        verify,
        version,
        write: false,
    };
    read_entry_open(entry_dir, &opts).map(|read| (read.hit, read.version))
}

/// How [`read_entry_open`] reads an entry.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Outputs up to this size are read; bigger ones are left open, unread.
    pub read_limit: u64,
    /// Check that the entry is whole and refresh its access time (see [`read_entry`]).
    pub verify: bool,
    /// Return the output's [`FileVersion`].
    pub version: bool,
    /// Open the output for reading and writing (to map it writable).
    pub write: bool,
}

/// What [`read_entry_open`] found.
#[derive(Debug)]
pub struct EntryRead {
    /// What the lookup found.
    pub hit: Hit,
    /// The output's version, when asked for and found.
    pub version: Option<FileVersion>,
    /// The output file, open at its start, when it was found but not read (bigger than the
    /// read limit): the caller reads it in place or maps it without opening it again.
    pub file: Option<File>,
}

/// [`read_entry_versioned`] that hands back the open output file when it is too big to read
/// (`read_limit` 0: always), so that a hit opens the output once whatever its size.
pub fn read_entry_open(entry_dir: &Path, opts: &ReadOptions) -> Result<EntryRead, StoreError> {
    match read_once(entry_dir, opts)? {
        // Half an entry may be one being removed or replaced by another process between our
        // two looks: only a second identical look means damage.
        EntryRead {
            hit: Hit::Damaged(_),
            ..
        } => read_once(entry_dir, opts),
        found => Ok(found),
    }
}

fn read_once(entry_dir: &Path, opts: &ReadOptions) -> Result<EntryRead, StoreError> {
    let absent = |hit| EntryRead {
        hit,
        version: None,
        file: None,
    };
    let has_metadata = if opts.verify {
        let metadata_path = entry_dir.join(METADATA);
        match fs::metadata(&metadata_path) {
            Ok(_) => true,
            Err(e) if is_absent(&e) => false,
            Err(e) => return Err(e).ctx("stat", &metadata_path),
        }
    } else {
        true
    };
    let output_path = entry_dir.join(OUTPUT);
    let opened = OpenOptions::new()
        .read(true)
        .write(opts.write)
        .open(&output_path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if is_absent(&e) => {
            let hit = if opts.verify && has_metadata {
                Hit::Damaged("output.jrs is missing")
            } else {
                Hit::Miss
            };
            return Ok(absent(hit));
        }
        Err(e) => return Err(e).ctx("open", &output_path),
    };
    if !has_metadata {
        return Ok(absent(Hit::Damaged("metadata.json is missing")));
    }
    if !opts.verify && opts.read_limit > 0 && !opts.version {
        return read_unverified(file, &output_path, opts.read_limit).map(|(hit, file)| EntryRead {
            hit,
            version: None,
            file,
        });
    }
    let stat = file.metadata().ctx("stat", &output_path)?;
    let seen = if opts.version {
        FileVersion::of(&stat)
    } else {
        None
    };
    let size = stat.len();
    if opts.verify {
        refresh_access_time(&file, &stat);
    }
    let (data, file) = if size <= opts.read_limit {
        (Some(read_sized(&mut file, &output_path, size)?), None)
    } else {
        (None, Some(file))
    };
    Ok(EntryRead {
        hit: Hit::Found { size, data },
        version: seen,
        file,
    })
}

/// The common hit: one `read` into a buffer of [`FIRST_READ`] bytes, no `fstat`. A read
/// shorter than asked means end of file for regular files; were a file system to return a
/// short read early, the output would look truncated and its checksum would reject it. A
/// file filling the first read is `fstat`ed: bigger than `read_limit`, it is handed back
/// unread past that point (rewound), otherwise read to its end.
fn read_unverified(
    mut file: File,
    path: &Path,
    read_limit: u64,
) -> Result<(Hit, Option<File>), StoreError> {
    let cap = usize::try_from(read_limit.saturating_add(1)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; cap.min(FIRST_READ)];
    let mut filled = 0;
    loop {
        let n = loop {
            match file.read(&mut buf[filled..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).ctx("read", path),
            }
        };
        filled += n;
        if n == 0 || filled < buf.len() {
            break;
        }
        let size = file.metadata().ctx("stat", path)?.len();
        if size > read_limit || buf.len() >= cap {
            // Bigger than the limit: the caller loads it in place.
            file.rewind().ctx("seek", path)?;
            return Ok((Hit::Found { size, data: None }, Some(file)));
        }
        // One more byte than the size announced: a file that grew meanwhile is seen whole.
        let want = usize::try_from(size).map_or(cap, |s| s.saturating_add(1).min(cap));
        buf.resize(want.max(buf.len() + 1), 0);
    }
    buf.truncate(filled);
    Ok((
        Hit::Found {
            size: filled as u64,
            data: Some(buf),
        },
        None,
    ))
}

/// The bytes of a file `fstat` said holds `size` bytes: one `read` into `size + 1` bytes
/// (a shorter read is the end of a regular file), more only if the file grew meanwhile.
fn read_sized(file: &mut File, path: &Path, size: u64) -> Result<Vec<u8>, StoreError> {
    let len = usize::try_from(size)
        .map_err(|_| std::io::Error::from(ErrorKind::OutOfMemory))
        .ctx("read", path)?;
    let mut buf = vec![0u8; len.saturating_add(1)];
    let mut filled = 0;
    loop {
        match file.read(&mut buf[filled..]) {
            Ok(n) => {
                filled += n;
                if n == 0 || filled < buf.len() {
                    break;
                }
                buf.resize(buf.len().saturating_mul(2), 0);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).ctx("read", path),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Size of the first read of an unverified hit: most cached outputs are small.
const FIRST_READ: usize = 16 * 1024;

/// Set the access time of `file` to now if it is older than [`TOUCH_INTERVAL_SECS`].
fn refresh_access_time(file: &File, stat: &fs::Metadata) {
    let now = SystemTime::now();
    let stale = stat.accessed().map_or(true, |atime| {
        now.duration_since(atime)
            .is_ok_and(|age| age > Duration::from_secs(TOUCH_INTERVAL_SECS))
    });
    if stale {
        // Best effort: a read-only cache still serves hits, it only loses LRU precision.
        let _ = file.set_times(FileTimes::new().set_accessed(now));
    }
}

/// Create `dir` and its parents. A concurrent clear renaming a parent away can make one
/// attempt fail (`ENOENT`, or `EEXIST` for a name seen then gone): try again.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    let mut attempts = 0;
    loop {
        match fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e)
                if attempts < 5
                    && matches!(e.kind(), ErrorKind::NotFound | ErrorKind::AlreadyExists) =>
            {
                attempts += 1;
            }
            Err(e) => return Err(e).ctx("create", dir),
        }
    }
}

/// `ENOENT` or `ENOTDIR` (a file where a folder of the path should be): nothing there.
fn is_absent(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory
}

/// An entry being written: a private folder beside its final place, published by
/// [`Staging::commit`] and removed if dropped uncommitted (an error, a Python exception).
#[derive(Debug)]
pub struct Staging {
    temp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Staging {
    /// Create the staging folder of the entry that will live at `entry_dir` (creating the
    /// function folder if needed).
    pub fn new(entry_dir: &Path) -> Result<Self, StoreError> {
        let temp = unique_sibling(entry_dir, TEMP_PREFIX)?;
        let mut attempts = 0;
        loop {
            if let Some(parent) = entry_dir.parent() {
                ensure_dir(parent)?;
            }
            match fs::create_dir(&temp) {
                Ok(()) => {
                    // Leftovers of writers killed earlier in this function folder.
                    if let Some(parent) = entry_dir.parent() {
                        super::owned::reap_dead_leftovers(parent);
                    }
                    break;
                }
                Err(e) if attempts < 5 && e.kind() == ErrorKind::NotFound => attempts += 1,
                Err(e) => return Err(e).ctx("create", &temp),
            }
        }
        Ok(Self {
            temp,
            target: entry_dir.to_path_buf(),
            done: false,
        })
    }

    /// The staging folder, where the caller writes the entry's files.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// The final folder of the entry.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Write `bytes` to the file `name` of the staging folder.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if name.contains('/') || name.starts_with('.') {
            return Err(StoreError::InvalidName(name.to_owned()));
        }
        let path = self.temp.join(name);
        let mut file = File::create(&path).ctx("create", &path)?;
        file.write_all(bytes).ctx("write", &path)?;
        Ok(())
    }

    /// Publish the entry by renaming it into place. An entry already there (a concurrent
    /// writer, a damaged entry being replaced) is moved aside and removed first, so readers
    /// see the old complete entry, nothing, or the new one.
    ///
    /// With `durable`, every file and the folder are synced first, so the entry also survives
    /// a power loss whole. Without it a power loss may leave the entry's files short; they
    /// are then detected as damaged by their checksums and recomputed (never loaded wrong).
    pub fn commit(mut self, durable: bool) -> Result<(), StoreError> {
        if durable {
            for item in fs::read_dir(&self.temp).ctx("list", &self.temp)? {
                let path = item.ctx("list", &self.temp)?.path();
                if path.is_file() {
                    File::open(&path)
                        .and_then(|f| f.sync_data())
                        .ctx("sync", &path)?;
                }
            }
            File::open(&self.temp)
                .and_then(|d| d.sync_all())
                .ctx("sync", &self.temp)?;
        }
        let mut attempts = 0;
        loop {
            match fs::rename(&self.temp, &self.target) {
                Ok(()) => break,
                Err(e)
                    if attempts < 5
                        && matches!(
                            e.kind(),
                            ErrorKind::DirectoryNotEmpty | ErrorKind::AlreadyExists
                        ) =>
                {
                    attempts += 1;
                    remove_entry(&self.target)?;
                }
                Err(e) => return Err(e).ctx("rename", &self.temp),
            }
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}

/// Remove the folder `dir` (an entry, a function's folder): renamed out of the way first so
/// no reader ever sees it half deleted. Absent already is not an error.
pub fn remove_entry(dir: &Path) -> Result<(), StoreError> {
    let trash = unique_sibling(dir, TRASH_PREFIX)?;
    match fs::rename(dir, &trash) {
        Ok(()) => {}
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(e).ctx("rename", dir),
    }
    // Once renamed the entry is gone for everyone. Deleting the trash can race with a process
    // still writing into it (a staging folder inside a function folder being cleared): retry,
    // then leave it to the sweep of stale leftovers in `reduce_size`.
    for _ in 0..3 {
        match fs::remove_dir_all(&trash) {
            Err(e) if !is_absent(&e) => continue,
            _ => break,
        }
    }
    Ok(())
}

/// Remove every sub-folder of `dir`, keeping its files (the store root keeps nothing else).
pub fn clear_dir(dir: &Path) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(e).ctx("list", dir),
    };
    for item in entries {
        let item = item.ctx("list", dir)?;
        if item.file_type().is_ok_and(|t| t.is_dir()) {
            remove_entry(&item.path())?;
        }
    }
    Ok(())
}

/// Write `bytes` to `path` atomically: a synced temporary sibling renamed over it. Parent
/// folders are created, again if another process removes them meanwhile (a concurrent clear).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    file_name(path)?;
    let mut attempts = 0;
    loop {
        match write_once(path, bytes) {
            Err(e) if attempts < 5 && e.io_error().is_some_and(is_absent) => attempts += 1,
            other => return other,
        }
    }
}

fn write_once(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    let temp = unique_sibling(path, TEMP_PREFIX)?;
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_data()
        })
        .ctx("write", &temp)
        .and_then(|()| fs::rename(&temp, path).ctx("rename", &temp));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn commit(entry: &Path, output: &[u8]) {
        let staging = Staging::new(entry).expect("stage");
        staging.write(OUTPUT, output).expect("write");
        staging.write(METADATA, b"{}").expect("write");
        staging.commit(true).expect("commit");
    }

    #[test]
    fn missing_entry_is_a_miss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join("f").join(KEY);
        assert_eq!(read_entry(&entry, 1 << 20, true).expect("read"), Hit::Miss);
    }

    #[test]
    fn committed_entry_reads_back_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join("f").join(KEY);
        commit(&entry, b"payload");
        let hit = read_entry(&entry, 1 << 20, true).expect("read");
        assert_eq!(
            hit,
            Hit::Found {
                size: 7,
                data: Some(b"payload".to_vec())
            }
        );
        assert_eq!(
            read_entry(&entry, 3, true).expect("read"),
            Hit::Found {
                size: 7,
                data: None
            }
        );
        let names: Vec<_> = fs::read_dir(dir.path().join("f"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY)]);
    }

    #[test]
    fn outputs_over_the_limit_come_back_open_at_their_start() {
        use std::io::Read as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join(KEY);
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        commit(&entry, &payload);
        for (verify, version, limit) in [
            (false, false, 1000),
            (false, false, 20_000),
            (false, true, 1000),
            (true, true, 1000),
            (true, false, 0),
            (false, true, 0),
        ] {
            let opts = ReadOptions {
                read_limit: limit,
                verify,
                version,
                write: false,
            };
            let read = read_entry_open(&entry, &opts).expect("read");
            assert_eq!(
                read.hit,
                Hit::Found {
                    size: 100_000,
                    data: None
                }
            );
            assert_eq!(read.version.is_some(), version);
            let mut rest = Vec::new();
            read.file
                .expect("open file")
                .read_to_end(&mut rest)
                .expect("read");
            assert_eq!(rest, payload);
        }
        let small = ReadOptions {
            read_limit: 1 << 20,
            verify: false,
            version: true,
            write: false,
        };
        let read = read_entry_open(&entry, &small).expect("read");
        assert!(read.file.is_none() && read.version.is_some());
        assert_eq!(
            read.hit,
            Hit::Found {
                size: 100_000,
                data: Some(payload)
            }
        );
    }

    #[test]
    fn unverified_reads_return_bytes_up_to_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join(KEY);
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        commit(&entry, &payload);
        let Hit::Found { size, data } = read_entry(&entry, 1 << 20, false).expect("read") else {
            panic!("expected a hit")
        };
        assert_eq!(size, 100_000);
        assert_eq!(data.as_deref(), Some(&payload[..]));
        for limit in [99_999, 16 * 1024, 10] {
            assert_eq!(
                read_entry(&entry, limit, false).expect("read"),
                Hit::Found {
                    size: 100_000,
                    data: None
                }
            );
        }
        assert_eq!(
            read_entry(&entry, 100_000, false).expect("read"),
            Hit::Found {
                size: 100_000,
                data: Some(payload)
            }
        );
    }

    #[test]
    fn commit_replaces_an_existing_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join(KEY);
        commit(&entry, b"old");
        commit(&entry, b"new");
        let Hit::Found { data, .. } = read_entry(&entry, 100, true).expect("read") else {
            panic!("expected a hit")
        };
        assert_eq!(data.as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn half_entries_are_damaged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join(KEY);
        commit(&entry, b"x");
        fs::remove_file(entry.join(METADATA)).expect("rm");
        assert!(matches!(read_entry(&entry, 100, true), Ok(Hit::Damaged(_))));
        assert!(matches!(
            read_entry(&entry, 100, false),
            Ok(Hit::Found { .. })
        ));
        commit(&entry, b"x");
        fs::remove_file(entry.join(OUTPUT)).expect("rm");
        assert!(matches!(read_entry(&entry, 100, true), Ok(Hit::Damaged(_))));
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join(KEY);
        {
            let staging = Staging::new(&entry).expect("stage");
            staging.write(OUTPUT, b"partial").expect("write");
        }
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[test]
    fn staging_rejects_names_outside_its_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = Staging::new(&dir.path().join(KEY)).expect("stage");
        assert!(staging.write("../escape", b"x").is_err());
        assert!(staging.write(".hidden", b"x").is_err());
    }

    #[test]
    fn hit_refreshes_a_stale_access_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join(KEY);
        commit(&entry, b"x");
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::open(entry.join(OUTPUT))
            .expect("open")
            .set_times(FileTimes::new().set_accessed(old))
            .expect("set times");
        read_entry(&entry, 100, true).expect("read");
        let atime = fs::metadata(entry.join(OUTPUT))
            .expect("stat")
            .accessed()
            .expect("atime");
        assert!(atime > old + Duration::from_secs(3000));
    }

    #[test]
    fn remove_and_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = dir.path().join("f").join(KEY);
        commit(&entry, b"x");
        fs::write(dir.path().join("keep.txt"), b"k").expect("write");
        remove_entry(&entry).expect("remove");
        assert_eq!(read_entry(&entry, 10, true).expect("read"), Hit::Miss);
        remove_entry(&entry).expect("absent is fine");
        commit(&entry, b"x");
        clear_dir(dir.path()).expect("clear");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("keep.txt")]);
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("func_code.py");
        write_file_atomic(&path, b"first").expect("write");
        write_file_atomic(&path, b"second").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        assert_eq!(
            fs::read_dir(dir.path().join("sub")).expect("list").count(),
            1
        );
    }
}
