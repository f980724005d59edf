//! Compression codecs of the persistence format: one enum, chunk-level and stream-level calls.
//!
//! ```text
//!  dump:  raw buffer ──split in CHUNK-sized pieces──► compress_chunk (rayon, all cores) ──► stored chunks
//!  load:  stored chunks ──decompress_chunk (rayon)──► written in place into the final buffer slice
//!  joblib compat: whole compressed file ──decompress_stream──► Vec<u8> (zlib/gzip/bz2/xz/lzma/lz4/zstd)
//! ```
//!
//! Chunks are independent streams of their codec, so they compress and decompress in parallel
//! and a damaged chunk cannot make a decoder write outside its own slice: every decoder writes
//! into a slice of exactly the announced length and any surplus or shortfall is an error.

use std::io::{self, Read, Write};

use rayon::prelude::*;

mod stream;
pub use stream::StreamEncoder;

/// Raw bytes per compressed chunk written by this version (readers accept any size up to
/// [`MAX_CHUNK`]).
pub const CHUNK: usize = 4 << 20;
/// Largest chunk size a reader accepts; bounds every per-chunk allocation.
pub const MAX_CHUNK: usize = 64 << 20;

/// Errors of the codec layer.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A codec id read from a file that this version does not know.
    #[error("unknown codec id {0}")]
    UnknownId(u8),
    /// A codec name given by the user that this version does not know.
    #[error("unknown compression method {0:?}; valid names are {valid:?}", valid = Codec::NAMES)]
    UnknownName(String),
    /// A level outside the codec's range.
    #[error("invalid compression level {level} for {codec}: expected {min} to {max}")]
    BadLevel {
        /// Codec name.
        codec: &'static str,
        /// Level given.
        level: i32,
        /// Smallest level accepted.
        min: i32,
        /// Largest level accepted.
        max: i32,
    },
    /// The compressed bytes are not a valid stream of the codec.
    #[error("{codec} data is corrupt: {detail}")]
    Corrupt {
        /// Codec name.
        codec: &'static str,
        /// What the decoder reported.
        detail: String,
    },
    /// The stream decoded to a length other than the one announced.
    #[error("{codec} data decodes to a length other than the announced {expected} bytes")]
    LengthMismatch {
        /// Codec name.
        codec: &'static str,
        /// Announced raw length.
        expected: usize,
    },
    /// A whole-file stream whose first decoded bytes are not a file `load` reads.
    #[error(
        "{codec} stream does not hold a joblib-rs or joblib file (decoded bytes start with {start:02x?})"
    )]
    Unrecognized {
        /// Codec name.
        codec: &'static str,
        /// The first decoded bytes (at most 8).
        start: Vec<u8>,
    },
    /// A whole-file stream decoding to more than the codec can produce from its size.
    #[error(
        "{codec} stream of {stored} bytes decodes to more than {cap} bytes, beyond what {codec} can compress to that size"
    )]
    TooLarge {
        /// Codec name.
        codec: &'static str,
        /// Compressed size.
        stored: u64,
        /// Largest decoded size accepted.
        cap: u64,
    },
    /// An encoder failed (out of memory or an internal error of the C library).
    #[error("{codec} compression failed: {detail}")]
    Encode {
        /// Codec name.
        codec: &'static str,
        /// What the encoder reported.
        detail: String,
    },
}

/// The magic number of an LZ4 frame (whole-file LZ4 streams).
pub const LZ4_FRAME_MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];

/// A compression method. The discriminant is the id stored in frame headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    None = 0,
    /// zlib stream (RFC 1950).
    Zlib = 1,
    /// gzip member (RFC 1952).
    Gzip = 2,
    /// bzip2 stream.
    Bz2 = 3,
    /// Legacy `.lzma` ("LZMA alone") stream, as Python's `lzma.FORMAT_ALONE`.
    Lzma = 4,
    /// `.xz` stream.
    Xz = 5,
    /// LZ4 block (inside chunks) or LZ4 frame (whole streams).
    Lz4 = 6,
    /// Zstandard frame.
    Zstd = 7,
}

