//! Pure-Rust core of joblib-rs.
//!
//! Nothing here knows about Python: the bindings crate (`joblib-py`) walks Python objects and
//! feeds this crate plain bytes, numbers and structure events. Every module is testable with
//! `cargo test -p joblib-core` alone.
//!
//! - [`hash`]: the canonical, versioned encoding behind `joblib_rs.hash` and `Memory` keys.
//! - [`store`]: the on-disk layout, atomic entries, locks and LRU accounting behind `Memory`.
//! - [`format`]: the container of `dump` files (frames, checksums, index), read and written.
//! - [`codec`]: the compression codecs, chunked and parallel.
//! - [`pickle`]: a bounds-checked reader of pickle opcodes, for the data-only decoder.
//! - [`pool`]: the worker process pool behind the default `'loky'` backend.
//! - [`remote`]: the object-storage store behind `Memory("s3://...")` (object_store crate).
//! - [`threads`]: the fork-aware thread pool used for data-parallel work on big buffers.

pub mod codec;
pub mod format;
pub mod hash;
pub mod pickle;
pub mod pool;
pub mod remote;
pub mod store;
pub mod threads;
