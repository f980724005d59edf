use std::borrow::Cow;

use super::*;

/// `pickle.dumps([1, -2, 3.5, 'é', b'x', (None, True), {'k': 2**70}, frozenset()], p)` as
/// CPython 3.11 writes it: golden bytes for protocols 0, 2 and 5.
const P0: &[u8] = b"(lp0\nI1\naI-2\naF3.5\naV\xe9\np1\nac_codecs\nencode\np2\n(Vx\np3\nVlatin1\np4\ntp5\nRp6\na(NI01\ntp7\na(dp8\nVk\np9\nL1180591620717411303424L\nsac__builtin__\nfrozenset\np10\n((lp11\ntp12\nRp13\na.";
const P2: &[u8] = b"\x80\x02]q\x00(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00X\x02\x00\x00\x00\xc3\xa9q\x01c_codecs\nencode\nq\x02X\x01\x00\x00\x00xq\x03X\x06\x00\x00\x00latin1q\x04\x86q\x05Rq\x06N\x88\x86q\x07}q\x08X\x01\x00\x00\x00kq\t\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@sc__builtin__\nfrozenset\nq\n]q\x0b\x85q\x0cRq\re.";
const P5: &[u8] = b"\x80\x05\x957\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00\x8c\x02\xc3\xa9\x94C\x01x\x94N\x88\x86\x94}\x94\x8c\x01k\x94\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@s(\x91\x94e.";

fn ops(data: &[u8]) -> Result<Vec<Op<'_>>, PickleError> {
    let mut reader = OpReader::new(data, 0);
    let mut out = Vec::new();
    while let Some(op) = reader.next_op()? {
        out.push(op);
    }
    Ok(out)
}

#[test]
fn protocol_0_text_opcodes() {
    let got = ops(P0).unwrap_or_default();
    assert_eq!(got[0], Op::Mark);
    assert_eq!(got[1], Op::List);
    assert_eq!(got[2], Op::Put(0));
    assert_eq!(got[3], Op::Int(1));
    assert_eq!(got[5], Op::Int(-2));
    assert_eq!(got[7], Op::Float(3.5));
    assert_eq!(got[9], Op::UnicodeRawEscape(b"\xe9"));
    assert_eq!(got[12], Op::Global("_codecs", "encode"));
    assert!(got.contains(&Op::Bool(true)));
    assert!(got.contains(&Op::LongText("1180591620717411303424")));
    assert!(got.contains(&Op::Global("__builtin__", "frozenset")));
    assert_eq!(got.last(), Some(&Op::Stop));
}

#[test]
fn protocol_2_binary_opcodes() {
    let got = ops(P2).unwrap_or_default();
    assert_eq!(got[0], Op::Proto(2));
    assert_eq!(got[1], Op::EmptyList);
    assert!(got.contains(&Op::Int(-2)));
    assert!(got.contains(&Op::Float(3.5)));
    assert!(got.contains(&Op::Unicode("é".as_bytes())));
    assert!(got.contains(&Op::LongBytes(b"\x00\x00\x00\x00\x00\x00\x00\x00@")));
    assert!(got.contains(&Op::TupleN(2)));
    assert_eq!(got.last(), Some(&Op::Stop));
}

#[test]
fn protocol_5_framed() {
    let got = ops(P5).unwrap_or_default();
    assert_eq!(got[0], Op::Proto(5));
    assert_eq!(got[1], Op::Frame(0x37));
    assert!(got.contains(&Op::Bytes(b"x")));
    assert!(got.contains(&Op::Memoize));
    assert!(got.contains(&Op::FrozenSet));
    assert_eq!(got.last(), Some(&Op::Stop));
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    for data in [P0, P2, P5] {
        for cut in 0..data.len() {
            let mut reader = OpReader::new(&data[..cut], 0);
            loop {
                match reader.next_op() {
                    Ok(Some(Op::Stop)) => panic!("STOP read from a truncated pickle"),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

#[test]
fn lying_lengths_are_refused_before_slicing() {
    // BINBYTES8 / BINUNICODE8 / BYTEARRAY8 / FRAME claiming 2^63 bytes.
    for code in [0x8e_u8, 0x8d, 0x96, 0x95] {
        let mut data = vec![code];
        data.extend_from_slice(&(1u64 << 63).to_le_bytes());
        data.extend_from_slice(b"abc");
        assert!(matches!(
            OpReader::new(&data, 0).next_op(),
            Err(PickleError::Truncated(_))
        ));
    }
    // BINSTRING and LONG4 with a negative length.
    for code in [b'T', 0x8b] {
        let mut data = vec![code];
        data.extend_from_slice(&(-5i32).to_le_bytes());
        assert!(matches!(
            OpReader::new(&data, 0).next_op(),
            Err(PickleError::BadArgument { .. })
        ));
    }
}

#[test]
fn string_escapes_of_protocol_0() {
    let data = b"S'a\\x41\\n\\'\\101\\\\'\n.";
    let got = ops(data).unwrap_or_default();
    assert_eq!(got[0], Op::String(Cow::Owned(b"aA\n'A\\".to_vec())));
    assert!(ops(b"S'unterminated\n").is_err());
    assert!(ops(b"Snoquotes\n").is_err());
}

#[test]
fn int_spellings() {
    assert_eq!(ops(b"I00\n").unwrap_or_default(), vec![Op::Bool(false)]);
    assert_eq!(ops(b"I01\n").unwrap_or_default(), vec![Op::Bool(true)]);
    assert_eq!(
        ops(b"I99999999999999999999\n").unwrap_or_default(),
        vec![Op::LongText("99999999999999999999")]
    );
    assert!(ops(b"I1x\n").is_err());
    assert!(ops(b"L12a\n").is_err());
    assert!(ops(b"Fnotafloat\n").is_err());
}

#[test]
fn unknown_opcode() {
    assert_eq!(
        ops(b"\xff"),
        Err(PickleError::UnknownOpcode { op: 0xff, pos: 0 })
    );
}

#[test]
fn take_is_bounds_checked() {
    let mut reader = OpReader::new(b"abc", 1);
    assert_eq!(reader.take(2), Ok(&b"bc"[..]));
    assert!(reader.take(1).is_err());
    let mut reader = OpReader::new(b"abc", 0);
    assert!(reader.take(usize::MAX).is_err());
}
