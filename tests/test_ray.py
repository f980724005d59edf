"""scikit-learn on ray through ``joblib_rs.install()`` and ray's own joblib backend.

ray is a large install, kept out of ``make test``: this module is skipped without it, and
``make compat`` installs ray (the ``ray`` extra) and runs it. The program runs in a fresh
interpreter, as a user's would: ``install()``, a local ``ray.init(num_cpus=2)``,
``ray.util.joblib.register_ray()``, then ``cross_val_score`` under
``parallel_config(backend="ray")``. (The same on a dask ``LocalCluster`` is
``test_install.py::test_scikit_learn_on_a_dask_cluster_through_install``.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip(
    "ray", reason="ray is not installed (pip install 'joblib-rs[ray]'; make compat runs this)"
)
pytest.importorskip("sklearn", reason="scikit-learn is not installed")

PROGRAM = """
import joblib_rs
joblib_rs.install()

import joblib
import ray
from ray.util.joblib import register_ray
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import cross_val_score


def accuracy_on_a_ray_actor(estimator, X, y):
    # Fails the fold unless it is scored on one of the actors of ray's pool.
    if ray.get_runtime_context().get_actor_id() is None:
        raise RuntimeError("not scored on a ray actor")
    return estimator.score(X, y)


ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
register_ray()
X, y = make_classification(n_samples=600, random_state=0)
with joblib.parallel_config(backend="ray"):
    scores = cross_val_score(
        RandomForestClassifier(n_estimators=20, random_state=0),
        X, y, cv=4, n_jobs=2, scoring=accuracy_on_a_ray_actor,
    )
local = cross_val_score(RandomForestClassifier(n_estimators=20, random_state=0), X, y, cv=4)
print(len(scores), list(scores) == list(local))
print(joblib.pool.PicklingPool.__bases__[0].__module__)


def failing_scorer(estimator, X, y):
    raise ValueError("scorer failed on purpose")


try:
    with joblib.parallel_config(backend="ray"):
        cross_val_score(RandomForestClassifier(n_estimators=5), X, y, cv=2, n_jobs=2,
                        scoring=failing_scorer, error_score="raise")
except ValueError as exc:  # the fold's error, with its type, from the actor
    print("raised", "on purpose" in str(exc), "failing_scorer" in str(exc.__cause__))
ray.shutdown()
"""


def test_scikit_learn_cross_val_score_on_ray_through_install() -> None:
    env = dict(os.environ)
    env.pop("JOBLIB_RS_INSTALL", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROGRAM)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.split("\n")
    # Four folds, scored on ray's actors, with the scores of a local run.
    assert lines[0] == "4 True", proc.stdout
    # ray's pool is what joblib-rs's MemmappingPool was built on.
    assert lines[1] == "ray.util.multiprocessing.pool", proc.stdout
    # A fold's error comes back with its type, message and the actor's traceback.
    assert lines[2] == "raised True True", proc.stdout
