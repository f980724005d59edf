//! Feeds arbitrary bytes to the container reader: it must return (Ok or Err), never panic,
//! hang or allocate more than the sink allows. Valid inputs also round-trip through the writer.
#![no_main]

use std::io::Cursor;

use joblib_core::codec::Codec;
use joblib_core::format::{
    Dest, FormatError, FrameHead, Sink, WriteOptions, read_container, write_container,
};
use libfuzzer_sys::fuzz_target;

/// Caps each destination at 16 MiB, as a memory-limited caller would.
struct CapSink {
    frames: Vec<Vec<u8>>,
}

impl Sink for CapSink {
    fn frame(&mut self, head: &FrameHead) -> Result<Dest<'_>, FormatError> {
        if head.raw_len > 1 << 24 {
            return Err(FormatError::Sink("over the fuzzing cap".into()));
        }
        self.frames.push(vec![0u8; head.raw_len as usize]);
        match self.frames.last_mut() {
            Some(v) => Ok(Dest::Fill(v.as_mut_slice())),
            None => Err(FormatError::Sink("unreachable".into())),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut sink = CapSink { frames: Vec::new() };
    if read_container(&mut Cursor::new(data), &mut sink).is_ok() {
        // Whatever was accepted must survive a rewrite and re-read unchanged.
        let Some((pickle, buffers)) = sink.frames.split_last() else {
            return;
        };
        let refs: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        let opts = WriteOptions {
            codec: Codec::Lz4,
            level: 0,
            chunk: 4096,
            durable: false,
        };
        if write_container(&mut out, &refs, pickle, &opts).is_ok() {
            let mut again = CapSink { frames: Vec::new() };
            let ok = read_container(&mut Cursor::new(&out), &mut again).is_ok();
            assert!(ok && again.frames == sink.frames, "rewrite did not round-trip");
        }
    }
});
