//! Whole-file compressed streams in the formats that joblib's file compressors read, written
//! on all cores where the format allows it.
//!
//! ```text
//!  write(bytes) ──► pending chunk ──full chunks, one batch at a time──► rayon ──► out (in order)
//!  finish()     ──► last chunk + trailer (end block, checksum, length)
//! ```
//!
//! | codec | stream written | read by |
//! | --- | --- | --- |
//! | zlib | one RFC 1950 stream: each chunk deflated alone and sync-flushed (as pigz), an empty final block, adler32 | `zlib.decompressobj` |
//! | gzip | one RFC 1952 member, built the same way, crc32 and length | `gzip`, joblib's `BinaryGzipFile` |
//! | bz2 | one bzip2 stream per chunk, concatenated | `bz2.BZ2File` (multi-stream) |
//! | xz | one `.xz` stream per chunk, concatenated | `lzma.LZMAFile` (multi-stream) |
//! | lzma | one "LZMA alone" stream, encoded sequentially (the format has no concatenation that every reader accepts) | `lzma.LZMAFile(format=FORMAT_ALONE)` |
//! | lz4 | one LZ4 frame of independent 4 MiB blocks, content checksum | `lz4.frame` |
//!
//! Deflate chunks compressed alone lose the 32 KiB window across a chunk boundary only: a few
//! bytes per 4 MiB. The whole-stream checksums are computed sequentially as data arrives.

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;
use xxhash_rust::xxh32::{Xxh32, xxh32};

use super::{CHUNK, Codec, CodecError, LZ4_FRAME_MAGIC, compress_chunk, lz4_block};

/// Raw bytes per independent `.xz` stream: larger than [`CHUNK`] so that xz's dictionary
/// (4-8 MiB at the usual presets) still finds long-range matches.
const XZ_CHUNK: usize = 16 << 20;
/// LZ4 frame: magic number ([`LZ4_FRAME_MAGIC`]), FLG (version 01, independent blocks,
/// content checksum), BD (4 MiB maximum block size).
const LZ4_FLG: u8 = 0b0110_0100;
const LZ4_BD: u8 = 0b0111_0000;
/// Set in an LZ4 frame block size: the block is stored uncompressed.
const LZ4_UNCOMPRESSED: u32 = 1 << 31;
/// An empty final deflate block (fixed Huffman, end-of-block code only).
const DEFLATE_END: [u8; 2] = [0x03, 0x00];

/// Checksum of the whole raw stream, updated as data arrives.
enum Check {
    None,
    Adler(u32),
    Crc(u32),
    Xxh32(Box<Xxh32>),
}

/// Encoder of one whole-file stream of a codec (see the module's table). Data is given with
/// [`write`](Self::write) in pieces of any size; compressed bytes are appended to the caller's
/// vector as whole chunks complete, and [`finish`](Self::finish) ends the stream.
pub struct StreamEncoder {
    codec: Codec,
    level: i32,
    chunk: usize,
    pending: Vec<u8>,
    started: bool,
    raw_len: u64,
    check: Check,
    lzma: Option<liblzma::stream::Stream>,
}

impl std::fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEncoder")
            .field("codec", &self.codec)
            .field("level", &self.level)
            .field("raw_len", &self.raw_len)
            .finish_non_exhaustive()
    }
}

impl StreamEncoder {
    /// An encoder of `codec` at `level` (checked against the codec's range). `Codec::Zstd`
    /// and `Codec::None` have no whole-file format here.
    pub fn new(codec: Codec, level: i32) -> Result<Self, CodecError> {
        let level = codec.check_level(level)?;
        let check = match codec {
            Codec::Zlib => Check::Adler(1),
            Codec::Gzip => Check::Crc(0),
            Codec::Lz4 => Check::Xxh32(Box::new(Xxh32::new(0))),
            Codec::Bz2 | Codec::Xz | Codec::Lzma => Check::None,
            Codec::None | Codec::Zstd => {
                return Err(CodecError::Encode {
                    codec: codec.name(),
                    detail: "no whole-file stream format for this codec".into(),
                });
            }
        };
        let lzma = if codec == Codec::Lzma {
            let opts = liblzma::stream::LzmaOptions::new_preset(u32::try_from(level).unwrap_or(0))
                .map_err(|err| codec.encode_err(err))?;
            Some(
                liblzma::stream::Stream::new_lzma_encoder(&opts)
                    .map_err(|err| codec.encode_err(err))?,
            )
        } else {
            None
        };
        Ok(Self {
            codec,
            level,
            chunk: if codec == Codec::Xz { XZ_CHUNK } else { CHUNK },
            pending: Vec::new(),
            started: false,
            raw_len: 0,
            check,
            lzma,
        })
    }