impl Codec {
    /// Every codec, in id order.
    pub const ALL: [Codec; 8] = [
        Self::None,
        Self::Zlib,
        Self::Gzip,
        Self::Bz2,
        Self::Lzma,
        Self::Xz,
        Self::Lz4,
        Self::Zstd,
    ];

    /// Names accepted by [`Codec::from_name`], as the user spells them in `compress=`.
    pub const NAMES: [&'static str; 7] = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd"];

    /// The codec stored under `id` in a frame header.
    pub fn from_id(id: u8) -> Result<Self, CodecError> {
        Ok(match id {
            0 => Self::None,
            1 => Self::Zlib,
            2 => Self::Gzip,
            3 => Self::Bz2,
            4 => Self::Lzma,
            5 => Self::Xz,
            6 => Self::Lz4,
            7 => Self::Zstd,
            other => return Err(CodecError::UnknownId(other)),
        })
    }

    /// The codec called `name` (`"none"` is accepted for [`Codec::None`]).
    pub fn from_name(name: &str) -> Result<Self, CodecError> {
        Ok(match name {
            "none" => Self::None,
            "zlib" => Self::Zlib,
            "gzip" => Self::Gzip,
            "bz2" => Self::Bz2,
            "lzma" => Self::Lzma,
            "xz" => Self::Xz,
            "lz4" => Self::Lz4,
            "zstd" => Self::Zstd,
            other => return Err(CodecError::UnknownName(other.to_owned())),
        })
    }

    /// The id written in frame headers.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The user-facing name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zlib => "zlib",
            Self::Gzip => "gzip",
            Self::Bz2 => "bz2",
            Self::Lzma => "lzma",
            Self::Xz => "xz",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// The bytes a whole-file stream of the codec starts with: how `load` recognises
    /// joblib's compressed pickles and containers wrapped in a compressed file object (empty
    /// for [`Codec::None`]). These are the magic numbers of each format (zlib's first byte
    /// for its default window, the gzip, bzip2, `.xz`, LZ4-frame and Zstandard magics, and
    /// the properties byte and dictionary size that start an "LZMA alone" stream at the
    /// usual presets).
    pub fn stream_magic(self) -> &'static [u8] {
        match self {
            Self::None => b"",
            Self::Zlib => b"x",
            Self::Gzip => &[0x1f, 0x8b],
            Self::Bz2 => b"BZh",
            Self::Lzma => &[0x5d, 0x00, 0x00],
            Self::Xz => &[0xfd, b'7', b'z', b'X', b'Z'],
            Self::Lz4 => &LZ4_FRAME_MAGIC,
            Self::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
        }
    }

    /// The file-name extension that selects the codec in `dump` (empty for
    /// [`Codec::None`]).
    pub fn extension(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Zlib => ".z",
            Self::Gzip => ".gz",
            Self::Bz2 => ".bz2",
            Self::Lzma => ".lzma",
            Self::Xz => ".xz",
            Self::Lz4 => ".lz4",
            Self::Zstd => ".zst",
        }
    }

    /// Level used when the user names the codec without a level (joblib's defaults for the
    /// codecs joblib has; 3 for zstd).
    pub fn default_level(self) -> i32 {
        match self {
            Self::None | Self::Lz4 => 0,
            Self::Zlib | Self::Gzip | Self::Zstd => 3,
            Self::Bz2 => 9,
            Self::Lzma | Self::Xz => 6,
        }
    }

    /// Inclusive range of levels accepted.
    pub fn level_range(self) -> (i32, i32) {
        match self {
            Self::None | Self::Lz4 => (0, 9),
            Self::Zlib | Self::Gzip | Self::Lzma | Self::Xz => (0, 9),
            Self::Bz2 => (1, 9),
            Self::Zstd => (1, 22),
        }
    }

    /// The codec's level for a level on joblib's 1-9 scale (`compress=True` or an integer):
    /// zstd spreads them over its 1-19 (the low levels are equal); the other codecs use joblib's
    /// levels as they are.
    pub fn from_joblib_level(self, level: i32) -> i32 {
        match (self, level) {
            (Self::Zstd, 4) => 5,
            (Self::Zstd, 5) => 7,
            (Self::Zstd, 6) => 9,
            (Self::Zstd, 7) => 12,
            (Self::Zstd, 8) => 15,
            (Self::Zstd, 9) => 19,
            _ => level,
        }
    }

    /// `level` if the codec accepts it.
    pub fn check_level(self, level: i32) -> Result<i32, CodecError> {
        let (min, max) = self.level_range();
        if (min..=max).contains(&level) {
            Ok(level)
        } else {
            Err(CodecError::BadLevel {
                codec: self.name(),
                level,
                min,
                max,
            })
        }
    }

    fn corrupt(self, e: impl std::fmt::Display) -> CodecError {
        CodecError::Corrupt {
            codec: self.name(),
            detail: e.to_string(),
        }
    }

    fn encode_err(self, e: impl std::fmt::Display) -> CodecError {
        CodecError::Encode {
            codec: self.name(),
            detail: e.to_string(),
        }
    }
}

