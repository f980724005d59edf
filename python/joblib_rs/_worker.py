"""A worker of the joblib-rs process pool: ``python -m joblib_rs._worker``, or :func:`boot`.

The Rust pool starts this module with its socket on file descriptor 3 and speaks
length-prefixed frames (``docs/pool.md``): an INIT frame with the parent's settings (among
them the array policy for results), then TASK frames holding pickled callables. Each task is
answered by a DONE frame (the return value, pickled once by ``_task_pickle.dumps_result``) or
a FAILED frame (``_task_pickle.dumps_failure``: the exception and its formatted traceback).
The worker exits when its socket closes or on a SHUTDOWN frame; Linux's parent-death signal,
which the worker arms first thing (``_core.die_with_parent``), ends it if the parent dies
mid-task.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import pickle
import signal
import struct
import sys
from types import ModuleType
from typing import Any, BinaryIO

from joblib_rs import _core
from joblib_rs._task_pickle import ArrayPolicy, dumps_failure, dumps_result, loads_task

WORKER_FD = 3
HEADER = struct.Struct("<QBQ")  # length of the rest, kind, task id
# Frame kinds are defined once, in Rust (joblib-core's FrameKind).
_KINDS = _core.POOL_FRAME_KINDS
INIT, TASK, SHUTDOWN = _KINDS["INIT"], _KINDS["TASK"], _KINDS["SHUTDOWN"]
READY, DONE, FAILED = _KINDS["READY"], _KINDS["DONE"], _KINDS["FAILED"]


def _read_frame(stream: BinaryIO) -> tuple[int, int, bytes] | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    length, kind, task_id = HEADER.unpack(header)
    payload = stream.read(length - 9)
    if len(payload) != length - 9:
        return None
    return kind, task_id, payload


def _write_all(data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(WORKER_FD, view) :]


def _send(kind: int, task_id: int, payload: bytes = b"") -> None:
    # The socket is used as a plain file descriptor: the socket module costs the worker
    # several milliseconds of imports before its first task.
    header = HEADER.pack(9 + len(payload), kind, task_id)
    if len(payload) <= 1 << 16:
        # One write, so the parent wakes once per frame; copying a small payload is cheaper.
        _write_all(header + payload)
    else:
        _write_all(header)
        _write_all(payload)


def _apply_init(settings: dict) -> ArrayPolicy | None:
    """Applies the parent's settings; returns the array policy for results."""
    sys.path[:] = settings.get("sys_path", sys.path)
    import multiprocessing

    process = multiprocessing.current_process()
    # Named as loky names its workers: code (and logs) inspecting the process see the same.
    process.name = f"LokyProcess-{os.getpid()}"
    authkey = settings.get("authkey")
    if authkey is not None:
        process.authkey = authkey
    log_level = settings.get("mp_log_level")
    if log_level is not None:
        # The parent called multiprocessing.util.log_to_stderr(): log here too, as loky's
        # workers (multiprocessing children) do.
        from multiprocessing import util

        util.log_to_stderr(log_level)
        util.info("child process calling self.run()")
    initializer = settings.get("initializer")
    if initializer is not None:
        func, args = pickle.loads(initializer)
        func(*args)
    return settings.get("array_policy")


def main() -> None:
    # First: end with the parent (the spawn itself could not arrange it, see docs/pool.md).
    _core.die_with_parent()
    os.environ.pop("JOBLIB_RS_PARENT_PID", None)
    # Ctrl-C reaches the whole process group; the parent decides what happens to the tasks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Tells joblib-rs code running here that it is inside a worker (no nested process pools).
    os.environ["JOBLIB_RS_WORKER"] = "1"
    stream = open(WORKER_FD, "rb", buffering=1 << 16, closefd=False)
    first = _read_frame(stream)
    if first is None or first[0] != INIT:
        return
    policy = _apply_init(pickle.loads(first[2]))
    _send(READY, 0, str(os.getpid()).encode())
    while True:
        frame = _read_frame(stream)
        if frame is None or frame[0] != TASK:
            return
        _, task_id, payload = frame
        try:
            result = loads_task(payload)()
        except BaseException as exc:  # every failure goes back to the parent
            reply_kind, reply = FAILED, dumps_failure(exc)
        else:
            try:
                reply_kind, reply = DONE, dumps_result(result, policy)
            except BaseException as exc:
                reply_kind, reply = FAILED, dumps_failure(exc)
            del result
        try:
            _send(reply_kind, task_id, reply)
        except OSError:
            return  # the parent is gone


def boot(package: ModuleType, spec: Any) -> None:
    """Run the worker with ``joblib_rs`` imported bare (``_process_pool._WORKER_BOOT``).

    Asked for a name it lacks, the bare package imports the submodule of that name (what
    ``from joblib_rs import numpy_pickle`` needs), else runs its ``__init__`` first (a task
    using ``joblib_rs.Parallel``, a pickle referring to ``joblib_rs.<name>``...).
    """

    def finish_package(name: str) -> Any:
        if importlib.machinery.PathFinder.find_spec(f"joblib_rs.{name}", package.__path__):
            return importlib.import_module(f"joblib_rs.{name}")
        package.__dict__.pop("__getattr__", None)
        spec.loader.exec_module(package)
        return getattr(package, name)

    if "__version__" not in vars(package):  # not initialised by whoever imported it first
        package.__getattr__ = finish_package  # type: ignore[attr-defined]
    main()


if __name__ == "__main__":
    main()
