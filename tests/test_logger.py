"""joblib's logging helpers: Logger and PrintTime."""

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


def test_short_format_time_matches_joblib_widths():
    from joblib_rs.logger import short_format_time

    assert short_format_time(0.04) == "   0.0s"
    assert short_format_time(42) == "  42.0s"
    assert short_format_time(60) == "  60.0s"
    assert short_format_time(90) == " 1.5min"
    assert short_format_time(6000) == "100.0min"


def test_grid_search_verbose_runs_with_joblib_resolving_to_joblib_rs():
    """scikit-learn's ``GridSearchCV(verbose=3)`` uses joblib.logger.short_format_time."""
    pytest.importorskip("sklearn")
    alias = Path(__file__).parent / "compat" / "alias"
    code = textwrap.dedent("""
        import joblib
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV

        assert joblib.__name__ == "joblib_rs", joblib.__name__
        X, y = make_classification(n_samples=60, random_state=0)
        search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2, verbose=3)
        search.fit(X, y)
        print("best", search.best_params_)
    """)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(alias), os.environ.get("PYTHONPATH", "")])
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "best {'C':" in run.stdout
    # One line per fit, with the fixed-width duration short_format_time gives.
    assert re.search(r"\[CV \d/2\] END .*C=0\.1.*total time= +\d+\.\ds", run.stdout)
