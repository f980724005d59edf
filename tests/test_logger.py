"""joblib's logging helpers: Logger and PrintTime."""

import logging
import re

import joblib_rs
from joblib_rs.logger import Logger, PrintTime


def test_public_names():
    assert joblib_rs.Logger is Logger and joblib_rs.PrintTime is PrintTime
    from joblib_rs._store_backends import StoreBackendBase

    assert joblib_rs.StoreBackendBase is StoreBackendBase


def test_print_time_prints_lapses_and_totals(capsys):
    timer = PrintTime()
    timer("step one")
    timer("everything", total=True)
    err = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"step one: \d+\.\ds, \d+\.\dmin", err[0])
    assert re.fullmatch(r"everything: \d+\.\d\ds, \d+\.\d min", err[1])


def test_print_time_logs_to_a_file_and_keeps_older_logs(tmp_path, capsys):
    log = tmp_path / "logs" / "run.log"
    PrintTime(logfile=str(log))("first run")
    PrintTime(logfile=str(log))("second run")
    assert "second run" in log.read_text()
    older = (tmp_path / "logs" / "run.log.1").read_text()
    assert "Logging joblib python script" in older and "first run" in older
    PrintTime(logdir=str(tmp_path / "d"))("in a folder")
    assert "in a folder" in (tmp_path / "d" / "joblib.log").read_text()


def test_print_time_refuses_both_destinations(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="both logfile and logdir"):
        PrintTime(logfile=str(tmp_path / "a"), logdir=str(tmp_path))


def test_logger_warns_through_logging(caplog):
    class Thing(Logger):
        def __repr__(self):
            return "Thing"

    with caplog.at_level(logging.WARNING, logger="joblib"):
        Thing().warn("careful")
    assert "[Thing]: careful" in caplog.text
    assert Thing(depth=1).format({"a": {"b": {"c": 1}}}) == "{'a': {...}}"
