use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;

use super::entry::{ENTRY_NAME, decode, encode, read_metadata};
use super::lease::{LeaseState, parse_expiry, renew, try_acquire};
use super::scan::{clear_own, is_own_key, reduce_size, scan};
use super::*;
use crate::store::Limits;

fn memory_store() -> RemoteStore {
    match RemoteStore::with_store(Arc::new(InMemory::new()), "bucket-prefix/joblib_rs") {
        Ok(store) => store,
        Err(e) => panic!("runtime: {e}"),
    }
}

fn ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn scheme_detection() {
    assert_eq!(url_scheme("s3://b/p").as_deref(), Some("s3"));
    assert_eq!(url_scheme("GS://b").as_deref(), Some("gs"));
    assert_eq!(url_scheme("/tmp/s3://x"), None);
    assert_eq!(url_scheme("relative/path"), None);
    assert_eq!(url_scheme("1x://a"), None);
}

#[test]
fn unknown_scheme_and_option_are_errors() {
    let err = RemoteStore::open("ftp://host/x", &[], Timeouts::default());
    assert!(matches!(err, Err(RemoteError::UnknownScheme(s)) if s == "ftp"));
    let opts = vec![("no_such_option".to_owned(), "1".to_owned())];
    let err = RemoteStore::open("s3://bucket/p", &opts, Timeouts::default());
    assert!(matches!(err, Err(RemoteError::UnknownOption { .. })));
    let err = RemoteStore::open("s3:///p", &[], Timeouts::default());
    assert!(matches!(err, Err(RemoteError::InvalidUrl { .. })));
}

#[test]
fn s3_store_opens_with_explicit_options() {
    let opts = vec![
        ("endpoint".to_owned(), "http://127.0.0.1:1".to_owned()),
        ("region".to_owned(), "us-east-1".to_owned()),
        ("access_key_id".to_owned(), "a".to_owned()),
        ("secret_access_key".to_owned(), "b".to_owned()),
        ("allow_http".to_owned(), "true".to_owned()),
    ];
    ok(RemoteStore::open(
        "s3://bucket/a/b",
        &opts,
        Timeouts::default(),
    ));
}

#[test]
fn get_put_delete_list() {
    let store = memory_store();
    assert_eq!(ok(store.get("f/x")), None);
    ok(store.put(
        "f/x",
        vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
    ));
    let got = ok(store.get("f/x")).map(|c| c.concat());
    assert_eq!(got.as_deref(), Some(&b"abcd"[..]));
    ok(store.put("f/<locals>/y", vec![Bytes::from_static(b"")]));
    assert_eq!(
        ok(store.get("f/<locals>/y")).map(|c| c.concat()),
        Some(vec![])
    );
    let mut keys: Vec<String> = ok(store.list("")).into_iter().map(|l| l.key).collect();
    keys.sort();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1], "f/x");
    assert_eq!(ok(store.delete_prefix("f")), 2);
    assert!(ok(store.list("")).is_empty());
    ok(store.delete("f/x"));
    assert!(store.requests() > 0);
}

#[test]
fn large_objects_use_ranges_and_multipart() {
    let store = memory_store();
    let size = (RANGE_CHUNK as usize) * 2 + 12345;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let before = store.requests();
    ok(store.put("big", vec![Bytes::from(data.clone())]));
    assert!(store.requests() - before > 1, "multipart upload");
    let before = store.requests();
    let got = ok(store.get("big")).map(|c| c.concat());
    assert_eq!(store.requests() - before, 3);
    assert_eq!(got.as_deref(), Some(&data[..]));
    let store = store.with_range_chunk(0);
    let before = store.requests();
    let got = ok(store.get("big")).map(|c| c.concat());
    assert_eq!(store.requests() - before, 1);
    assert_eq!(got.as_deref(), Some(&data[..]));
}

#[test]
fn put_if_absent_is_exclusive() {
    let store = memory_store();
    assert!(ok(store.put_if_absent("k", Bytes::from_static(b"1"))).0);
    assert!(!ok(store.put_if_absent("k", Bytes::from_static(b"2"))).0);
    let got = ok(store.get("k")).map(|c| c.concat());
    assert_eq!(got.as_deref(), Some(&b"1"[..]));
}