/// Largest ratio of decoded to stored bytes that a stream of `codec` may have: a chunk record
/// of `s` stored bytes holds at most `s * max_ratio` raw bytes, and a whole-file stream of `s`
/// bytes decodes to at most that much. Each bound is above what the codec's format can
/// physically reach (deflate 1032:1, LZ4 about 255:1, a zstd RLE block 43690:1) or, for bzip2
/// and LZMA whose limits are not as crisp, at least twice the ratio its encoder reaches on
/// 64 MiB of zeros (bzip2 849,479:1, LZMA 7,023:1, the most compressible input at the largest
/// chunk a reader accepts). `docs/format.md` states these bounds; readers check a frame's
/// `raw_len` against them before allocating it.
pub fn max_ratio(codec: Codec) -> u64 {
    match codec {
        Codec::None => 1,
        Codec::Zlib | Codec::Gzip => 1 << 11,
        Codec::Lz4 => 1 << 9,
        Codec::Zstd => 1 << 16,
        Codec::Lzma | Codec::Xz => 1 << 15,
        Codec::Bz2 => 1 << 21,
    }
}

/// Upper bound of the stored size of a chunk of `raw` bytes, for every codec (their worst
/// cases are a few bytes per 32 KiB plus a fixed header); readers reject larger records.
pub fn max_stored_len(raw: usize) -> usize {
    raw + raw / 8 + 4096
}

fn level_u32(level: i32) -> u32 {
    u32::try_from(level).unwrap_or(0)
}

/// Compress one chunk into a fresh vector.
pub fn compress_chunk(codec: Codec, level: i32, src: &[u8]) -> Result<Vec<u8>, CodecError> {
    let level = codec.check_level(level)?;
    let e = |err: io::Error| codec.encode_err(err);
    // Every streaming encoder: feed the chunk, then finish into the output vector.
    macro_rules! encode {
        ($encoder:expr) => {{
            let mut enc = $encoder;
            enc.write_all(src).map_err(e)?;
            enc.finish().map_err(e)
        }};
    }
    let out = || Vec::with_capacity(src.len() / 2);
    match codec {
        Codec::None => Ok(src.to_vec()),
        Codec::Zlib => encode!(flate2::write::ZlibEncoder::new(
            out(),
            flate2::Compression::new(level_u32(level))
        )),
        Codec::Gzip => encode!(flate2::write::GzEncoder::new(
            out(),
            flate2::Compression::new(level_u32(level))
        )),
        Codec::Bz2 => encode!(bzip2::write::BzEncoder::new(
            out(),
            bzip2::Compression::new(level_u32(level))
        )),
        Codec::Lzma => {
            let opts = liblzma::stream::LzmaOptions::new_preset(level_u32(level))
                .map_err(|err| codec.encode_err(err))?;
            let stream = liblzma::stream::Stream::new_lzma_encoder(&opts)
                .map_err(|err| codec.encode_err(err))?;
            encode!(liblzma::write::XzEncoder::new_stream(out(), stream))
        }
        Codec::Xz => encode!(liblzma::write::XzEncoder::new(out(), level_u32(level))),
        Codec::Lz4 => lz4_block(level, src),
        Codec::Zstd => zstd_compress(src, zstd_effective_level(src, level)).map_err(e),
    }
}

/// First lz4 level compressed with LZ4-HC, as in python-lz4's frame `compression_level`
/// (which joblib passes its level to): below it the fast codec, from it LZ4-HC at that level.
/// Both write the same block format, decoded by the same reader.
pub const LZ4_HC_MIN_LEVEL: i32 = 3;

