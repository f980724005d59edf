//! What the store created, and removing only that.
//!
//! A store root carries a marker file ([`MARKER`]) written when the store is created: the
//! command line refuses folders without it. Clearing removes only what the store's own code
//! writes — function folders' `func_code.py`, entry folders holding nothing but
//! `output.jrs`/`metadata.json`, their lock files, staging and trash leftovers — and reports
//! everything else it met, which stays.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::entry::{remove_entry, write_file_atomic};
use super::layout::{
    FUNC_CODE, LOCK_SUFFIX, METADATA, OUTPUT, TEMP_PREFIX, TRASH_PREFIX, is_entry_name,
};
use super::{IoContext, StoreError};

/// The marker file of a store root.
pub const MARKER: &str = ".joblib-rs-store";
/// Version of the store layout recorded in the marker.
pub const STORE_VERSION: u32 = 1;
/// The marker's content.
pub fn marker_text() -> String {
    format!("joblib-rs cache store\nversion {STORE_VERSION}\n")
}

/// Files a store root keeps when cleared (besides the marker).
const ROOT_FILES: [&str; 1] = [".gitignore"];

/// Whether `root` carries the store marker.
pub fn has_marker(root: &Path) -> bool {
    fs::symlink_metadata(root.join(MARKER)).is_ok_and(|m| m.is_file())
}

/// Write the store marker in `root` (creating `root`) unless it is there.
pub fn write_marker(root: &Path) -> Result<(), StoreError> {
    if has_marker(root) {
        return Ok(());
    }
    write_file_atomic(&root.join(MARKER), marker_text().as_bytes())
}

/// Whether `root`, which has no marker, is a store written by an earlier joblib-rs version of
/// this layout (before markers): some folder under it, at most `depth` levels down, holds a
/// `func_code.py`. Bounded to a few thousand folders.
pub fn looks_like_store(root: &Path) -> bool {
    let mut queue = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = queue.pop() {
        seen += 1;
        if seen > 10_000 {
            return false;
        }
        let Ok(listing) = fs::read_dir(&dir) else {
            continue;
        };
        for item in listing.flatten() {
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(ft) = item.file_type() else { continue };
            if ft.is_file() && name == FUNC_CODE && depth > 0 {
                return true;
            }
            if ft.is_dir() && !name.starts_with('.') && !is_entry_name(name) && depth < 32 {
                queue.push((item.path(), depth + 1));
            }
        }
    }
    false
}

/// Whether `name` is a staging or trash leftover name of this store:
/// `.tmp-<name>-<pid>-<n>-<hex>` or `.trash-<name>-<pid>-<n>-<hex>`.
pub fn is_leftover_name(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(TEMP_PREFIX)
        .or_else(|| name.strip_prefix(TRASH_PREFIX))
    else {
        return false;
    };
    let mut parts = rest.rsplitn(4, '-');
    let (Some(hex), Some(n), Some(pid), Some(base)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !base.is_empty()
        && digits(n)
        && digits(pid)
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The writer's pid in a leftover name `.tmp-<name>-<pid>-<n>-<hex>` (or `.trash-...`).
fn leftover_pid(name: &str) -> Option<u32> {
    if !is_leftover_name(name) {
        return None;
    }
    name.rsplit('-').nth(2)?.parse().ok()
}

/// Remove the staging and trash leftovers in `dir` (a function folder) whose writer is dead:
/// no process with its pid, or one started after the leftover was last written. Called when
/// an entry is written, at most once per folder every 30 s per process (never on hits).
/// Errors are ignored. Returns the number removed.
pub fn reap_dead_leftovers(dir: &Path) -> usize {
    if !crate::format::stale::due_for_scan(dir) {
        return 0;
    }
    let Ok(listing) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for item in listing.flatten() {
        let name = item.file_name();
        let Some(pid) = name.to_str().and_then(leftover_pid) else {
            continue;
        };
        let Ok(meta) = item.metadata() else { continue };
        let Ok(written) = meta.modified() else {
            continue;
        };
        if !crate::format::stale::writer_is_gone(pid, written) {
            continue;
        }
        let path = item.path();
        let gone = if meta.is_dir() {
            fs::remove_dir_all(&path).is_ok()
        } else {
            fs::remove_file(&path).is_ok()
        };
        removed += usize::from(gone);
    }
    removed
}

/// Whether the entry folder `dir` holds only files the store writes into an entry.
pub fn is_owned_entry(dir: &Path) -> bool {
    let Ok(listing) = fs::read_dir(dir) else {
        return false;
    };
    listing.into_iter().all(|item| {
        let Ok(item) = item else { return false };
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            return false;
        };
        item.file_type().is_ok_and(|t| t.is_file())
            && (name == OUTPUT || name == METADATA || is_leftover_name(name))
    })
}

/// What a clear removed, and what it left because the store did not create it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClearReport {
    /// Function folders cleared (their `func_code.py` removed).
    pub functions: usize,
    /// Entries removed.
    pub entries: usize,
    /// Paths left in place: not created by the store.
    pub skipped: Vec<PathBuf>,
}

