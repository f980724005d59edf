//! Canonical encoding of byte blobs: strings, bytes and array data.
//!
//! ```text
//!  len <= INLINE_MAX:  u64 len | the bytes
//!  len >  INLINE_MAX:  u64 len | digest(chunk 0) | digest(chunk 1) | ...   (CHUNK bytes each)
//! ```
//! The chunk size is part of the format, so the value never depends on how many threads
//! computed the chunk digests. Chunks are digested in parallel above `PARALLEL_MIN`.

use std::ops::Range;

use rayon::prelude::*;

use super::HashError;
use super::digest::{Algorithm, Digest};
use super::strided::StridedLayout;

/// Blobs up to this many bytes are written inline.
pub const INLINE_MAX: usize = 4096;
/// Size of the pieces a longer blob is digested in.
pub const CHUNK: usize = 1 << 20;
/// Below this size chunks are digested on the calling thread.
const PARALLEL_MIN: usize = 4 * CHUNK;

/// Where the bytes of a blob come from.
#[derive(Clone, Copy, Debug)]
pub enum BlobSource<'a> {
    /// A plain run of bytes.
    Bytes(&'a [u8]),
    /// The C-order stream of a strided array living in `region`.
    Strided {
        /// Geometry of the array inside `region`.
        layout: &'a StridedLayout,
        /// The memory the array's elements live in.
        region: &'a [u8],
    },
}

impl BlobSource<'_> {
    /// Length of the logical stream.
    pub fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::Strided { layout, .. } => layout.logical_len(),
        }
    }

    /// True for an empty stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Digest of bytes `range` of the stream; `scratch` is reused between calls.
    fn digest_range(
        &self,
        algo: Algorithm,
        range: Range<usize>,
        scratch: &mut Vec<u8>,
    ) -> Result<Digest, HashError> {
        match self {
            Self::Bytes(b) => Ok(algo.digest(&b[range])),
            Self::Strided { layout, region } => {
                scratch.clear();
                layout.gather(region, range, scratch)?;
                Ok(algo.digest(scratch))
            }
        }
    }

    /// Appends the whole stream (used only for small blobs).
    fn append_to(&self, out: &mut Vec<u8>) -> Result<(), HashError> {
        match self {
            Self::Bytes(b) => {
                out.extend_from_slice(b);
                Ok(())
            }
            Self::Strided { layout, region } => layout.gather(region, 0..layout.logical_len(), out),
        }
    }
}

/// True when hashing this many bytes is worth releasing the GIL and spreading over threads.
pub fn is_large(len: usize) -> bool {
    len >= PARALLEL_MIN
}

/// Appends the canonical encoding of `src` to `out`.
pub fn encode_blob(
    algo: Algorithm,
    src: BlobSource<'_>,
    out: &mut Vec<u8>,
) -> Result<(), HashError> {
    let len = src.len();
    out.extend_from_slice(&(len as u64).to_le_bytes());
    if len <= INLINE_MAX {
        return src.append_to(out);
    }
    let chunks = len.div_ceil(CHUNK);
    let range = |i: usize| i * CHUNK..((i + 1) * CHUNK).min(len);
    let digests: Vec<Digest> = match crate::threads::pool().filter(|_| is_large(len)) {
        Some(pool) => pool.install(|| {
            (0..chunks)
                .into_par_iter()
                .map_init(Vec::new, |scratch, i| {
                    src.digest_range(algo, range(i), scratch)
                })
                .collect::<Result<_, _>>()
        })?,
        None => {
            let mut scratch = Vec::new();
            (0..chunks)
                .map(|i| src.digest_range(algo, range(i), &mut scratch))
                .collect::<Result<_, _>>()?
        }
    };
    for d in &digests {
        out.extend_from_slice(d.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i ^ (i >> 9)) as u8).collect()
    }

    #[test]
    fn small_blobs_are_inline() {
        let mut out = Vec::new();
        encode_blob(Algorithm::Xxh3, BlobSource::Bytes(b"abc"), &mut out).unwrap();
        assert_eq!(out, [3, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c']);
    }

    #[test]
    fn large_blobs_are_chunk_digests_whatever_the_path() {
        // Above PARALLEL_MIN (thread pool) and below it (serial) the layout is the same rule.
        for n in [INLINE_MAX + 1, 3 * CHUNK + 5, 5 * CHUNK + 1] {
            let d = data(n);
            let mut out = Vec::new();
            encode_blob(Algorithm::Xxh3, BlobSource::Bytes(&d), &mut out).unwrap();
            let mut expected = (n as u64).to_le_bytes().to_vec();
            for piece in d.chunks(CHUNK) {
                expected.extend_from_slice(Algorithm::Xxh3.digest(piece).as_bytes());
            }
            assert_eq!(out, expected, "n={n}");
        }
    }

    #[test]
    fn strided_source_equals_its_contiguous_copy() {
        // A 1500 x 1000 f64 array stored in Fortran order: 12 MB, parallel path.
        let (rows, cols, item) = (1500usize, 1000usize, 8usize);
        let region = data(rows * cols * item);
        let layout = StridedLayout::new(
            item,
            &[rows, cols],
            &[item as isize, (rows * item) as isize],
        )
        .unwrap();
        let mut c_order = Vec::new();
        layout
            .gather(&region, 0..layout.logical_len(), &mut c_order)
            .unwrap();
        let mut a = Vec::new();
        encode_blob(
            Algorithm::Xxh3,
            BlobSource::Strided {
                layout: &layout,
                region: &region,
            },
            &mut a,
        )
        .unwrap();
        let mut b = Vec::new();
        encode_blob(Algorithm::Xxh3, BlobSource::Bytes(&c_order), &mut b).unwrap();
        assert_eq!(a, b);
    }
}