/// One LZ4 block holding `src`: the fast codec below [`LZ4_HC_MIN_LEVEL`], LZ4-HC from it.
/// A chunk whose first [`PROBE`] bytes the fast codec leaves over 90 % of their size (random
/// floats, compressed data) is compressed with the fast codec at every level: LZ4-HC would
/// spend several times longer for the same size.
fn lz4_block(level: i32, src: &[u8]) -> Result<Vec<u8>, CodecError> {
    if level < LZ4_HC_MIN_LEVEL || src.is_empty() {
        return Ok(lz4_flex::block::compress(src));
    }
    if src.len() >= 2 * PROBE && lz4_flex::block::compress(&src[..PROBE]).len() * 10 >= PROBE * 9 {
        return Ok(lz4_flex::block::compress(src));
    }
    let mut out = Vec::new();
    lzzzz::lz4_hc::compress_to_vec(src, &mut out, level)
        .map_err(|err| Codec::Lz4.encode_err(err))?;
    Ok(out)
}

thread_local! {
    /// One zstd compression context per thread and level, reused from chunk to chunk: a
    /// fresh context allocates and touches megabytes of tables, which costs more than
    /// compressing a 4 MiB chunk where first-touched pages fault slowly (VMs).
    static ZSTD_CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    /// The level-1 context of [`zstd_effective_level`]'s probe.
    static ZSTD_PROBE: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// One zstd decompression context per thread, reused likewise.
    static ZSTD_DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_compress(src: &[u8], level: i32) -> io::Result<Vec<u8>> {
    ZSTD_CCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some((l, ctx)) if *l == level => ctx.compress(src),
            _ => {
                let mut ctx = zstd::bulk::Compressor::new(level)?;
                let out = ctx.compress(src);
                *slot = Some((level, ctx));
                out
            }
        }
    })
}

fn zstd_decompress_into(src: &[u8], dst: &mut [u8]) -> io::Result<usize> {
    ZSTD_DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some(ctx) => ctx.decompress_to_buffer(src, dst),
            None => {
                let mut ctx = zstd::bulk::Decompressor::new()?;
                let out = ctx.decompress_to_buffer(src, dst);
                *slot = Some(ctx);
                out
            }
        }
    })
}

/// Bytes of a chunk that zstd compresses at level 1 to decide whether a higher level can pay.
const PROBE: usize = 64 << 10;

/// zstd level actually used for a chunk: above 1, a chunk whose first [`PROBE`] bytes stay
/// over 90 % of their size at level 1 (random floats, already-compressed data) is compressed
/// at level 1. Higher levels save nothing on such data (measured: random float64 gives the
/// same ratio, 0.94, at levels 1 and 3) but run 2-3 times slower.
fn zstd_effective_level(src: &[u8], level: i32) -> i32 {
    if level <= 1 || src.len() < 2 * PROBE {
        return level;
    }
    let probe = ZSTD_PROBE.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some(ctx) => ctx.compress(&src[..PROBE]),
            None => {
                let mut ctx = zstd::bulk::Compressor::new(1)?;
                let out = ctx.compress(&src[..PROBE]);
                *slot = Some(ctx);
                out
            }
        }
    });
    match probe {
        Ok(probe) if probe.len() * 10 >= PROBE * 9 => 1,
        _ => level,
    }
}

/// Fill `dst` exactly from `reader`; any shortfall or surplus is an error.
fn read_exactly(codec: Codec, mut reader: impl Read, dst: &mut [u8]) -> Result<(), CodecError> {
    let mut filled = 0;
    while filled < dst.len() {
        match reader.read(&mut dst[filled..]) {
            Ok(0) => {
                return Err(CodecError::LengthMismatch {
                    codec: codec.name(),
                    expected: dst.len(),
                });
            }
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(codec.corrupt(err)),
        }
    }
    let mut probe = [0u8; 1];
    loop {
        match reader.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                return Err(CodecError::LengthMismatch {
                    codec: codec.name(),
                    expected: dst.len(),
                });
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(codec.corrupt(err)),
        }
    }
}