fn is_lock_name(name: &str) -> bool {
    name.strip_suffix(LOCK_SUFFIX).is_some_and(is_entry_name)
}

fn remove_file_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).ctx("remove", path),
        _ => Ok(()),
    }
}

/// Remove the entry folder `dir` if the store created it (see [`is_owned_entry`]); otherwise
/// report it as skipped. Absent is not an error.
pub fn clear_entry(dir: &Path, report: &mut ClearReport) -> Result<(), StoreError> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    if is_owned_entry(dir) {
        remove_entry(dir)?;
        report.entries += 1;
    } else {
        report.skipped.push(dir.to_path_buf());
    }
    Ok(())
}

/// Remove what the store created under `dir`, recursively. With `keep_dir` (a store root),
/// `dir` itself and its marker and `.gitignore` stay; otherwise `dir` is removed too once
/// empty, if it held anything of the store's. Everything else is reported in `skipped`.
pub fn clear_tree(dir: &Path, keep_dir: bool) -> Result<ClearReport, StoreError> {
    let mut report = ClearReport::default();
    let (empty, ours) = clear_into(dir, keep_dir, &mut report)?;
    if !keep_dir && empty && ours {
        let _ = fs::remove_dir(dir);
    }
    Ok(report)
}

/// Returns (now empty, held something of the store's).
fn clear_into(
    dir: &Path,
    root: bool,
    report: &mut ClearReport,
) -> Result<(bool, bool), StoreError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((true, false)),
        Err(e) => return Err(e).ctx("list", dir),
    };
    let mut empty = true;
    let mut ours = false;
    for item in listing {
        let item = item.ctx("list", dir)?;
        let path = item.path();
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            report.skipped.push(path);
            empty = false;
            continue;
        };
        let Ok(ft) = item.file_type() else {
            continue; // vanished meanwhile
        };
        if root && (name == MARKER || ROOT_FILES.contains(&name)) {
            empty = false;
            continue;
        }
        if ft.is_dir() {
            if is_entry_name(name) {
                let before = report.entries;
                clear_entry(&path, report)?;
                if report.entries == before {
                    empty = false;
                } else {
                    ours = true;
                }
            } else if is_leftover_name(name) {
                let _ = fs::remove_dir_all(&path);
                ours = true;
            } else if name.starts_with('.') {
                report.skipped.push(path);
                empty = false;
            } else {
                let (sub_empty, sub_ours) = clear_into(&path, false, report)?;
                ours |= sub_ours;
                if sub_empty && sub_ours && fs::remove_dir(&path).is_ok() {
                    continue;
                }
                if sub_empty && !sub_ours {
                    // An empty folder the store did not make: not ours to remove.
                    report.skipped.push(path);
                }
                empty = false;
            }
        } else if ft.is_file() && !root && name == FUNC_CODE {
            remove_file_if_present(&path)?;
            report.functions += 1;
            ours = true;
        } else if ft.is_file() && (is_lock_name(name) || is_leftover_name(name)) {
            remove_file_if_present(&path)?;
            ours = true;
        } else {
            report.skipped.push(path);
            empty = false;
        }
    }
    Ok((empty, ours))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Staging;

    fn commit(entry: &Path) {
        let s = Staging::new(entry).expect("staging");
        s.write(OUTPUT, b"out").expect("output");
        s.write(METADATA, b"{}").expect("metadata");
        s.commit(false).expect("commit");
    }

    #[test]
    fn leftovers_of_dead_writers_are_reaped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("wait");
        let me = std::process::id();
        let stale = dir.path().join(format!(".tmp-abc-{dead}-0-ff"));
        let live = dir.path().join(format!(".tmp-abc-{me}-0-ff"));
        let foreign = dir.path().join(".tmp-notes");
        for p in [&stale, &live, &foreign] {
            fs::create_dir(p).expect("mkdir");
        }
        assert_eq!(reap_dead_leftovers(dir.path()), 1);
        assert!(!stale.exists() && live.exists() && foreign.exists());
        assert_eq!(leftover_pid(".trash-x-y-77-3-0a"), Some(77));
    }

    #[test]
    fn leftover_names() {
        assert!(is_leftover_name(".tmp-0123-77-3-0badcafe"));
        assert!(is_leftover_name(".trash-f-1-0-ff"));
        assert!(!is_leftover_name(".tmp-notes"));
        assert!(!is_leftover_name(".tmp--1-2-ff"));
        assert!(!is_leftover_name("tmp-a-1-2-ff"));
    }

    #[test]
    fn clear_removes_only_what_the_store_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write_marker(root).expect("marker");
        let func = root.join("mod").join("f");
        let entry = func.join("0123456789abcdef0123456789abcdef");
        commit(&entry);
        fs::write(func.join(FUNC_CODE), "# first line: 1\n").expect("code");
        fs::write(func.join("0123456789abcdef0123456789abcdef.lock"), "").expect("lock");
        // Foreign things: a file in a function folder, an entry-named folder with a foreign
        // file, a folder with no store content, a file at the root.
        fs::write(func.join("notes.txt"), "mine").expect("notes");
        let odd = func.join("fedcba9876543210fedcba9876543210");
        fs::create_dir_all(&odd).expect("odd");
        fs::write(odd.join("thesis.tex"), "mine").expect("thesis");
        fs::create_dir_all(root.join("photos")).expect("photos");
        fs::write(root.join("photos").join("a.jpg"), "img").expect("jpg");
        fs::write(root.join("README"), "mine").expect("readme");

        let report = clear_tree(root, true).expect("clear");
        assert_eq!(report.functions, 1);
        assert_eq!(report.entries, 1);
        assert!(!entry.exists());
        assert!(!func.join(FUNC_CODE).exists());
        assert!(func.join("notes.txt").exists());
        assert!(odd.join("thesis.tex").exists());
        assert!(root.join("photos").join("a.jpg").exists());
        assert!(root.join("README").exists());
        assert!(has_marker(root));
        let skipped = &report.skipped;
        assert!(skipped.contains(&func.join("notes.txt")));
        assert!(skipped.contains(&odd));
        assert!(skipped.contains(&root.join("README")));
        assert!(skipped.contains(&root.join("photos").join("a.jpg")));
    }

    #[test]
    fn cleared_function_folders_disappear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let func = dir.path().join("m").join("g");
        commit(&func.join("0123456789abcdef0123456789abcdef"));
        fs::write(func.join(FUNC_CODE), "x").expect("code");
        let report = clear_tree(&dir.path().join("m"), false).expect("clear");
        assert_eq!((report.functions, report.entries), (1, 1));
        assert!(report.skipped.is_empty());
        assert!(!dir.path().join("m").exists());
    }

    #[test]
    fn markers_and_old_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!has_marker(dir.path()));
        assert!(!looks_like_store(dir.path()));
        fs::create_dir_all(dir.path().join("src")).expect("src");
        fs::write(dir.path().join("src").join("lib.rs"), "").expect("lib");
        assert!(!looks_like_store(dir.path()));
        fs::create_dir_all(dir.path().join("m").join("f")).expect("f");
        fs::write(dir.path().join("m").join("f").join(FUNC_CODE), "").expect("code");
        assert!(looks_like_store(dir.path()));
        write_marker(dir.path()).expect("marker");
        assert!(has_marker(dir.path()));
        let text = fs::read_to_string(dir.path().join(MARKER)).expect("read");
        assert!(text.contains("version 1"));
    }
}
