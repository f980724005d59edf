//! Canonical object hashing: the engine behind `joblib_rs.hash` and the keys of `Memory`.
//!
//! ```text
//!  Python object graph ──(bindings walk it)──► CanonicalHasher ──► Digest (xxh3-128 | md5 | sha1)
//!                                                 │
//!            scalars: tag | content ──────────────┤
//!            containers: Merkle frames ───────────┤  dict/set entries sorted by digest
//!            array data / big bytes ──► blob ─────┘  1 MiB chunks digested on all cores
//!                                        ▲
//!                        strided arrays read in C order chunk by chunk (no full copy)
//! ```
//!
//! The byte encoding is specified in `docs/hashing.md`; `FORMAT_VERSION` and golden values in
//! the tests pin it.

mod blob;
mod canonical;
mod digest;
mod strided;

pub use blob::{BlobSource, CHUNK, INLINE_MAX, encode_blob, is_large};
pub use canonical::{CanonicalHasher, Entered, FORMAT_VERSION, NodeKind};
pub use digest::{Algorithm, Digest, Stream};
pub use strided::StridedLayout;

/// Errors of the hashing core.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    /// `hash_name` is not one of [`Algorithm::NAMES`].
    #[error(
        "Valid options for 'hash_name' are ['xxh3', 'md5', 'sha1']. Got hash_name='{0}' instead."
    )]
    UnknownAlgorithm(String),
    /// Array geometry that does not fit its memory.
    #[error("invalid array layout: {0}")]
    InvalidLayout(String),
    /// Structure events out of order: a bug in the walker, never user data.
    #[error("internal hashing error: {0}")]
    Unbalanced(&'static str),
}