/// Decompress one chunk into `dst`, which has exactly the chunk's raw length.
pub fn decompress_chunk(codec: Codec, src: &[u8], dst: &mut [u8]) -> Result<(), CodecError> {
    match codec {
        Codec::None => {
            if src.len() != dst.len() {
                return Err(CodecError::LengthMismatch {
                    codec: codec.name(),
                    expected: dst.len(),
                });
            }
            dst.copy_from_slice(src);
            Ok(())
        }
        Codec::Zlib => read_exactly(codec, flate2::read::ZlibDecoder::new(src), dst),
        Codec::Gzip => read_exactly(codec, flate2::read::GzDecoder::new(src), dst),
        Codec::Bz2 => read_exactly(codec, bzip2::read::BzDecoder::new(src), dst),
        Codec::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|err| codec.corrupt(err))?;
            read_exactly(
                codec,
                liblzma::read::XzDecoder::new_stream(src, stream),
                dst,
            )
        }
        Codec::Xz => read_exactly(codec, liblzma::read::XzDecoder::new(src), dst),
        Codec::Lz4 => {
            let n = lz4_flex::block::decompress_into(src, dst).map_err(|err| codec.corrupt(err))?;
            if n == dst.len() {
                Ok(())
            } else {
                Err(CodecError::LengthMismatch {
                    codec: codec.name(),
                    expected: dst.len(),
                })
            }
        }
        Codec::Zstd => {
            // A frame that announces a larger content size than `dst` fails inside zstd
            // ("destination buffer too small"): the decoder never writes past the slice.
            let n = zstd_decompress_into(src, dst).map_err(|err| codec.corrupt(err))?;
            if n == dst.len() {
                Ok(())
            } else {
                Err(CodecError::LengthMismatch {
                    codec: codec.name(),
                    expected: dst.len(),
                })
            }
        }
    }
}

/// Compress consecutive `chunk`-sized pieces of `src` on the thread pool; results in order.
pub fn compress_chunks(
    codec: Codec,
    level: i32,
    src: &[u8],
    chunk: usize,
) -> Result<Vec<Vec<u8>>, CodecError> {
    let chunk = chunk.max(1);
    let work = || {
        src.par_chunks(chunk)
            .map(|piece| compress_chunk(codec, level, piece))
            .collect::<Result<Vec<_>, _>>()
    };
    match crate::threads::pool() {
        Some(pool) => pool.install(work),
        None => src
            .chunks(chunk)
            .map(|piece| compress_chunk(codec, level, piece))
            .collect(),
    }
}

/// Decompress `stored[i]` into the i-th `chunk`-sized piece of `dst` on the thread pool.
/// The number of stored chunks must equal the number of pieces of `dst`.
pub fn decompress_chunks(
    codec: Codec,
    stored: &[Vec<u8>],
    dst: &mut [u8],
    chunk: usize,
) -> Result<(), CodecError> {
    let chunk = chunk.max(1);
    if dst.len().div_ceil(chunk) != stored.len() {
        return Err(CodecError::LengthMismatch {
            codec: codec.name(),
            expected: dst.len(),
        });
    }
    let work = || {
        dst.par_chunks_mut(chunk)
            .zip(stored.par_iter())
            .try_for_each(|(out, src)| decompress_chunk(codec, src, out))
    };
    match crate::threads::pool() {
        Some(pool) => pool.install(work),
        None => dst
            .chunks_mut(chunk)
            .zip(stored.iter())
            .try_for_each(|(out, src)| decompress_chunk(codec, src, out)),
    }
}

/// Decompress a whole stream of `codec` (as written by Python's file compressors and by
/// joblib: zlib stream, gzip/bz2/xz multi-member files, LZMA-alone, LZ4 frame, zstd frames).
pub fn decompress_stream(codec: Codec, src: &[u8]) -> Result<Vec<u8>, CodecError> {
    decompress_stream_checked(codec, src, |_| true)
}

/// Bytes looked at by the `accept` test of [`decompress_stream_checked`].
pub const STREAM_PREFIX: usize = 16;

