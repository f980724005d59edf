use std::io::Cursor;

use super::*;
use crate::codec::Codec;

/// Collects frames into owned vectors; refuses anything above `cap` bytes, as a fuzzing or
/// test sink must (the Python sink allocates what a checked header announces).
#[derive(Debug)]
struct VecSink {
    cap: u64,
    frames: Vec<(FrameKind, Vec<u8>)>,
    skip_buffers: bool,
}

impl VecSink {
    fn new() -> Self {
        Self {
            cap: 1 << 27,
            frames: Vec::new(),
            skip_buffers: false,
        }
    }
}

impl Sink for VecSink {
    fn frame(&mut self, head: &FrameHead) -> Result<Dest<'_>, FormatError> {
        if head.raw_len > self.cap {
            return Err(FormatError::Sink(format!(
                "{} bytes is over the cap",
                head.raw_len
            )));
        }
        if self.skip_buffers && head.kind == FrameKind::Buffer && head.codec == Codec::None {
            self.frames.push((head.kind, Vec::new()));
            return Ok(Dest::Skip);
        }
        self.frames
            .push((head.kind, vec![0u8; head.raw_len as usize]));
        match self.frames.last_mut() {
            Some((_, v)) => Ok(Dest::Fill(v.as_mut_slice())),
            None => Err(FormatError::Sink("unreachable".into())),
        }
    }
}

fn encode(buffers: &[&[u8]], pickle: &[u8], codec: Codec, level: i32, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = WriteOptions {
        codec,
        level,
        chunk,
        durable: true,
    };
    let n = write_container(&mut out, buffers, pickle, &opts).unwrap();
    assert_eq!(n as usize, out.len());
    out
}

fn decode(bytes: &[u8]) -> Result<(Vec<FrameInfo>, VecSink), FormatError> {
    let mut sink = VecSink::new();
    let infos = read_container(&mut Cursor::new(bytes), &mut sink)?;
    Ok((infos, sink))
}

fn sample_buffers() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let a: Vec<u8> = (0..1000u32)
        .flat_map(|i| (i as f64).to_le_bytes())
        .collect();
    let b: Vec<u8> = b"hello out-of-band".to_vec();
    let p: Vec<u8> = b"\x80\x05fake pickle bytes\x2e".to_vec();
    (a, b, p)
}

#[test]
fn round_trip_every_codec() {
    let (a, b, p) = sample_buffers();
    for codec in Codec::ALL {
        let level = codec.default_level();
        let bytes = encode(&[&a, &b, &[]], &p, codec, level, 1000);
        assert_eq!(bytes.len() % BLOCK, 0);
        let (infos, sink) = decode(&bytes).unwrap();
        assert_eq!(infos.len(), 4);
        let got: Vec<&[u8]> = sink.frames.iter().map(|(_, v)| v.as_slice()).collect();
        assert_eq!(got, vec![&a[..], &b[..], &[][..], &p[..]], "{codec:?}");
        assert!(infos.iter().all(|f| f.verified && f.head.codec == codec));
        assert_eq!(infos[3].head.kind, FrameKind::Pickle);
    }
}

#[test]
fn uncompressed_payloads_are_64_byte_aligned_in_place() {
    let (a, b, p) = sample_buffers();
    let bytes = encode(&[&b, &a], &p, Codec::None, 0, 0);
    let (infos, _) = decode(&bytes).unwrap();
    for (info, data) in infos.iter().zip([&b[..], &a[..], &p[..]]) {
        let at = info.head.payload_offset as usize;
        assert_eq!(at % 64, 0);
        assert_eq!(&bytes[at..at + data.len()], data);
    }
}

#[test]
fn skip_reads_offsets_without_payloads() {
    let (a, _, p) = sample_buffers();
    let bytes = encode(&[&a], &p, Codec::None, 0, 0);
    let mut sink = VecSink::new();
    sink.skip_buffers = true;
    let infos = read_container(&mut Cursor::new(&bytes), &mut sink).unwrap();
    assert!(!infos[0].verified);
    assert!(infos[1].verified);
    assert_eq!(sink.frames[1].1, p);
}

