"""A Ctrl-C that CPython drops (raised inside a destructor) still stops a parallel call."""

import signal

import pytest

from joblib_rs._interrupts import raise_if_interrupted, watch_interrupts


class _InterruptInDestructor:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_interrupt_swallowed_by_a_destructor_is_raised_at_the_next_check():
    before = signal.getsignal(signal.SIGINT)
    with watch_interrupts():
        victim = _InterruptInDestructor()
        del victim  # the KeyboardInterrupt raised in __del__ is printed and dropped
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
        raise_if_interrupted()  # raised once only
    assert signal.getsignal(signal.SIGINT) is before


def test_handler_restored_and_nothing_recorded_without_interrupt():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with watch_interrupts():
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            raise_if_interrupted()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_custom_handler_is_left_alone():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda *_: seen.append(1))
    try:
        with watch_interrupts():
            signal.raise_signal(signal.SIGINT)
            raise_if_interrupted()
        assert seen == [1]
    finally:
        signal.signal(signal.SIGINT, previous)