/// [`decompress_stream`] that decodes incrementally: the first [`STREAM_PREFIX`] decoded bytes
/// (fewer if the stream is shorter) are given to `accept` before anything else is decoded
/// (a stream that does not hold a file `load` reads is refused at once,
/// [`CodecError::Unrecognized`]), and the output may not exceed `src.len() * max_ratio(codec)`
/// bytes ([`CodecError::TooLarge`]), so a lying or hostile stream costs no more memory than
/// its codec can honestly produce.
pub fn decompress_stream_checked(
    codec: Codec,
    src: &[u8],
    accept: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, CodecError> {
    let mut out = VecSink::default();
    decompress_stream_into(codec, src, accept, &mut out)?;
    Ok(out.into_vec())
}

/// Where [`decompress_stream_into`] writes: a buffer that grows on request. The decoder
/// writes into [`OutputSink::spare`] and then commits what it wrote, so the decoded bytes are
/// written once, in place (no intermediate piece, no copy after decoding).
pub trait OutputSink {
    /// Bytes committed so far.
    fn len(&self) -> usize;
    /// Whether nothing was committed yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The committed bytes.
    fn committed(&self) -> &[u8];
    /// Writable room after the committed bytes, at least `min` bytes (more when cheap).
    fn spare(&mut self, min: usize) -> io::Result<&mut [u8]>;
    /// Mark `n` bytes of the last [`OutputSink::spare`] as written.
    fn commit(&mut self, n: usize);
}

/// An [`OutputSink`] over a `Vec<u8>`, grown geometrically (each byte zero-filled once).
#[derive(Debug, Default)]
pub struct VecSink {
    buf: Vec<u8>,
    len: usize,
}

impl VecSink {
    /// The committed bytes.
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.truncate(self.len);
        self.buf
    }
}

impl OutputSink for VecSink {
    fn len(&self) -> usize {
        self.len
    }
    fn committed(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn spare(&mut self, min: usize) -> io::Result<&mut [u8]> {
        if self.buf.len() - self.len < min {
            let grow = min.max(self.buf.len() / 2).max(1 << 16);
            self.buf.try_reserve(grow).map_err(io::Error::other)?;
            self.buf.resize(self.buf.len() + grow, 0);
        }
        Ok(&mut self.buf[self.len..])
    }
    fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }
}

