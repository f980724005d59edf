//! Leftovers of killed writers: temporary files named after their writer's process id.
//!
//! `write_file_atomic` names its temporary file `.<name>.<pid>.<n>.jrs-tmp`. A writer killed
//! with SIGKILL cannot remove it; the next write into the same folder does, when the process
//! that wrote it no longer exists. Process ids are reused, so a live process with that id
//! only protects the file if it started before the file was last written (on Linux, from
//! `/proc/<pid>/stat`; elsewhere any live process with that id protects it).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Suffix of the temporary files of `write_file_atomic`.
pub const TEMP_SUFFIX: &str = ".jrs-tmp";

/// A folder is scanned for leftovers at most once per this interval per process, so a
/// program that dumps many files into one folder does not list it every time.
const SCAN_EVERY: Duration = Duration::from_secs(30);

/// Slack between a process's start time (second resolution) and a file's modification time.
const START_SLACK: Duration = Duration::from_secs(2);

static LAST_SCAN: Mutex<Option<HashMap<PathBuf, Instant>>> = Mutex::new(None);

/// The writer's process id encoded in a temporary file name `.<name>.<pid>.<n>.jrs-tmp`.
pub fn temp_writer_pid(file_name: &str) -> Option<u32> {
    let stem = file_name.strip_suffix(TEMP_SUFFIX)?;
    if !stem.starts_with('.') {
        return None;
    }
    let (rest, n) = stem.rsplit_once('.')?;
    let (name, pid) = rest.rsplit_once('.')?;
    if name.len() < 2 || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// When the process `pid` started, if the platform says (Linux: `/proc`).
fn process_start(pid: u32) -> Option<SystemTime> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; `starttime` is field 22, so index 19 here.
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    let secs = btime.checked_add(ticks / hz)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Whether the process `pid` that wrote a file last modified at `written` is certainly gone
/// (no such process, or the process with that id started after the file was written).
pub fn writer_is_gone(pid: u32, written: SystemTime) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    if pid == std::process::id() {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let rc = unsafe { libc::kill(raw, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return true; // no such process (EPERM: it exists, owned by another user)
    }
    match process_start(pid) {
        Some(start) => start > written + START_SLACK,
        None => false,
    }
}

/// Remove the temporary files of dead writers in `dir` (at most one scan per folder every
/// [`SCAN_EVERY`] per process). Errors are ignored: this is housekeeping, and a file that
/// another process removes meanwhile is fine. Returns the number of files removed.
pub fn reap_stale_temps(dir: &Path) -> usize {
    if !due_for_scan(dir) {
        return 0;
    }
    reap_now(dir)
}

/// Whether `dir` was not scanned for leftovers in the last [`SCAN_EVERY`] by this process
/// (and records the scan about to happen). Shared by `dump`'s and the cache store's reapers.
pub fn due_for_scan(dir: &Path) -> bool {
    {
        let Ok(mut guard) = LAST_SCAN.lock() else {
            return false;
        };
        let map = guard.get_or_insert_with(HashMap::new);
        let now = Instant::now();
        if let Some(last) = map.get(dir)
            && now.duration_since(*last) < SCAN_EVERY
        {
            return false;
        }
        if map.len() > 4096 {
            map.retain(|_, t| now.duration_since(*t) < SCAN_EVERY);
        }
        map.insert(dir.to_path_buf(), now);
    }
    true
}

/// Scan `dir` now (no rate limit); see [`reap_stale_temps`].
pub fn reap_now(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_writer_pid) else {
            continue;
        };
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        let Ok(written) = meta.modified() else {
            continue;
        };
        if writer_is_gone(pid, written) && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_writer_pids() {
        assert_eq!(temp_writer_pid(".data.pkl.1234.0.jrs-tmp"), Some(1234));
        assert_eq!(temp_writer_pid(".a.b.c.77.12.jrs-tmp"), Some(77));
        assert_eq!(temp_writer_pid("data.pkl.1234.0.jrs-tmp"), None);
        assert_eq!(temp_writer_pid(".data.pkl.x1.0.jrs-tmp"), None);
        assert_eq!(temp_writer_pid(".data.pkl.1.0.jrs-tmp.bak"), None);
        assert_eq!(temp_writer_pid("..1.0.jrs-tmp"), None);
    }

    #[test]
    fn own_and_live_writers_are_kept() {
        let me = std::process::id();
        assert!(!writer_is_gone(me, SystemTime::now()));
        // pid 1 (init) is alive and started before any file written now.
        assert!(!writer_is_gone(1, SystemTime::now()));
    }

    #[test]
    fn dead_writers_are_reaped_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".out.pkl.{dead}.3.jrs-tmp"));
        let mine = dir
            .path()
            .join(format!(".out.pkl.{}.3.jrs-tmp", std::process::id()));
        let foreign = dir.path().join("notes.jrs-tmp");
        for p in [&stale, &mine, &foreign] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(reap_now(dir.path()), 1);
        assert!(!stale.exists());
        assert!(mine.exists() && foreign.exists());
    }
}