/// Golden files pin the byte layout: the writer must reproduce them exactly and the reader
/// must read them. Regenerate only with a format version bump.
#[test]
fn golden_plain_file_is_stable() {
    let golden: &[u8] = include_bytes!("golden/v1_plain.jrs");
    let (a, b, p) = sample_buffers();
    let bytes = encode(&[&a, &b], &p, Codec::None, 0, 0);
    assert_eq!(&bytes[..], golden, "writer output changed: format break");
    // Hand-checked landmarks of docs/format.md.
    assert_eq!(&golden[0..8], b"\x89JRS\r\n\x1a\n");
    assert_eq!(&golden[8..12], &[1, 0, 0, 0]);
    assert_eq!(&golden[64..68], b"JRSF");
    assert_eq!(golden[68], 1); // buffer frame
    assert_eq!(golden[69], 0); // codec none
    assert_eq!(&golden[80..88], &8000u64.to_le_bytes());
    assert_eq!(&golden[128..136], &0f64.to_le_bytes());
    assert_eq!(&golden[128 + 8000..128 + 8000 + 4], b"JRSE");
    assert_eq!(&golden[golden.len() - 64..golden.len() - 56], b"JRSTAIL\0");
    let (_, sink) = decode(golden).unwrap();
    assert_eq!(sink.frames[2].1, p);
}

#[test]
fn golden_compressed_files_read() {
    let (a, b, p) = sample_buffers();
    for (golden, codec) in [
        (&include_bytes!("golden/v1_zlib.jrs")[..], Codec::Zlib),
        (&include_bytes!("golden/v1_zstd.jrs")[..], Codec::Zstd),
    ] {
        assert_eq!(golden[69], codec.id());
        let (_, sink) = decode(golden).unwrap();
        assert_eq!(sink.frames[0].1, a);
        assert_eq!(sink.frames[1].1, b);
        assert_eq!(sink.frames[2].1, p);
    }
}

/// Writes the golden files when `JRS_WRITE_GOLDEN=1` (run once per format version).
#[test]
fn write_golden_files_on_request() {
    if std::env::var_os("JRS_WRITE_GOLDEN").is_none() {
        return;
    }
    let (a, b, p) = sample_buffers();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/format/golden");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, codec, level) in [
        ("v1_plain.jrs", Codec::None, 0),
        ("v1_zlib.jrs", Codec::Zlib, 3),
        ("v1_zstd.jrs", Codec::Zstd, 3),
    ] {
        std::fs::write(dir.join(name), encode(&[&a, &b], &p, codec, level, 3000)).unwrap();
    }
}

