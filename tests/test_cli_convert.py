"""``joblib-rs convert``: files between joblib-rs's format and joblib's (issue 17, item 2)."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from compat.joblib_files import sample_object
from test_cli import assert_error, run_cli
from test_numpy_pickle import assert_same

import joblib_rs
from joblib_rs.cli._convert import parse_compress
from joblib_rs.cli._errors import CliError


def plain_sample() -> dict[str, Any]:
    """The sample objects without the object array (which "safe" refuses: see below)."""
    value = sample_object()
    del value["objects"]
    return value


def convert_json(*args: str) -> dict[str, Any]:
    code, out, err = run_cli("convert", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_jrs_to_joblib_keeps_the_codec_and_joblib_reads_it(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.jrs", tmp_path / "out.pkl"
    value = plain_sample()
    joblib_rs.dump(value, src, compress=("gzip", 3))
    result = convert_json(str(src), str(dst))
    assert result["from"] == "jrs" and result["to"] == "joblib"
    assert result["input_compression"] == "gzip" and result["compression"] == "gzip"
    assert result["output_size"] == dst.stat().st_size
    assert dst.read_bytes().startswith(b"\x1f\x8b")
    assert_same(value, joblib.load(dst))


def test_joblib_to_jrs_with_compression(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.pkl", tmp_path / "out.jrs"
    value = plain_sample()
    joblib.dump(value, src, compress=3)
    result = convert_json(str(src), str(dst), "--compress", "lz4:3")
    assert result["from"] == "joblib" and result["to"] == "jrs"
    assert result["input_compression"] == "zlib" and result["compression"] == "lz4:3"
    assert dst.read_bytes().startswith(joblib_rs._core.CONTAINER_MAGIC)
    assert_same(value, joblib_rs.load(dst))


def test_zstd_becomes_zlib_for_joblib_and_to_overrides(tmp_path: Path) -> None:
    src = tmp_path / "in.jrs"
    joblib_rs.dump({"a": np.arange(1000)}, src, compress=3)  # zstd
    result = convert_json(str(src), str(tmp_path / "o.pkl"))
    assert result["compression"] == "zlib:3"
    assert_same({"a": np.arange(1000)}, joblib.load(tmp_path / "o.pkl"))
    again = convert_json(str(src), str(tmp_path / "o.jrs"), "--to", "jrs", "--compress", "none")
    assert again["to"] == "jrs" and again["compression"] is None
    assert_same({"a": np.arange(1000)}, joblib_rs.load(tmp_path / "o.jrs"))


def test_human_output(tmp_path: Path) -> None:
    src = tmp_path / "in.jrs"
    joblib_rs.dump([1, 2], src)
    code, out, err = run_cli("convert", str(src), str(tmp_path / "out.pkl"))
    assert code == 0, err
    assert out.startswith("Converted ") and "(joblib-rs, uncompressed" in out
    assert joblib.load(tmp_path / "out.pkl") == [1, 2]


def test_globals_outside_plain_data_are_refused_unless_allowed(tmp_path: Path) -> None:
    # A file naming a function: loading it with the default settings would call it.
    src, dst = tmp_path / "evil.pkl", tmp_path / "out.jrs"
    joblib.dump(collections.OrderedDict(a=np.float64(1.5), f=np.sum), src)
    result = run_cli("convert", str(src), str(dst))
    assert_error(result, 1, "numpy.sum", "--allow")
    assert not dst.exists()
    ok = convert_json(str(src), str(dst), "--allow", "numpy.sum")
    assert ok["to"] == "jrs"
    assert joblib_rs.load(dst)["f"] is np.sum


def test_object_arrays_need_allow_numpy_object(tmp_path: Path) -> None:
    # Object arrays hold references, not data: "safe" refuses them (docs/security.md).
    src, dst = tmp_path / "in.jrs", tmp_path / "out.pkl"
    value = sample_object()
    joblib_rs.dump(value, src)
    assert_error(run_cli("convert", str(src), str(dst)), 1, "object", "--allow")
    assert not dst.exists()
    convert_json(str(src), str(dst), "--allow", "numpy.object_")
    assert_same(value, joblib.load(dst))


def test_usage_errors_are_status_2(tmp_path: Path) -> None:
    src = tmp_path / "in.jrs"
    joblib_rs.dump(1, src)
    assert_error(
        run_cli("convert", str(src), str(tmp_path / "o"), "--compress", "zstd", "--to", "joblib"),
        2,
        "zstd",
        "joblib format",
    )
    assert_error(
        run_cli("convert", str(src), str(tmp_path / "o"), "--compress", "zlib:12"),
        2,
        "invalid level",
    )
    assert_error(
        run_cli("convert", str(src), str(tmp_path / "o"), "--allow", "nodots"), 2, "--allow"
    )
    assert_error(run_cli("convert", str(src), str(src)), 2, "input file")
    code, _out, err = run_cli("convert", str(src), str(tmp_path / "o"), "--to", "npz")
    assert code == 2 and "invalid choice" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jrs"]


def test_missing_and_damaged_inputs_are_status_1(tmp_path: Path) -> None:
    assert_error(run_cli("convert", str(tmp_path / "nope"), str(tmp_path / "o")), 1, "nope")
    src = tmp_path / "in.jrs"
    joblib_rs.dump(np.arange(1000), src)
    data = bytearray(src.read_bytes())
    data[200] ^= 1
    src.write_bytes(bytes(data))
    assert_error(run_cli("convert", str(src), str(tmp_path / "o")), 1, "damaged")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("text", "to", "expected"),
    [
        ("none", "jrs", 0),
        ("0", "joblib", 0),
        ("5", "jrs", 5),
        ("xz", "joblib", "xz"),
        ("LZ4:3", "jrs", ("lz4", 3)),
        ("zstd:19", "jrs", ("zstd", 19)),
    ],
)
def test_parse_compress(text: str, to: str, expected: Any) -> None:
    assert parse_compress(text, to) == expected


def test_parse_compress_rejects() -> None:
    for text, to in (("10", "jrs"), ("zstd", "joblib"), ("gzip:x", "jrs"), ("snappy", "jrs")):
        with pytest.raises(CliError) as info:
            parse_compress(text, to)
        assert info.value.status == 2
