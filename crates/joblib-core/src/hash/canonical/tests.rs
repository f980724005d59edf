//! Tests of the canonical encoder through its event API, as the bindings drive it.

use super::*;

fn hex(algo: Algorithm, build: impl FnOnce(&mut CanonicalHasher)) -> String {
    let mut h = CanonicalHasher::new(algo);
    build(&mut h);
    h.finish().expect("balanced").to_hex()
}

fn xxh(build: impl FnOnce(&mut CanonicalHasher)) -> String {
    hex(Algorithm::Xxh3, build)
}

/// `{k: v for (k, v) in pairs}` with int keys and str values.
fn dict(h: &mut CanonicalHasher, id: usize, pairs: &[(i64, &str)]) {
    assert_eq!(h.enter(NodeKind::Dict, Some(id)), Entered::Walk);
    for (k, v) in pairs {
        h.begin_entry().unwrap();
        h.int(*k);
        h.str(v.as_bytes());
        h.end_entry().unwrap();
    }
    h.leave().unwrap();
}

fn list_of_ints(h: &mut CanonicalHasher, id: usize, items: &[i64]) {
    assert_eq!(h.enter(NodeKind::List, Some(id)), Entered::Walk);
    for &i in items {
        h.int(i);
    }
    h.leave().unwrap();
}

#[test]
fn dict_order_does_not_matter() {
    let a = xxh(|h| dict(h, 1, &[(1, "a"), (2, "b"), (3, "c")]));
    let b = xxh(|h| dict(h, 1, &[(3, "c"), (1, "a"), (2, "b")]));
    assert_eq!(a, b);
    // ...but pairing does.
    let c = xxh(|h| dict(h, 1, &[(1, "b"), (2, "a"), (3, "c")]));
    assert_ne!(a, c);
}