#[test]
fn clear_errors_for_typical_damage() {
    let (a, b, p) = sample_buffers();
    let good = encode(&[&a, &b], &p, Codec::None, 0, 0);

    let err = decode(b"\x80\x04not ours").unwrap_err();
    assert!(
        matches!(err, FormatError::BadMagic | FormatError::Truncated { .. }),
        "{err}"
    );
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(decode(&bad).unwrap_err(), FormatError::BadMagic));

    let mut flipped = good.clone();
    flipped[128 + 100] ^= 0x10;
    let err = decode(&flipped).unwrap_err();
    assert!(
        matches!(err, FormatError::ChecksumMismatch { index: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("checksum mismatch"), "{err}");

    let err = decode(&good[..good.len() - 10]).unwrap_err();
    assert!(
        err.to_string().contains("truncated") || err.to_string().contains("damaged"),
        "{err}"
    );

    let mut version = good.clone();
    version[8] = 9;
    let err = decode(&version).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");

    // A frame length pointing past the end, with a valid header checksum.
    let mut long = good.clone();
    long[80..88].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let mut h = [0u8; BLOCK];
    h.copy_from_slice(&long[64..128]);
    seal(&mut h);
    long[64..128].copy_from_slice(&h);
    let err = decode(&long).unwrap_err();
    assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Property: any mutation of a valid file (flip, overwrite, truncate, insert, delete) is
/// either rejected with an error or, never, silently loaded with different content.
#[test]
fn mutated_files_never_load_wrong_data() {
    let (a, b, p) = sample_buffers();
    let originals = [
        (encode(&[&a, &b], &p, Codec::None, 0, 0), Codec::None),
        (encode(&[&a, &b], &p, Codec::Zstd, 3, 1500), Codec::Zstd),
        (encode(&[&a], &p, Codec::Lz4, 0, 700), Codec::Lz4),
    ];
    let want = [
        vec![a.clone(), b.clone(), p.clone()],
        vec![a.clone(), b.clone(), p.clone()],
        vec![a.clone(), p.clone()],
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut rejected = 0usize;
    let cases = 12_000;
    for case in 0..cases {
        let which = case % originals.len();
        let mut m = originals[which].0.clone();
        match rng.below(5) {
            0 => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(m.len());
                let v = rng.next() as u8;
                if m[i] == v {
                    m[i] = v.wrapping_add(1);
                } else {
                    m[i] = v;
                }
            }
            2 => {
                let n = rng.below(m.len());
                m.truncate(n);
            }
            3 => {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.next() as u8);
            }
            _ => {
                let i = rng.below(m.len());
                let n = 1 + rng.below(70.min(m.len() - i));
                m.drain(i..i + n);
            }
        }
        match decode(&m) {
            Err(_) => rejected += 1,
            Ok((_, sink)) => {
                let got: Vec<Vec<u8>> = sink.frames.into_iter().map(|(_, v)| v).collect();
                assert_eq!(
                    got, want[which],
                    "case {case}: mutation loaded different data"
                );
            }
        }
    }
    // Every mutation of these files changes a checksummed or checked byte.
    assert_eq!(rejected, cases, "some mutations were not detected");
}

#[test]
fn atomic_file_write_leaves_no_temp_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jrs");
    std::fs::write(&path, b"old content").unwrap();
    let (a, b, p) = sample_buffers();
    let opts = WriteOptions::default();
    write_file_atomic(&path, &[&a, &b], &p, &opts).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let mut f = std::fs::File::open(&path).unwrap();
    let mut sink = VecSink::new();
    read_container(&mut f, &mut sink).unwrap();
    assert_eq!(sink.frames[0].1, a);

    // A failing write (bad level) leaves the old file and no temporary behind.
    let bad = WriteOptions {
        codec: Codec::Zlib,
        level: 42,
        chunk: 100,
        durable: true,
    };
    assert!(write_file_atomic(&path, &[&a], &p, &bad).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let mut f = std::fs::File::open(&path).unwrap();
    assert!(read_container(&mut f, &mut VecSink::new()).is_ok());
}

#[test]
fn trailing_bytes_after_footer_in_a_file_are_rejected() {
    let (a, b, p) = sample_buffers();
    let mut bytes = encode(&[&a, &b], &p, Codec::None, 0, 0);
    bytes.extend_from_slice(b"junk");
    assert!(decode(&bytes).is_err());
}

#[test]
fn mutable_frames_skip_their_checksum_only() {
    let (a, b, p) = sample_buffers();
    let bytes = encode(&[&a, &b], &p, Codec::None, 0, 0);
    let (infos, _) = decode(&bytes).unwrap();
    let mut cur = Cursor::new(bytes.clone());
    let pairs: Vec<(u64, u64)> = infos[..1]
        .iter()
        .map(|f| (f.head.payload_offset, f.stored_len))
        .collect();
    mark_mutable(&mut cur, &pairs).unwrap();
    let mut marked = cur.into_inner();
    // Write "through the map" into buffer 0: still loads, unverified.
    let at = infos[0].head.payload_offset as usize;
    marked[at] ^= 0xFF;
    let (infos2, sink) = decode(&marked).unwrap();
    assert!(!infos2[0].verified && infos2[1].verified);
    assert_eq!(sink.frames[0].1[0], a[0] ^ 0xFF);
    // Buffer 1 is still protected.
    let at1 = infos[1].head.payload_offset as usize;
    marked[at1] ^= 1;
    assert!(matches!(
        decode(&marked).unwrap_err(),
        FormatError::ChecksumMismatch { index: 1, .. }
    ));
}

#[test]
fn payloads_larger_than_a_read_piece_round_trip_and_are_checked() {
    let big: Vec<u8> = (0..40u32 << 20).map(|i| (i % 251) as u8).collect();
    let p = b"pickle".to_vec();
    let bytes = encode(&[&big], &p, Codec::None, 0, 0);
    let (infos, sink) = decode(&bytes).unwrap();
    assert!(infos[0].verified);
    assert!(sink.frames[0].1 == big);
    let mut bad = bytes.clone();
    bad[128 + (35 << 20)] ^= 4;
    assert!(matches!(
        decode(&bad).unwrap_err(),
        FormatError::ChecksumMismatch { index: 0, .. }
    ));
    let mut short = bytes;
    short.truncate(128 + (20 << 20));
    assert!(matches!(
        decode(&short).unwrap_err(),
        FormatError::Truncated { .. }
    ));
}

/// A source that only implements `Read`: no seeking, no known length (a pipe).
struct Pipe(Cursor<Vec<u8>>);

impl std::io::Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Short reads, as pipes do.
        let n = buf.len().min(1000);
        self.0.read(&mut buf[..n])
    }
}

