"""How many CPUs this process may really use.

``os.cpu_count()`` reports the machine; a container or ``taskset`` usually grants less. The
usable count is the smallest of: the machine's logical CPUs, the CPU affinity mask, the cgroup
CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), and ``LOKY_MAX_CPU_COUNT`` (read by
joblib's loky too, so the same knob works for both).
"""

from __future__ import annotations

import math
import os
import warnings
from functools import lru_cache

__all__ = ["cpu_count"]

_CGROUP_ROOT = "/sys/fs/cgroup"


def cpu_count(only_physical_cores: bool = False) -> int:
    """Return the number of CPUs the current process can use.

    Takes into account the CPU affinity mask (for instance set with ``taskset``), Linux CFS
    quotas of cgroups v1 and v2 (as set by container runtimes such as docker with ``--cpus``)
    and the ``LOKY_MAX_CPU_COUNT`` environment variable. The result is at least 1.

    Parameters
    ----------
    only_physical_cores : bool, default=False
        If True, do not count hyperthreading / SMT siblings. When the user constraints above
        already grant fewer CPUs than the machine has, those constraints win.

    Returns
    -------
    int
        The number of usable CPUs.
    """
    os_count = _machine_count()
    user_count = min(os_count, _affinity_count(), _system_cgroup_count(), _env_count())
    if only_physical_cores:
        if user_count < os_count:
            return max(user_count, 1)
        physical = _physical_cores()
        if physical is None:
            warnings.warn(
                "Could not find the number of physical cores; using the number of logical "
                f"cores ({user_count}) instead.",
                stacklevel=2,
            )
            return max(user_count, 1)
        return max(min(physical, user_count), 1)
    return max(user_count, 1)


@lru_cache(maxsize=1)
def _machine_count() -> int:
    # os.cpu_count() reads sysfs on every call (about 9 us): the machine's CPUs do not change
    # under a running process in any way joblib cares about.
    return os.cpu_count() or 1


def _affinity_count() -> int:
    # os.process_cpu_count (3.13) and sched_getaffinity both honour the affinity mask.
    getter = getattr(os, "process_cpu_count", None)
    if getter is not None:
        n = getter()
        if n:
            return n
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return _machine_count()


def _env_count() -> int:
    value = os.environ.get("LOKY_MAX_CPU_COUNT", "").strip()
    if not value:
        return _machine_count()
    try:
        n = float(value)
    except ValueError:
        return _machine_count()
    if n <= 0:
        return _machine_count()
    # A fraction still leaves one whole CPU usable.
    return max(int(n), 1)


@lru_cache(maxsize=1)
def _system_cgroup_count() -> int:
    # The process's own quota is set when its container starts: read the files once, not on
    # every Parallel call (three file reads cost more than a warm call's dispatch).
    return _cgroup_count(_CGROUP_ROOT)


def _cgroup_count(root: str | os.PathLike = _CGROUP_ROOT) -> int:
    """CPU limit of the cgroup quota, rounded up; the machine count when there is none."""
    quota = _cgroup_quota(root)
    if quota is None:
        return _machine_count()
    return max(math.ceil(quota), 1)


def _cgroup_quota(root: str | os.PathLike) -> float | None:
    """Quota divided by period, or None when unlimited or unknown."""
    try:
        fields = _read(root, "cpu.max").split()
    except OSError:
        fields = []
    if len(fields) == 2:
        if fields[0] == "max":
            return None
        try:
            quota, period = int(fields[0]), int(fields[1])
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    for sub in ("cpu", "cpu,cpuacct", "cpuacct,cpu", ""):
        folder = os.path.join(root, sub)
        try:
            quota = int(_read(folder, "cpu.cfs_quota_us"))
            period = int(_read(folder, "cpu.cfs_period_us"))
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def _read(folder: str | os.PathLike, name: str) -> str:
    with open(os.path.join(folder, name)) as fh:
        return fh.read()


@lru_cache(maxsize=1)
def _physical_cores() -> int | None:
    """Distinct (package, core) pairs of /proc/cpuinfo restricted to the usable CPUs."""
    try:
        text = _read("/proc", "cpuinfo")
    except OSError:
        return None
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = None
    cores = set()
    for block in text.split("\n\n"):
        info = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
        if "processor" not in info:
            continue
        if allowed is not None and int(info["processor"]) not in allowed:
            continue
        if "core id" not in info:
            return None
        cores.add((info.get("physical id", "0"), info["core id"]))
    return len(cores) or None
