//! Feeds arbitrary bytes to the pickle opcode reader: every call returns an opcode, the end
//! or an error, never panics, and the position only moves forward within the input.
#![no_main]

use joblib_core::pickle::OpReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = OpReader::new(data, 0);
    let mut last = 0;
    while let Ok(Some(_op)) = reader.next_op() {
        let pos = reader.position();
        assert!(pos > last && pos <= data.len());
        last = pos;
    }
});
