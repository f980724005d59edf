"""Locations and options of the object-storage store: which URLs it serves, what its
``backend_options`` mean.

``Memory("s3://bucket/prefix", backend_options={...})`` ─► :func:`remote_scheme` (the URL's
scheme, checked) ─► ``ObjectStoreBackend.configure`` reads the store's own options (leases,
access times, ``compress``) and hands the rest to :func:`client_options`: the network
timeouts and the cloud client's keys (``endpoint``, ``region``, credentials...) as text, for
``_core.RemoteStore``. Credentials otherwise come from each cloud's environment variables.
"""

from __future__ import annotations

from typing import Any

from joblib_rs import _core

__all__ = [
    "DEFAULT_ACCESS_TIME_INTERVAL",
    "DEFAULT_LEASE_TTL",
    "REMOTE_SCHEMES",
    "client_options",
    "remote_scheme",
]

#: URL schemes served by :class:`~joblib_rs._remote_store.ObjectStoreBackend` (``memory://``
#: is an in-process store, for tests and examples).
REMOTE_SCHEMES = frozenset({"s3", "s3a", "gs", "az", "abfs", "abfss", "adl", "azure", "memory"})
#: Default lease duration (seconds): a crashed holder blocks its key at most this long. A
#: live holder renews its lease every third of it.
DEFAULT_LEASE_TTL = 60.0
#: A hit refreshes the entry's access-time marker at most this often per process (seconds).
DEFAULT_ACCESS_TIME_INTERVAL = 3600.0
#: Leases without an entry older than this are leftovers of killed processes (seconds).
_STALE_LEASE_AGE = 3600.0
#: Options of this backend; every other ``backend_options`` key goes to the cloud client
#: (``endpoint``, ``region``, ``access_key_id``, ``allow_http``...).
_OWN_OPTIONS = frozenset(
    {
        "compress",
        "mmap_mode",
        "lock_timeout",
        "lease_ttl",
        "access_time_interval",
        "max_retries",
        "retry_timeout",
        "connect_timeout",
        "range_size",
    }
)
#: The store's options that configure the client's network behaviour.
_CLIENT_TIMEOUTS = ("max_retries", "retry_timeout", "connect_timeout", "range_size")


def remote_scheme(location: str) -> str | None:
    """The scheme of a ``scheme://`` location served by the object store, None for a path.

    Raises
    ------
    ValueError
        For a URL whose scheme no store handles (never treated as a local folder).
    """
    scheme = _core.url_scheme(location)
    if scheme is None:
        return None
    if scheme not in REMOTE_SCHEMES:
        raise ValueError(
            f"Unsupported cache location {location!r}: unknown URL scheme '{scheme}://'. "
            f"Supported: {', '.join(f'{s}://' for s in sorted(REMOTE_SCHEMES))}, or a local "
            "path."
        )
    return scheme


def client_options(options: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Split ``backend_options`` for the Rust client: ``(timeouts, cloud options)``.

    The timeouts are the store's own network options that are set (keyword arguments of
    ``_core.RemoteStore``); the cloud options are every key that is not the store's own, as
    sorted ``(key, text)`` pairs (booleans as ``"true"``/``"false"``), None values left out.
    """
    timeouts = {key: options[key] for key in _CLIENT_TIMEOUTS if options.get(key) is not None}
    cloud = sorted(
        (str(key), _option_text(value))
        for key, value in options.items()
        if key not in _OWN_OPTIONS and value is not None
    )
    return timeouts, cloud


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