/// [`decompress_stream_checked`] into any [`OutputSink`] (e.g. a Python `bytearray`, so the
/// decoded stream is never copied again). The same checks: the first [`STREAM_PREFIX`] bytes
/// are given to `accept` before more is decoded, and the output is capped at
/// `src.len() * max_ratio(codec)` bytes.
pub fn decompress_stream_into(
    codec: Codec,
    src: &[u8],
    accept: impl Fn(&[u8]) -> bool,
    out: &mut dyn OutputSink,
) -> Result<(), CodecError> {
    // In-memory input: the `bufread` decoders read `src` directly (no intermediate buffer).
    let mut reader: Box<dyn Read + '_> = match codec {
        Codec::None => Box::new(src),
        Codec::Zlib => Box::new(flate2::bufread::ZlibDecoder::new(src)),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(src)),
        Codec::Bz2 => Box::new(bzip2::read::MultiBzDecoder::new(src)),
        Codec::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|err| codec.corrupt(err))?;
            Box::new(liblzma::read::XzDecoder::new_stream(src, stream))
        }
        Codec::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(src)),
        Codec::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(src)),
        Codec::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(src).map_err(|e| codec.corrupt(e))?)
        }
    };
    let cap = (src.len() as u64).saturating_mul(max_ratio(codec));
    let mut checked = false;
    loop {
        let len = out.len();
        let room = if checked {
            // Never ask for room beyond the cap (+1 byte, to detect going over it).
            let left = cap.saturating_sub(len as u64).saturating_add(1);
            usize::try_from(left).unwrap_or(usize::MAX).min(1 << 22)
        } else {
            STREAM_PREFIX - len
        };
        let spare = out.spare(room).map_err(|e| codec.corrupt(e))?;
        let want = spare.len().min(room);
        let n = match reader.read(&mut spare[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(codec.corrupt(e)),
        };
        if len as u64 + n as u64 > cap {
            return Err(CodecError::TooLarge {
                codec: codec.name(),
                stored: src.len() as u64,
                cap,
            });
        }
        out.commit(n);
        if !checked && (n == 0 || out.len() >= STREAM_PREFIX) {
            if !accept(out.committed()) {
                return Err(CodecError::Unrecognized {
                    codec: codec.name(),
                    start: out.committed().iter().take(8).copied().collect(),
                });
            }
            checked = true;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Compress a whole buffer as one stream of `codec` (the inverse of [`decompress_stream`]):
/// the whole-file formats of joblib's compressors, written by [`StreamEncoder`]; zstd as one
/// frame.
pub fn compress_stream(codec: Codec, level: i32, src: &[u8]) -> Result<Vec<u8>, CodecError> {
    match codec {
        Codec::None | Codec::Zstd => compress_chunk(codec, level, src),
        _ => {
            let mut out = Vec::new();
            let mut enc = StreamEncoder::new(codec, level)?;
            enc.write(src, &mut out)?;
            enc.finish(&mut out)?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Codec; 8] = Codec::ALL;

    #[test]
    fn every_whole_file_stream_starts_with_its_codecs_magic() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for codec in ALL.into_iter().skip(1) {
            let level = codec.default_level().max(codec.level_range().0);
            let stream = compress_stream(codec, level, &data).expect("compress");
            assert!(
                stream.starts_with(codec.stream_magic()),
                "{}: {:02x?}",
                codec.name(),
                &stream[..8]
            );
            assert!(!codec.stream_magic().is_empty() && codec.extension().starts_with('.'));
        }
        assert!(Codec::None.stream_magic().is_empty() && Codec::None.extension().is_empty());
    }

    #[test]
    fn joblib_levels_map_into_each_codecs_range() {
        for codec in ALL {
            let (min, max) = codec.level_range();
            for level in 1..=9 {
                let mapped = codec.from_joblib_level(level);
                assert!(
                    (min..=max).contains(&mapped),
                    "{codec:?} {level} -> {mapped}"
                );
            }
        }
        let zstd: Vec<i32> = (1..=9).map(|l| Codec::Zstd.from_joblib_level(l)).collect();
        assert_eq!(zstd, [1, 2, 3, 5, 7, 9, 12, 15, 19]);
        assert_eq!(Codec::Zlib.from_joblib_level(7), 7);
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 7919) % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    /// A sink that hands out at most 1,000 bytes of room at a time and counts its calls.
    #[derive(Default)]
    struct SmallSteps {
        data: Vec<u8>,
        room: Vec<u8>,
        calls: usize,
    }

    impl OutputSink for SmallSteps {
        fn len(&self) -> usize {
            self.data.len()
        }
        fn committed(&self) -> &[u8] {
            &self.data
        }
        fn spare(&mut self, min: usize) -> io::Result<&mut [u8]> {
            self.calls += 1;
            self.room = vec![0; min.min(1000)];
            Ok(&mut self.room)
        }
        fn commit(&mut self, n: usize) {
            self.data.extend_from_slice(&self.room[..n]);
        }
    }

    #[test]
    fn streams_decode_into_any_sink() {
        let mut data = b"\x80\x04".to_vec();
        data.extend(sample(300_000));
        for codec in ALL {
            let stored = compress_stream(codec, 3, &data).unwrap();
            let mut vec = VecSink::default();
            decompress_stream_into(codec, &stored, |_| true, &mut vec).unwrap();
            assert_eq!(vec.into_vec(), data, "{codec:?}");
            let mut small = SmallSteps::default();
            decompress_stream_into(codec, &stored, |_| true, &mut small).unwrap();
            assert_eq!(small.data, data, "{codec:?}");
            assert!(small.calls > 300, "{codec:?}");
        }
    }

    #[test]
    fn a_refused_start_stops_decoding_at_the_prefix() {
        let zeros = vec![0u8; 1 << 24];
        for codec in [Codec::Zlib, Codec::Gzip, Codec::Zstd, Codec::Lz4] {
            let stored = compress_stream(codec, 3, &zeros).unwrap();
            let mut small = SmallSteps::default();
            let err =
                decompress_stream_into(codec, &stored, |s| s.first() == Some(&0x80), &mut small);
            assert!(
                matches!(err, Err(CodecError::Unrecognized { .. })),
                "{codec:?}"
            );
            assert_eq!(small.data.len(), STREAM_PREFIX, "{codec:?}");
        }
    }

    #[test]
    fn ids_and_names_round_trip() {
        for c in ALL {
            assert_eq!(Codec::from_id(c.id()).unwrap(), c);
            assert_eq!(Codec::from_name(c.name()).unwrap(), c);
        }
        assert!(matches!(Codec::from_id(8), Err(CodecError::UnknownId(8))));
        let err = Codec::from_name("snappy").unwrap_err().to_string();
        assert!(err.contains("snappy") && err.contains("zstd"), "{err}");
    }

    #[test]
    fn every_codec_round_trips_a_chunk() {
        let data = sample(300_000);
        for c in ALL {
            let stored = compress_chunk(c, c.default_level(), &data).unwrap();
            if c != Codec::None {
                assert!(stored.len() < data.len(), "{c:?} did not compress");
            }
            let mut out = vec![0u8; data.len()];
            decompress_chunk(c, &stored, &mut out).unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }

    #[test]
    fn wrong_announced_length_is_an_error_for_every_codec() {
        let data = sample(10_000);
        for c in ALL {
            let stored = compress_chunk(c, c.default_level(), &data).unwrap();
            let mut short = vec![0u8; data.len() - 1];
            assert!(
                decompress_chunk(c, &stored, &mut short).is_err(),
                "{c:?} short"
            );
            let mut long = vec![0u8; data.len() + 1];
            assert!(
                decompress_chunk(c, &stored, &mut long).is_err(),
                "{c:?} long"
            );
        }
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 31 + 7) as u8).collect();
        for c in ALL.into_iter().skip(1) {
            let mut out = vec![0u8; 4096];
            assert!(decompress_chunk(c, &garbage, &mut out).is_err(), "{c:?}");
        }
    }

    #[test]
    fn parallel_chunks_round_trip_and_keep_order() {
        let data = sample(1_000_003);
        let stored = compress_chunks(Codec::Zstd, 3, &data, 65_536).unwrap();
        assert_eq!(stored.len(), data.len().div_ceil(65_536));
        let mut out = vec![0u8; data.len()];
        decompress_chunks(Codec::Zstd, &stored, &mut out, 65_536).unwrap();
        assert_eq!(out, data);
        let mut wrong = vec![0u8; data.len() + 65_536];
        assert!(decompress_chunks(Codec::Zstd, &stored, &mut wrong, 65_536).is_err());
    }

    /// `n` bytes of xorshift noise (incompressible).
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn streams_round_trip() {
        let data = sample(200_000);
        for c in ALL {
            let stored = compress_stream(c, c.default_level(), &data).unwrap();
            assert_eq!(decompress_stream(c, &stored).unwrap(), data, "{c:?}");
        }
    }

    #[test]
    fn zstd_uses_level_one_on_incompressible_chunks_only() {
        let noise = noise(4 * PROBE);
        assert_eq!(zstd_effective_level(&noise, 3), 1);
        assert_eq!(zstd_effective_level(&sample(4 * PROBE), 3), 3);
        assert_eq!(zstd_effective_level(&noise[..PROBE], 3), 3);
        let stored = compress_chunk(Codec::Zstd, 9, &noise).unwrap();
        let mut out = vec![0u8; noise.len()];
        decompress_chunk(Codec::Zstd, &stored, &mut out).unwrap();
        assert_eq!(out, noise);
    }

    #[test]
    fn lz4_hc_skips_incompressible_chunks() {
        let noise = noise(4 * PROBE);
        let fast = lz4_flex::block::compress(&noise);
        assert_eq!(compress_chunk(Codec::Lz4, 9, &noise).unwrap(), fast);
        let data = sample(4 * PROBE);
        assert!(compress_chunk(Codec::Lz4, 9, &data).unwrap().len() < data.len() / 2);
    }

    #[test]
    fn levels_are_validated() {
        assert!(Codec::Zlib.check_level(10).is_err());
        assert!(Codec::Zstd.check_level(19).is_ok());
        let err = compress_chunk(Codec::Bz2, 0, b"x").unwrap_err().to_string();
        assert!(err.contains("bz2") && err.contains('0'), "{err}");
    }
}
