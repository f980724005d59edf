"""``python -m joblib_rs``: the ``joblib-rs`` command line."""

from joblib_rs.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
