"""``joblib.externals``: the vendored packages' import paths, served by joblib-rs.

joblib vendors loky and cloudpickle here; joblib-rs depends on the cloudpickle package and
runs its own process pool, so ``externals.cloudpickle`` is cloudpickle itself and
``externals.loky`` is a loky-compatible face over joblib-rs's Rust pool.
"""