impl Source for Pipe {}

#[test]
fn non_seekable_sources_read_and_skip() {
    let (a, b, p) = sample_buffers();
    for codec in [Codec::None, Codec::Zstd] {
        let bytes = encode(&[&a, &b], &p, codec, codec.default_level(), 700);
        let mut sink = VecSink::new();
        read_container(&mut Pipe(Cursor::new(bytes.clone())), &mut sink).unwrap();
        assert_eq!(sink.frames[0].1, a);
        assert_eq!(sink.frames[2].1, p);
        let mut skipping = VecSink::new();
        skipping.skip_buffers = true;
        let infos = read_container(&mut Pipe(Cursor::new(bytes.clone())), &mut skipping).unwrap();
        assert_eq!(infos[0].verified, codec != Codec::None);
        let cut = bytes[..bytes.len() - 70].to_vec();
        assert!(read_container(&mut Pipe(Cursor::new(cut)), &mut VecSink::new()).is_err());
    }
}

#[test]
fn inspect_verifies_every_frame_of_every_codec() {
    let (a, b, p) = sample_buffers();
    for codec in [Codec::None, Codec::Zlib, Codec::Lz4, Codec::Zstd] {
        // 1000-byte chunks: `a` (8000 bytes) spans several batches of chunks.
        let chunk = if codec == Codec::None { 0 } else { 1000 };
        let bytes = encode(&[&a, &b, &[]], &p, codec, codec.default_level(), chunk);
        let found = inspect(&mut Cursor::new(&bytes)).unwrap();
        assert_eq!(found.version, (VERSION_MAJOR, VERSION_MINOR));
        assert_eq!(found.file_len, bytes.len() as u64);
        let (expected, _) = decode(&bytes).unwrap();
        assert_eq!(found.frames, expected, "{codec:?}");
        assert!(found.frames.iter().all(|f| f.verified));
        let raw: Vec<u64> = found.frames.iter().map(|f| f.head.raw_len).collect();
        assert_eq!(raw, vec![8000, b.len() as u64, 0, p.len() as u64]);
    }
}