#[test]
fn scalars_of_different_types_differ() {
    let values = [
        xxh(|h| h.int(1)),
        xxh(|h| h.float(1.0)),
        xxh(|h| h.boolean(true)),
        xxh(|h| h.str(b"1")),
        xxh(|h| h.bytes(b"1")),
        xxh(|h| h.bytearray(b"1")),
        xxh(|h| h.complex(1.0, 0.0)),
        xxh(|h| list_of_ints(h, 9, &[1])),
        xxh(|h| {
            h.enter(NodeKind::Tuple, None);
            h.int(1);
            h.leave().unwrap();
        }),
        xxh(|h| {
            h.enter(NodeKind::Set, None);
            h.begin_entry().unwrap();
            h.int(1);
            h.end_entry().unwrap();
            h.leave().unwrap();
        }),
        xxh(|h| h.label("1")),
        xxh(|h| h.none()),
    ];
    for (i, a) in values.iter().enumerate() {
        for b in &values[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn floats_nan_and_signed_zero() {
    assert_eq!(xxh(|h| h.float(f64::NAN)), xxh(|h| h.float(-f64::NAN)));
    assert_eq!(
        xxh(|h| h.float(f64::NAN)),
        xxh(|h| h.float(f64::from_bits(0x7ff0_0000_0000_0001)))
    );
    assert_ne!(xxh(|h| h.float(0.0)), xxh(|h| h.float(-0.0)));
}

#[test]
fn integers_have_one_encoding_whatever_the_width() {
    assert_eq!(
        xxh(|h| h.int(5)),
        xxh(|h| h.int_bytes(&[5, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
    );
    assert_eq!(xxh(|h| h.int(-1)), xxh(|h| h.int_bytes(&[0xff; 12])));
    assert_eq!(
        xxh(|h| h.int(i64::MIN)),
        xxh(|h| h.int_bytes(&i64::MIN.to_le_bytes()))
    );
    // 2**63 needs nine bytes and must not wrap to i64::MIN.
    let two_63 = [0, 0, 0, 0, 0, 0, 0, 0x80, 0];
    assert_ne!(xxh(|h| h.int_bytes(&two_63)), xxh(|h| h.int(i64::MIN)));
    assert_eq!(
        xxh(|h| h.int_bytes(&two_63)),
        xxh(|h| h.int_bytes(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0]))
    );
}

#[test]
fn nesting_is_unambiguous() {
    // [[1], 2] vs [[1, 2]] vs [1, [2]]
    let a = xxh(|h| {
        h.enter(NodeKind::List, Some(1));
        list_of_ints(h, 2, &[1]);
        h.int(2);
        h.leave().unwrap();
    });
    let b = xxh(|h| {
        h.enter(NodeKind::List, Some(1));
        list_of_ints(h, 2, &[1, 2]);
        h.leave().unwrap();
    });
    let c = xxh(|h| {
        h.enter(NodeKind::List, Some(1));
        h.int(1);
        list_of_ints(h, 2, &[2]);
        h.leave().unwrap();
    });
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_ne!(b, c);
    // Byte strings with shifted boundaries.
    let d = xxh(|h| {
        h.str(b"ab");
        h.str(b"c");
    });
    let e = xxh(|h| {
        h.str(b"a");
        h.str(b"bc");
    });
    assert_ne!(d, e);
}

#[test]
fn shared_reference_hashes_like_a_copy() {
    // [x, x] with one list object x, vs [x, copy_of_x].
    let shared = xxh(|h| {
        h.enter(NodeKind::List, Some(1));
        list_of_ints(h, 2, &[7, 8]);
        assert_eq!(h.enter(NodeKind::List, Some(2)), Entered::Seen);
        h.leave().unwrap();
    });
    let copied = xxh(|h| {
        h.enter(NodeKind::List, Some(1));
        list_of_ints(h, 2, &[7, 8]);
        list_of_ints(h, 3, &[7, 8]);
        h.leave().unwrap();
    });
    assert_eq!(shared, copied);
}

#[test]
fn cycles_terminate_and_depend_on_shape() {
    // l = [1]; l.append(l)
    let self_ref = xxh(|h| {
        h.enter(NodeKind::List, Some(1));
        h.int(1);
        assert_eq!(h.enter(NodeKind::List, Some(1)), Entered::Seen);
        h.leave().unwrap();
    });
    // m = [1, [l]] where the inner list points two levels up.
    let two_up = xxh(|h| {
        h.enter(NodeKind::List, Some(1));
        h.int(1);
        h.enter(NodeKind::List, Some(2));
        assert_eq!(h.enter(NodeKind::List, Some(1)), Entered::Seen);
        h.leave().unwrap();
        h.leave().unwrap();
    });
    assert_ne!(self_ref, two_up);
}

#[test]
fn unbalanced_events_are_errors() {
    let mut h = CanonicalHasher::new(Algorithm::Xxh3);
    assert!(h.leave().is_err());
    assert!(h.begin_entry().is_err(), "root is not unordered");
    h.enter(NodeKind::Dict, None);
    assert!(h.end_entry().is_err());
    h.begin_entry().unwrap();
    assert!(h.begin_entry().is_err());
    assert!(h.leave().is_err());
    let mut h = CanonicalHasher::new(Algorithm::Xxh3);
    h.enter(NodeKind::List, None);
    assert!(h.finish().is_err());
}

#[test]
fn algorithms_give_their_own_lengths() {
    assert_eq!(hex(Algorithm::Xxh3, |h| h.int(1)).len(), 32);
    assert_eq!(hex(Algorithm::Md5, |h| h.int(1)).len(), 32);
    assert_eq!(hex(Algorithm::Sha1, |h| h.int(1)).len(), 40);
}

/// A fixed document touching every event; its digests are pinned so that any change to the
/// encoding fails here (bump FORMAT_VERSION and re-pin deliberately).
fn golden_document(h: &mut CanonicalHasher) {
    h.enter(NodeKind::List, Some(1));
    h.none();
    h.boolean(true);
    h.boolean(false);
    h.int(-42);
    h.int_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    h.float(2.5);
    h.complex(1.0, -1.0);
    h.str("héllo".as_bytes());
    h.bytes(b"\x00\x01");
    h.bytearray(b"ba");
    h.global("builtins", "len");
    dict(h, 2, &[(1, "one"), (2, "two")]);
    h.enter(NodeKind::Array, Some(3));
    h.label("ndarray");
    h.label("<f8");
    h.int(2);
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    h.buffer(BlobSource::Bytes(&data)).unwrap();
    h.leave().unwrap();
    assert_eq!(h.enter(NodeKind::List, Some(1)), Entered::Seen);
    h.leave().unwrap();
}

#[test]
fn golden_values_are_stable() {
    assert_eq!(FORMAT_VERSION, 1);
    assert_eq!(
        hex(Algorithm::Xxh3, golden_document),
        "2e262bd7601de052629a3e7bc45e0f1d"
    );
    assert_eq!(
        hex(Algorithm::Md5, golden_document),
        "511d91c2418f6f27cc1b24d69dba4902"
    );
    assert_eq!(
        hex(Algorithm::Sha1, golden_document),
        "e3c5a5b1e092c71c262bae037e869bc8b571d54e"
    );
}

#[test]
fn big_frames_spill_into_the_same_digest() {
    // 300k ints make a 2.7 MB list frame: it spills into a streaming digest, which must give
    // the value of digesting the whole frame at once.
    let items: Vec<i64> = (0..300_000).collect();
    for algo in [Algorithm::Xxh3, Algorithm::Md5, Algorithm::Sha1] {
        let got = hex(algo, |h| list_of_ints(h, 1, &items));
        let mut frame = vec![NodeKind::List as u8];
        for i in &items {
            frame.push(tag::INT);
            frame.extend_from_slice(&i.to_le_bytes());
        }
        let mut root = MAGIC.to_vec();
        root.push(FORMAT_VERSION);
        root.push(NodeKind::Root as u8);
        root.push(tag::NODE);
        root.extend_from_slice(algo.digest(&frame).as_bytes());
        assert_eq!(got, algo.digest(&root).to_hex(), "{algo}");
        assert!(frame.len() > 2 * SPILL);
    }
}
