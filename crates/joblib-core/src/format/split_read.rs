//! Reading a big uncompressed payload from a file with two threads.
//!
//! One thread reads into a fresh buffer at about the speed the kernel can fault its pages in
//! and copy from the page cache; the frame's xxh3 checksum, a sequential hash, then adds
//! its own time. Here a second thread reads the back half of the payload (`pread`, so the
//! threads never share a file position) while the caller reads the front half and hashes it
//! as it goes, then hashes the back half piece by piece as the helper hands the pieces over.
//!
//! ```text
//!   caller:  read+hash front piece 0, 1, ... | hash back piece 0, 1, ...
//!   helper:  read back piece 0, 1, ... ──────►┘ (each piece handed over once read)
//! ```

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use xxhash_rust::xxh3::Xxh3;

/// Payloads at least this big are read with two threads.
pub const SPLIT_MIN: usize = 64 << 20;

/// Reads `buf.len()` bytes of `file` at `start` into `buf` and returns their xxh3-64.
/// `UnexpectedEof` if the file ends first.
pub fn read_and_hash(file: &File, start: u64, buf: &mut [u8], piece: usize) -> io::Result<u64> {
    let piece = piece.max(1);
    // The split falls on a piece boundary so the back half is whole pieces but the last.
    let mid = (buf.len() / 2).div_ceil(piece) * piece;
    let mid = mid.min(buf.len());
    let (front, back) = buf.split_at_mut(mid);
    let back_start = start + mid as u64;
    let mut hasher = Xxh3::new();
    std::thread::scope(|scope| -> io::Result<()> {
        let (tx, rx) = mpsc::channel::<&[u8]>();
        let helper = std::thread::Builder::new()
            .name("joblib-rs-read".into())
            .spawn_scoped(scope, move || -> io::Result<()> {
                let mut at = back_start;
                for part in back.chunks_mut(piece) {
                    file.read_exact_at(part, at)?;
                    at += part.len() as u64;
                    if tx.send(part).is_err() {
                        break; // the caller failed: stop reading
                    }
                }
                Ok(())
            })?;
        let mut at = start;
        for part in front.chunks_mut(piece) {
            file.read_exact_at(part, at)?;
            at += part.len() as u64;
            hasher.update(part);
        }
        // Pieces arrive in order; the channel closes when the helper stops (done or failed).
        for part in rx {
            hasher.update(part);
        }
        helper
            .join()
            .map_err(|_| io::Error::other("the read helper thread panicked"))?
    })?;
    Ok(hasher.digest())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn matches_a_sequential_read_and_hash() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let file = file_with(&data);
        for (start, len, piece) in [(0, data.len(), 4096), (17, 500_000, 1000), (5, 3, 64)] {
            let mut buf = vec![0u8; len];
            let digest = read_and_hash(&file, start as u64, &mut buf, piece).unwrap();
            assert_eq!(buf, &data[start..start + len]);
            assert_eq!(
                digest,
                xxhash_rust::xxh3::xxh3_64(&data[start..start + len])
            );
        }
    }

    #[test]
    fn a_short_file_is_an_unexpected_eof() {
        let file = file_with(&[1u8; 10_000]);
        let mut buf = vec![0u8; 20_000];
        let err = read_and_hash(&file, 0, &mut buf, 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // Also when only the front half is missing bytes (the file ends before `start`).
        let err = read_and_hash(&file, 9_000, &mut buf[..4000], 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