#[test]
fn inspect_reads_files_and_reports_damage() {
    let (a, b, p) = sample_buffers();
    let bytes = encode(&[&a, &b], &p, Codec::None, 0, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.jrs");
    std::fs::write(&path, &bytes).unwrap();
    let found = inspect(&mut std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(found.file_len, bytes.len() as u64);

    let mut flipped = bytes.clone();
    let at = found.frames[0].head.payload_offset as usize + 100;
    flipped[at] ^= 1;
    assert!(matches!(
        inspect(&mut Cursor::new(&flipped)),
        Err(FormatError::ChecksumMismatch { index: 0, .. })
    ));
    let cut = &bytes[..bytes.len() - 100];
    assert!(matches!(
        inspect(&mut Cursor::new(cut)),
        Err(FormatError::Truncated { .. })
    ));
}

/// Rewrite the recorded checksum of `frame`'s payload (end record and index entry, with
/// their seals and the index frame's own checksum) so that only decoding can find damage.
fn reseal_payload(bytes: &mut [u8], frame: &FrameInfo, position: usize) {
    let start = frame.head.payload_offset as usize;
    let stored = frame.stored_len as usize;
    let sum = xxh3(&bytes[start..start + stored]);
    let end_at = start + stored + pad_len(stored as u64) as usize;
    set_end_checksum(bytes, end_at, sum);

    let footer_at = bytes.len() - BLOCK;
    let index_at = le_u64(bytes, footer_at + 8) as usize + BLOCK;
    let entries = le_u64(bytes, footer_at + 16) as usize;
    let entry = index_at + position * INDEX_ENTRY;
    bytes[entry + 32..entry + 40].copy_from_slice(&sum.to_le_bytes());
    let index_len = entries * INDEX_ENTRY;
    let index_sum = xxh3(&bytes[index_at..index_at + index_len]);
    let index_end = index_at + index_len + pad_len(index_len as u64) as usize;
    set_end_checksum(bytes, index_end, index_sum);
}

/// Write `sum` into the end record at `at` and seal it again.
fn set_end_checksum(bytes: &mut [u8], at: usize, sum: u64) {
    let mut end = [0u8; BLOCK];
    end.copy_from_slice(&bytes[at..at + BLOCK]);
    end[16..24].copy_from_slice(&sum.to_le_bytes());
    seal(&mut end);
    bytes[at..at + BLOCK].copy_from_slice(&end);
}

#[test]
fn inspect_decodes_compressed_chunks() {
    let (a, _, p) = sample_buffers();
    let bytes = encode(&[&a], &p, Codec::Zlib, 6, 1000);
    let (infos, _) = decode(&bytes).unwrap();
    let mut bad = bytes.clone();
    // Inside the first chunk's zlib stream (after its 4-byte length and 2-byte zlib header).
    let at = infos[0].head.payload_offset as usize + 4 + 10;
    bad[at] ^= 0x55;
    reseal_payload(&mut bad, &infos[0], 0);
    // Checksums now agree: skipping the payload finds nothing wrong...
    struct SkipAll;
    impl Sink for SkipAll {
        fn frame(&mut self, _: &FrameHead) -> Result<Dest<'_>, FormatError> {
            Ok(Dest::Skip)
        }
    }
    assert!(read_container(&mut Cursor::new(&bad), &mut SkipAll).is_ok());
    // ...while inspecting decodes the chunk and reports the damage.
    assert!(matches!(
        inspect(&mut Cursor::new(&bad)),
        Err(FormatError::Codec { index: 0, .. })
    ));
}

/// Rewrite the `raw_len` of the frame whose header is at `at`, and seal the header again: a
/// consistent lie that only the length checks can refuse.
fn lie_about_raw_len(bytes: &mut [u8], at: usize, raw_len: u64) {
    let mut head = [0u8; BLOCK];
    head.copy_from_slice(&bytes[at..at + BLOCK]);
    head[16..24].copy_from_slice(&raw_len.to_le_bytes());
    seal(&mut head);
    bytes[at..at + BLOCK].copy_from_slice(&head);
}

/// Fails the test if a frame reaches the sink: lengths must be refused before allocating.
struct NoAlloc;

impl Sink for NoAlloc {
    fn frame(&mut self, head: &FrameHead) -> Result<Dest<'_>, FormatError> {
        panic!("the sink was asked for {} bytes", head.raw_len);
    }
}