    /// As [`new`](Self::new) with another chunk size (tests: many chunks from little data).
    #[cfg(test)]
    fn with_chunk(codec: Codec, level: i32, chunk: usize) -> Result<Self, CodecError> {
        let mut enc = Self::new(codec, level)?;
        enc.chunk = chunk.clamp(1, CHUNK);
        Ok(enc)
    }

    /// Raw bytes given so far.
    pub fn raw_len(&self) -> u64 {
        self.raw_len
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        match self.codec {
            Codec::Zlib => {
                // CMF: deflate, 32 KiB window; FLG: the level class, FCHECK making it % 31 == 0.
                let flevel: u8 = match self.level {
                    0 | 1 => 0,
                    2..=5 => 1,
                    6 => 2,
                    _ => 3,
                };
                let cmf = 0x78u8;
                let mut flg = flevel << 6;
                let rem = (u16::from(cmf) * 256 + u16::from(flg)) % 31;
                if rem != 0 {
                    flg += (31 - rem) as u8;
                }
                out.extend_from_slice(&[cmf, flg]);
            }
            Codec::Gzip => {
                // Magic, deflate, no flags, no mtime, no extra flags, OS unknown.
                out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
            }
            Codec::Lz4 => {
                out.extend_from_slice(&LZ4_FRAME_MAGIC);
                let descriptor = [LZ4_FLG, LZ4_BD];
                out.extend_from_slice(&descriptor);
                out.push((xxh32(&descriptor, 0) >> 8) as u8);
            }
            _ => {}
        }
    }

