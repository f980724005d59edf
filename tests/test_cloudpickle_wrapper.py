"""wrap_non_picklable_objects makes lambdas and local classes survive plain pickle."""

import pickle

import pytest

from joblib_rs._cloudpickle_wrapper import wrap_non_picklable_objects


def test_wrapped_lambda_survives_plain_pickle():
    offset = 3
    f = lambda x: x + offset  # noqa: E731
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(f)
    wrapped = wrap_non_picklable_objects(f)
    assert wrapped(1) == 4
    clone = pickle.loads(pickle.dumps(wrapped))
    assert clone(10) == 13
    assert pickle.loads(pickle.dumps(clone))(0) == 3  # still wrapped: travels again
    bare = pickle.loads(pickle.dumps(wrap_non_picklable_objects(f, keep_wrapper=False)))
    assert bare(1) == 4 and not hasattr(bare, "_obj")


def test_decorator_on_local_function_keeps_name_and_doc():
    @wrap_non_picklable_objects
    def local(x):
        """Doubles."""
        return 2 * x

    assert local.__name__ == "local"
    assert local.__doc__ == "Doubles."
    assert pickle.loads(pickle.dumps(local))(21) == 42


def test_wrapped_local_class_instances_pickle():
    @wrap_non_picklable_objects
    class Local:
        def __init__(self, value):
            self.value = value

        def double(self):
            return 2 * self.value

    obj = Local(5)
    clone = pickle.loads(pickle.dumps(obj))
    assert clone.double() == 10
    assert clone.value == 5


def test_fallback_wrapper_returns_the_object_itself():
    from joblib_rs._cloudpickle_wrapper import _my_wrap_non_picklable_objects

    def local(x):
        return x + 1

    assert _my_wrap_non_picklable_objects(local) is local
    assert _my_wrap_non_picklable_objects(local, keep_wrapper=False)(1) == 2