#[test]
fn entry_round_trip_and_damage() {
    let output = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
    let chunks = encode(br#"{"duration": 1}"#, output);
    let (metadata, out) = ok(decode("e", chunks.clone()));
    assert_eq!(&metadata[..], br#"{"duration": 1}"#);
    assert_eq!(out.concat(), b"hello world");

    let whole = chunks.concat();
    // Truncated, flipped, foreign: all damaged.
    let cut = decode("e", vec![Bytes::copy_from_slice(&whole[..whole.len() - 1])]);
    assert!(matches!(cut, Err(RemoteError::Damaged { .. })));
    let mut flipped = whole.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let bad = decode("e", vec![Bytes::from(flipped)]);
    assert!(matches!(bad, Err(RemoteError::Damaged { reason, .. }) if reason.contains("output")));
    let foreign = decode("e", vec![Bytes::from(vec![0u8; 64])]);
    assert!(matches!(foreign, Err(RemoteError::Damaged { .. })));
    // Split at any point, still decodes.
    for at in [1, 10, 40, 45, whole.len() - 1] {
        let parts = vec![
            Bytes::copy_from_slice(&whole[..at]),
            Bytes::copy_from_slice(&whole[at..]),
        ];
        let (_, out) = ok(decode("e", parts));
        assert_eq!(out.concat(), b"hello world");
    }
}

#[test]
fn leases_exclude_expire_and_take_over_once() {
    let store = memory_store();
    assert_eq!(
        ok(try_acquire(&store, "f/h.lease", 60.0, "a")),
        LeaseState::Created
    );
    assert!(matches!(
        ok(try_acquire(&store, "f/h.lease", 60.0, "b")),
        LeaseState::Held { .. }
    ));
    // An expired lease is taken over.
    ok(renew(&store, "f/h.lease", -1.0, "a"));
    assert_eq!(
        ok(try_acquire(&store, "f/h.lease", 60.0, "b")),
        LeaseState::TookOver
    );
    assert!(matches!(
        ok(try_acquire(&store, "f/h.lease", 60.0, "c")),
        LeaseState::Held { .. }
    ));
    assert_eq!(parse_expiry(b"garbage"), None);
    assert_eq!(
        parse_expiry(b"joblib-rs lease v1\nexpires 12.5\nowner x\n"),
        Some(12.5)
    );
}

#[test]
fn scan_and_reduce_size_use_atime_markers() {
    let store = memory_store();
    for name in ["a", "b", "c"] {
        let chunks = encode(b"{}", vec![Bytes::from(vec![0u8; 100])]);
        ok(store.put(&format!("f/{name}/{ENTRY_NAME}"), chunks));
        ok(store.put_if_absent(&format!("f/{name}.lease"), Bytes::from_static(b"x")));
    }
    let items = ok(scan(&store));
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i.size == 140 + 2));
    let limits = Limits {
        items: Some(1),
        ..Default::default()
    };
    let planned = ok(reduce_size(&store, limits, 3600.0, true));
    assert_eq!(planned.len(), 2);
    assert_eq!(ok(scan(&store)).len(), 3);
    let removed = ok(reduce_size(&store, limits, 3600.0, false));
    assert_eq!(removed.len(), 2);
    let left = ok(store.list(""));
    assert_eq!(left.len(), 2, "one entry and its lease: {left:?}");
}

const HASH: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn read_metadata_reads_the_header_and_metadata_only() {
    let store = memory_store();
    let key = format!("m/f/{HASH}/{ENTRY_NAME}");
    let output = vec![Bytes::from(vec![7u8; 100_000])];
    ok(store.put(&key, encode(b"{\"duration\": 1}", output)));
    let found = ok(read_metadata(&store, &key));
    assert_eq!(
        found,
        Some((Bytes::from_static(b"{\"duration\": 1}"), 100_000))
    );
    assert_eq!(ok(read_metadata(&store, "m/f/missing/entry.jrs")), None);
    // Metadata longer than the first ranged read takes a second one.
    let long = vec![b'x'; 200_000];
    ok(store.put(&key, encode(&long, vec![Bytes::from_static(b"out")])));
    let (metadata, output_len) = ok(read_metadata(&store, &key)).unwrap_or_default();
    assert_eq!((metadata.len(), output_len), (200_000, 3));
}

#[test]
fn read_metadata_refuses_damaged_objects() {
    let store = memory_store();
    let key = format!("m/f/{HASH}/{ENTRY_NAME}");
    ok(store.put(&key, vec![Bytes::from_static(b"short")]));
    assert!(matches!(
        read_metadata(&store, &key),
        Err(RemoteError::Damaged { .. })
    ));
    let mut chunks = encode(b"{}", vec![Bytes::from_static(b"output")]);
    chunks.push(Bytes::from_static(b"trailing"));
    ok(store.put(&key, chunks));
    assert!(matches!(
        read_metadata(&store, &key),
        Err(RemoteError::Damaged { .. })
    ));
    let mut head = encode(b"{}", vec![]).concat();
    head[40] ^= 1; // a flipped metadata byte
    ok(store.put(&key, vec![Bytes::from(head)]));
    assert!(matches!(
        read_metadata(&store, &key),
        Err(RemoteError::Damaged { .. })
    ));
}

#[test]
fn own_keys_are_the_objects_the_store_writes() {
    assert!(is_own_key("m/f/func_code.py"));
    assert!(is_own_key(&format!("m/f/{HASH}/{ENTRY_NAME}")));
    assert!(is_own_key(&format!("m/f/{HASH}.lease")));
    assert!(is_own_key(&format!("m/f/{HASH}.atime")));
    assert!(!is_own_key("m/f/notes.txt"));
    assert!(!is_own_key(&format!("m/f/not-a-hash/{ENTRY_NAME}")));
    assert!(!is_own_key("m/f/x.lease"));
}

#[test]
fn clear_own_leaves_foreign_objects() {
    let store = memory_store();
    ok(store.put(
        "m/f/func_code.py",
        vec![Bytes::from_static(b"def f(): pass")],
    ));
    let entry = format!("m/f/{HASH}/{ENTRY_NAME}");
    ok(store.put(&entry, encode(b"{}", vec![Bytes::from_static(b"out")])));
    ok(store.put(&format!("m/f/{HASH}.atime"), vec![]));
    ok(store.put("m/f/README", vec![Bytes::from_static(b"mine")]));
    ok(store.put("other/data.csv", vec![Bytes::from_static(b"1,2")]));
    let cleared = ok(clear_own(&store, ""));
    assert_eq!((cleared.removed, cleared.entries), (3, 1));
    let mut skipped = cleared.skipped.clone();
    skipped.sort();
    assert_eq!(
        skipped,
        vec!["m/f/README".to_owned(), "other/data.csv".to_owned()]
    );
    let mut left: Vec<String> = ok(store.list("")).into_iter().map(|l| l.key).collect();
    left.sort();
    assert_eq!(left, skipped);
}