    /// Add `data` to the stream; whole chunks are compressed (in parallel) into `out`.
    pub fn write(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.start(out);
        self.raw_len += data.len() as u64;
        match &mut self.check {
            Check::None => {}
            Check::Adler(a) => *a = zlib_rs::adler32::adler32(*a, data),
            Check::Crc(c) => *c = zlib_rs::crc32::crc32(*c, data),
            Check::Xxh32(h) => h.update(data),
        }
        if self.codec == Codec::Lzma {
            return self.lzma_run(data, out, liblzma::stream::Action::Run);
        }
        if !self.pending.is_empty() {
            let take = (self.chunk - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < self.chunk {
                return Ok(());
            }
            let full = std::mem::take(&mut self.pending);
            self.emit(&full, out)?;
        }
        let whole = data.len() / self.chunk * self.chunk;
        if whole > 0 {
            self.emit(&data[..whole], out)?;
        }
        self.pending.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// End the stream: the last partial chunk and the codec's trailer go into `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.start(out);
        if self.codec == Codec::Lzma {
            return self.lzma_run(&[], out, liblzma::stream::Action::Finish);
        }
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() || (self.raw_len == 0 && matches!(self.codec, Codec::Bz2 | Codec::Xz)) {
            // (An empty bz2 or xz file would not be a stream at all: write one empty stream.)
            self.emit(&rest, out)?;
        }
        match std::mem::replace(&mut self.check, Check::None) {
            Check::Adler(a) => {
                out.extend_from_slice(&DEFLATE_END);
                out.extend_from_slice(&a.to_be_bytes());
            }
            Check::Crc(c) => {
                out.extend_from_slice(&DEFLATE_END);
                out.extend_from_slice(&c.to_le_bytes());
                // ISIZE: the raw length modulo 2^32, by definition of the format.
                out.extend_from_slice(&((self.raw_len & 0xffff_ffff) as u32).to_le_bytes());
            }
            Check::Xxh32(h) => {
                out.extend_from_slice(&0u32.to_le_bytes()); // end mark
                out.extend_from_slice(&h.digest().to_le_bytes());
            }
            Check::None => {}
        }
        Ok(())
    }

    /// Compress `data` (whole chunks, except at the end of the stream) into `out`, chunks in
    /// parallel on the thread pool, results in order.
    fn emit(&self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let (codec, level, chunk) = (self.codec, self.level, self.chunk);
        let one = |piece: &[u8]| encode_piece(codec, level, piece);
        let pieces: Vec<Vec<u8>> = if data.len() <= chunk {
            vec![one(data)?]
        } else {
            let work = || {
                data.par_chunks(chunk)
                    .map(one)
                    .collect::<Result<Vec<_>, _>>()
            };
            match crate::threads::pool() {
                Some(pool) => pool.install(work)?,
                None => data.chunks(chunk).map(one).collect::<Result<Vec<_>, _>>()?,
            }
        };
        for p in pieces {
            out.extend_from_slice(&p);
        }
        Ok(())
    }

    fn lzma_run(
        &mut self,
        mut data: &[u8],
        out: &mut Vec<u8>,
        action: liblzma::stream::Action,
    ) -> Result<(), CodecError> {
        let codec = self.codec;
        let Some(stream) = self.lzma.as_mut() else {
            return Err(codec.encode_err("lzma encoder already finished"));
        };
        loop {
            if out.capacity() - out.len() < (64 << 10) {
                out.reserve(1 << 20);
            }
            let before = stream.total_in();
            let status = stream
                .process_vec(data, out, action)
                .map_err(|err| codec.encode_err(err))?;
            let used = usize::try_from(stream.total_in() - before).unwrap_or(data.len());
            data = &data[used.min(data.len())..];
            match action {
                liblzma::stream::Action::Finish => {
                    if status == liblzma::stream::Status::StreamEnd {
                        return Ok(());
                    }
                }
                _ => {
                    if data.is_empty() && out.len() < out.capacity() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// One chunk of a parallel stream, as it appears in the stream.
fn encode_piece(codec: Codec, level: i32, piece: &[u8]) -> Result<Vec<u8>, CodecError> {
    match codec {
        Codec::Zlib | Codec::Gzip => deflate_sync(codec, level, piece),
        Codec::Lz4 => {
            let block = lz4_block(level, piece)?;
            let mut out = Vec::with_capacity(block.len().min(piece.len()) + 4);
            // Block sizes are at most CHUNK (4 MiB), far below 2^31.
            if block.len() < piece.len() {
                out.extend_from_slice(&(block.len() as u32).to_le_bytes());
                out.extend_from_slice(&block);
            } else {
                out.extend_from_slice(&(piece.len() as u32 | LZ4_UNCOMPRESSED).to_le_bytes());
                out.extend_from_slice(piece);
            }
            Ok(out)
        }
        _ => compress_chunk(codec, level, piece),
    }
}

/// Raw deflate of `piece` ended by a sync flush (byte-aligned, not final), so that pieces
/// deflated independently concatenate into one valid deflate stream.
fn deflate_sync(codec: Codec, level: i32, piece: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut c = Compress::new(Compression::new(u32::try_from(level).unwrap_or(0)), false);
    let mut out = Vec::with_capacity(piece.len() / 2 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(piece.len());
        let status = c
            .compress_vec(
                &piece[consumed.min(piece.len())..],
                &mut out,
                FlushCompress::Sync,
            )
            .map_err(|err| codec.encode_err(err))?;
        let done = usize::try_from(c.total_in()).unwrap_or(0) == piece.len();
        if status == Status::BufError || (done && out.len() < out.capacity()) {
            // BufError: nothing left to do (all input taken and flushed).
            if done {
                return Ok(out);
            }
            return Err(codec.encode_err("deflate made no progress"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::codec::decompress_stream;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i / 8) as u32).to_le_bytes()[i % 4] ^ ((i % 251) as u8 / 64))
            .collect()
    }

    const STREAMED: [Codec; 6] = [
        Codec::Zlib,
        Codec::Gzip,
        Codec::Bz2,
        Codec::Lzma,
        Codec::Xz,
        Codec::Lz4,
    ];

    /// Chunk size of the tests: many chunks from little data.
    const TEST_CHUNK: usize = 64 << 10;

    fn encode(codec: Codec, level: i32, data: &[u8], piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = StreamEncoder::with_chunk(codec, level, TEST_CHUNK).unwrap();
        for p in data.chunks(piece.max(1)) {
            enc.write(p, &mut out).unwrap();
        }
        assert_eq!(enc.raw_len(), data.len() as u64);
        enc.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn every_stream_round_trips_whatever_the_write_sizes() {
        // Several chunks, a partial last one, writes smaller and larger than a chunk.
        let data = sample(5 * TEST_CHUNK + 12_345);
        for codec in STREAMED {
            for piece in [1000, TEST_CHUNK, 3 * TEST_CHUNK + 7] {
                let stored = encode(codec, 3, &data, piece);
                let back = decompress_stream(codec, &stored).unwrap();
                assert!(back == data, "{codec:?} piece {piece}");
            }
        }
    }

    #[test]
    fn empty_streams_are_valid() {
        for codec in STREAMED {
            let stored = encode(codec, 3, &[], 1);
            assert!(!stored.is_empty(), "{codec:?}");
            assert_eq!(decompress_stream(codec, &stored).unwrap(), Vec::<u8>::new());
        }
    }

    #[test]
    fn zlib_and_gzip_are_single_standard_streams() {
        let data = sample(3 * TEST_CHUNK + 999);
        let z = encode(Codec::Zlib, 6, &data, 1 << 16);
        assert_eq!((u16::from(z[0]) * 256 + u16::from(z[1])) % 31, 0);
        let mut back = Vec::new();
        flate2::read::ZlibDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
        let g = encode(Codec::Gzip, 1, &data, 1 << 16);
        let mut d = flate2::read::GzDecoder::new(&g[..]); // one member only
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert!(back == data);
    }

    #[test]
    fn damaged_checksums_are_detected() {
        let data = sample(100_000);
        for codec in [Codec::Zlib, Codec::Gzip, Codec::Lz4] {
            let mut stored = encode(codec, 3, &data, 4096);
            let n = stored.len();
            let at = if codec == Codec::Gzip { n - 5 } else { n - 1 };
            stored[at] ^= 1;
            assert!(decompress_stream(codec, &stored).is_err(), "{codec:?}");
        }
    }

    #[test]
    fn lz4_hc_levels_decode_with_the_block_reader_and_are_smaller() {
        let data = sample(CHUNK);
        let fast = compress_chunk(Codec::Lz4, 0, &data).unwrap();
        let hc = compress_chunk(Codec::Lz4, 3, &data).unwrap();
        let hc9 = compress_chunk(Codec::Lz4, 9, &data).unwrap();
        assert!(hc.len() < fast.len(), "{} vs {}", hc.len(), fast.len());
        assert!(hc9.len() <= hc.len());
        for stored in [fast, hc, hc9] {
            let mut out = vec![0u8; data.len()];
            crate::codec::decompress_chunk(Codec::Lz4, &stored, &mut out).unwrap();
            assert!(out == data);
            let mut out = vec![0u8; data.len()];
            lz4_flex::block::decompress_into(&stored, &mut out).unwrap();
            assert!(out == data);
        }
    }

    #[test]
    fn incompressible_lz4_blocks_are_stored() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let stored = encode(Codec::Lz4, 3, &noise, 1 << 16);
        let blocks = noise.len().div_ceil(TEST_CHUNK);
        assert_eq!(stored.len(), 7 + 4 * blocks + noise.len() + 4 + 4);
        assert_eq!(decompress_stream(Codec::Lz4, &stored).unwrap(), noise);
    }

    #[test]
    fn zstd_and_none_have_no_stream_format() {
        assert!(StreamEncoder::new(Codec::Zstd, 3).is_err());
        assert!(StreamEncoder::new(Codec::None, 0).is_err());
        assert!(StreamEncoder::new(Codec::Zlib, 10).is_err());
    }
}
