//! The entry object: `<func>/<args hash>/entry.jrs`.
//!
//! ```text
//! 0   8  magic "JRSREMv1"
//! 8   8  metadata length (u64 LE)
//! 16  8  output length (u64 LE)
//! 24  8  xxh3-64 of the metadata
//! 32  8  xxh3-64 of the output
//! 40     metadata (JSON, UTF-8), then the output (a joblib-rs dump container)
//! ```
//!
//! One object holds both, so a hit costs one GET and an entry is published by one PUT. Both
//! parts are checksummed: a truncated or altered object is reported as damaged, never loaded.

use bytes::Bytes;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::{RemoteError, RemoteStore, Result};

/// The first bytes of every entry object.
pub const MAGIC: &[u8; 8] = b"JRSREMv1";
/// Size of the fixed header.
pub const HEADER_LEN: usize = 40;
/// The object name of an entry inside its `<func>/<args hash>/` prefix.
pub const ENTRY_NAME: &str = "entry.jrs";
/// How many first bytes of an entry [`read_metadata`] asks for: the header and, nearly
/// always, the whole metadata.
const METADATA_PROBE: u64 = 64 * 1024;

fn hash_chunks(chunks: &[Bytes]) -> u64 {
    let mut hasher = Xxh3::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    hasher.digest()
}

/// The chunks of the entry object for `metadata` and `output` (the output's chunks are
/// shared, not copied).
pub fn encode(metadata: &[u8], output: Vec<Bytes>) -> Vec<Bytes> {
    let output_len: usize = output.iter().map(Bytes::len).sum();
    let mut head = Vec::with_capacity(HEADER_LEN + metadata.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    head.extend_from_slice(&(output_len as u64).to_le_bytes());
    head.extend_from_slice(&xxh3_64(metadata).to_le_bytes());
    head.extend_from_slice(&hash_chunks(&output).to_le_bytes());
    head.extend_from_slice(metadata);
    let mut chunks = Vec::with_capacity(output.len() + 1);
    chunks.push(Bytes::from(head));
    chunks.extend(output);
    chunks
}

fn damaged(key: &str, reason: impl Into<String>) -> RemoteError {
    RemoteError::Damaged {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn read_u64(head: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&head[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Split an entry object (as read, in chunks) into its metadata and output chunks, checking
/// lengths and checksums. `key` names the object in errors.
pub fn decode(key: &str, mut chunks: Vec<Bytes>) -> Result<(Bytes, Vec<Bytes>)> {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    if total < HEADER_LEN {
        return Err(damaged(
            key,
            format!("{total} bytes, shorter than the header"),
        ));
    }
    if chunks.first().map_or(0, Bytes::len) < HEADER_LEN {
        chunks = vec![Bytes::from(chunks.concat())];
    }
    let head = &chunks[0][..HEADER_LEN];
    if &head[..8] != MAGIC {
        return Err(damaged(key, "not a joblib-rs remote entry (bad magic)"));
    }
    let metadata_len = read_u64(head, 8);
    let output_len = read_u64(head, 16);
    let metadata_hash = read_u64(head, 24);
    let output_hash = read_u64(head, 32);
    let expected = (HEADER_LEN as u64)
        .checked_add(metadata_len)
        .and_then(|n| n.checked_add(output_len));
    if expected != Some(total as u64) {
        return Err(damaged(
            key,
            format!("{total} bytes, the header announces {metadata_len} + {output_len} more"),
        ));
    }
    // Lengths are now known to fit in memory (they add up to `total`).
    let metadata_end = HEADER_LEN + metadata_len as usize;
    if chunks[0].len() < metadata_end {
        chunks = vec![Bytes::from(chunks.concat())];
    }
    let first = chunks.remove(0);
    let metadata = first.slice(HEADER_LEN..metadata_end);
    if xxh3_64(&metadata) != metadata_hash {
        return Err(damaged(key, "metadata checksum mismatch"));
    }
    let mut output = Vec::with_capacity(chunks.len() + 1);
    if first.len() > metadata_end {
        output.push(first.slice(metadata_end..));
    }
    output.extend(chunks);
    if hash_chunks(&output) != output_hash {
        return Err(damaged(key, "output checksum mismatch"));
    }
    Ok((metadata, output))
}

/// The checksummed metadata of the entry object at `key` and the length of its output,
/// without downloading the output: one ranged GET of the first bytes (a second one only for
/// metadata longer than 64 KiB). None if there is no object. The output is not verified.
pub fn read_metadata(store: &RemoteStore, key: &str) -> Result<Option<(Bytes, u64)>> {
    let Some((head, size)) = store.get_prefix(key, METADATA_PROBE)? else {
        return Ok(None);
    };
    if head.len() < HEADER_LEN {
        return Err(damaged(
            key,
            format!("{size} bytes, shorter than the header"),
        ));
    }
    if &head[..8] != MAGIC {
        return Err(damaged(key, "not a joblib-rs remote entry (bad magic)"));
    }
    let metadata_len = read_u64(&head, 8);
    let output_len = read_u64(&head, 16);
    let metadata_hash = read_u64(&head, 24);
    let expected = (HEADER_LEN as u64)
        .checked_add(metadata_len)
        .and_then(|n| n.checked_add(output_len));
    if expected != Some(size) {
        return Err(damaged(
            key,
            format!("{size} bytes, the header announces {metadata_len} + {output_len} more"),
        ));
    }
    // The metadata lies inside the object, whose size the server reported.
    let end = HEADER_LEN as u64 + metadata_len;
    let metadata = if head.len() as u64 >= end {
        head.slice(HEADER_LEN..HEADER_LEN + metadata_len as usize)
    } else {
        match store.get_range(key, HEADER_LEN as u64..end)? {
            Some(data) if data.len() as u64 == metadata_len => data,
            Some(_) => return Err(damaged(key, "short read of the metadata")),
            None => return Ok(None),
        }
    };
    if xxh3_64(&metadata) != metadata_hash {
        return Err(damaged(key, "metadata checksum mismatch"));
    }
    Ok(Some((metadata, output_len)))
}