#[test]
fn lying_raw_lens_are_refused_before_allocating() {
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    for codec in Codec::ALL {
        let bytes = encode(
            &[&data],
            b"\x80\x05N.",
            codec,
            codec.default_level(),
            1 << 16,
        );
        for lie in [100u64 << 30, 1 << 63, u64::MAX, 1 << 48] {
            let mut bad = bytes.clone();
            lie_about_raw_len(&mut bad, BLOCK, lie);
            let err = read_container(&mut Cursor::new(&bad), &mut NoAlloc).unwrap_err();
            assert!(
                matches!(
                    err,
                    FormatError::Damaged { .. } | FormatError::Truncated { .. }
                ),
                "{codec:?} {lie}: {err}"
            );
            // Files too.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("lie.jrs");
            std::fs::write(&path, &bad).unwrap();
            let mut file = std::fs::File::open(&path).unwrap();
            assert!(read_container(&mut file, &mut NoAlloc).is_err());
        }
    }
}

#[test]
fn chunks_claiming_more_than_their_codec_ratio_are_damaged() {
    // A frame of zeros compresses well, but each chunk record stays within its codec's
    // ratio; claiming a bigger last chunk than its stored bytes can hold is damage.
    let zeros = vec![0u8; 1 << 20];
    for codec in [Codec::Zlib, Codec::Lz4, Codec::Zstd] {
        let bytes = encode(
            &[&zeros],
            b"\x80\x05N.",
            codec,
            codec.default_level(),
            1 << 20,
        );
        assert!(decode(&bytes).is_ok(), "{codec:?}");
        let mut bad = bytes.clone();
        // One chunk of 64 MiB announced: beyond what the stored chunk can hold.
        let mut head = [0u8; BLOCK];
        head.copy_from_slice(&bad[BLOCK..2 * BLOCK]);
        head[12..16].copy_from_slice(&(64u32 << 20).to_le_bytes());
        head[16..24].copy_from_slice(&(64u64 << 20).to_le_bytes());
        seal(&mut head);
        bad[BLOCK..2 * BLOCK].copy_from_slice(&head);
        let mut sink = VecSink::new();
        let err = read_container(&mut Cursor::new(&bad), &mut sink).unwrap_err();
        assert!(err.to_string().contains("raw"), "{codec:?}: {err}");
    }
}

/// A stream that cannot seek nor read ahead, but knows how many bytes it holds at most (a
/// Python file object over a regular file).
struct BoundedStream {
    inner: Cursor<Vec<u8>>,
}

impl std::io::Read for BoundedStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Source for BoundedStream {
    fn bound(&mut self) -> Option<u64> {
        Some(self.inner.get_ref().len() as u64 - self.inner.position())
    }
}

#[test]
fn streams_with_a_known_bound_refuse_lying_lengths_before_allocating() {
    let data: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    for codec in [Codec::None, Codec::Zstd, Codec::Lz4] {
        let bytes = encode(
            &[&data],
            b"\x80\x05N.",
            codec,
            codec.default_level(),
            1 << 16,
        );
        let mut ok = BoundedStream {
            inner: Cursor::new(bytes.clone()),
        };
        assert!(
            read_container(&mut ok, &mut VecSink::new()).is_ok(),
            "{codec:?}"
        );
        let mut bad = bytes.clone();
        lie_about_raw_len(&mut bad, BLOCK, 100 << 30);
        let mut stream = BoundedStream {
            inner: Cursor::new(bad),
        };
        let err = read_container(&mut stream, &mut NoAlloc).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Damaged { .. } | FormatError::Truncated { .. }
            ),
            "{codec:?}: {err}"
        );
    }
}
