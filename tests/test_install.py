"""``joblib_rs.install()``: ``import joblib`` resolves to joblib-rs, in-process and in workers.

Each test runs in a fresh interpreter (install changes process-wide import state), with
the package installed as a user installs it (the ``joblib_rs_install.pth`` hook included).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _python(
    code: str, *, env: dict[str, str] | None = None, path: list[Path] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("JOBLIB_RS_INSTALL", None)
    if path:
        full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=240,
        env=full_env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_install_binds_joblib_and_its_submodules() -> None:
    out = _python(
        """
        import joblib_rs
        with joblib_rs.install():
            import joblib, joblib.parallel, joblib.memory
            from joblib.numpy_pickle import dump
            assert joblib.Parallel is joblib_rs.Parallel
            assert joblib.parallel is joblib_rs.parallel and dump is joblib_rs.dump
            assert joblib.__version__ == "1.6.0", joblib.__version__
            assert joblib_rs.__version__ != joblib.__version__
            joblib.some_patch = 1  # patches land on joblib-rs, which is what runs
            assert joblib_rs.some_patch == 1
            try:
                import joblib.no_such_module
            except ModuleNotFoundError:
                pass
            else:
                raise AssertionError("joblib.no_such_module imported")
        import joblib
        print(joblib.__file__)
        """
    )
    assert "site-packages/joblib/__init__.py" in out.stdout  # uninstalled: the real one


def test_workers_inherit_install() -> None:
    out = _python(
        """
        import joblib_rs
        joblib_rs.install()
        import joblib

        def which():
            import joblib
            return joblib.__version__, joblib.Parallel.__module__

        if __name__ == "__main__":
            print(joblib.Parallel(n_jobs=2)(joblib.delayed(which)() for _ in range(4)))
        """
    )
    assert out.stdout.count("('1.6.0', 'joblib_rs.parallel')") == 4


def test_environment_variable_installs_at_start() -> None:
    code = "import joblib; print(joblib.Parallel.__module__)"
    assert _python(code, env={"JOBLIB_RS_INSTALL": "1"}).stdout.strip() == "joblib_rs.parallel"
    assert _python(code).stdout.strip() == "joblib.parallel"
    # Off unless set: a process that never asks imports nothing of joblib-rs at start.
    out = _python("import sys; print('joblib_rs' in sys.modules)")
    assert out.stdout.strip() == "False"


def test_run_command_runs_a_script_and_a_module(tmp_path: Path) -> None:
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import joblib
            from joblib import Parallel, delayed

            def square(x):
                return x * x

            if __name__ == "__main__":
                print(sys.argv[1:], joblib.Parallel.__module__)
                print(Parallel(n_jobs=2)(delayed(square)(i) for i in range(4)))
                sys.exit(3)
            """
        )
    )
    env = dict(os.environ)
    env.pop("JOBLIB_RS_INSTALL", None)
    cmd = [sys.executable, "-m", "joblib_rs", "run", str(script), "a", "--flag"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "['a', '--flag'] joblib_rs.parallel" in proc.stdout
    assert "[0, 1, 4, 9]" in proc.stdout
    env["PYTHONPATH"] = str(tmp_path)
    cmd = [sys.executable, "-m", "joblib_rs", "run", "-m", "prog", "b"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 3 and "['b'] joblib_rs.parallel" in proc.stdout, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "joblib_rs", "run", str(tmp_path / "missing.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and "no such script" in proc.stderr


def test_scikit_learn_runs_on_joblib_rs_without_the_real_joblib(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    # A decoy first on the path: any import of the real joblib's files would fail.
    decoy = tmp_path / "decoy" / "joblib"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the real joblib was imported')\n")
    out = _python(
        """
        import joblib_rs
        joblib_rs.install()
        import numpy as np
        from sklearn.datasets import make_classification
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import cross_val_score
        from sklearn.utils.parallel import Parallel

        if __name__ == "__main__":
            x, y = make_classification(n_samples=200, random_state=0)
            scores = cross_val_score(RandomForestClassifier(n_estimators=10, random_state=0),
                                     x, y, cv=3, n_jobs=2)
            print(len(scores), Parallel.__mro__[1].__module__)
        """,
        path=[tmp_path / "decoy"],
    )
    assert out.stdout.split() == ["3", "joblib_rs.parallel"]


def test_modules_that_imported_joblib_first(tmp_path: Path) -> None:
    (tmp_path / "uses_module.py").write_text("import joblib\n")
    (tmp_path / "uses_class.py").write_text("import joblib\nclass P(joblib.Parallel):\n    pass\n")
    out = _python(
        """
        import warnings
        import joblib, uses_module, uses_class
        import joblib_rs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            joblib_rs.install()
        assert uses_module.joblib.Parallel is joblib_rs.Parallel  # rebound: nothing else held
        assert uses_class.joblib.__name__ == "joblib"  # left whole: it subclassed joblib's
        assert uses_class.P.__mro__[1].__module__ == "joblib.parallel"
        print([str(w.message) for w in caught])
        """,
        path=[tmp_path],
    )
    assert "uses_class" in out.stdout and "uses_module" not in out.stdout


def test_install_is_idempotent_and_uninstall_restores() -> None:
    _python(
        """
        import sys, joblib_rs
        from joblib_rs._install import _JoblibFinder
        joblib_rs.install(); joblib_rs.install()
        assert sum(isinstance(f, _JoblibFinder) for f in sys.meta_path) == 1
        import joblib
        assert joblib.__version__ == "1.6.0"
        joblib_rs.uninstall(); joblib_rs.uninstall()
        assert not any(isinstance(f, _JoblibFinder) for f in sys.meta_path)
        assert "JOBLIB_RS_INSTALL" not in __import__("os").environ
        import joblib
        assert joblib.Parallel.__module__ == "joblib.parallel"
        """
    )


def test_scikit_learn_on_a_dask_cluster_through_install() -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("distributed")
    out = _python(
        """
        import joblib_rs
        joblib_rs.install()
        import joblib
        from dask.distributed import Client, LocalCluster, get_task_stream
        from sklearn.datasets import make_classification
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.model_selection import cross_val_score

        if __name__ == "__main__":
            x, y = make_classification(n_samples=300, random_state=0)
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                with joblib.parallel_config(backend="dask"), get_task_stream(client) as ts:
                    scores = cross_val_score(
                        RandomForestClassifier(n_estimators=10, random_state=0), x, y, cv=3)
            # The folds ran as tasks of the cluster (3 fits at least).
            print(len(scores), joblib.parallel_config.__module__, len(ts.data) >= 3)
        """
    )
    assert out.stdout.split() == ["3", "joblib_rs.parallel", "True"]
