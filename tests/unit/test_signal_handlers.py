"""runtime.signal_handlers_kept: the handlers Ray Train and Tune leave installed are put back."""
from __future__ import annotations

import signal
import threading

import pytest

from fer_ray import runtime


def test_handlers_set_inside_the_block_are_put_back_and_ctrl_c_raises_again():
    def swallow(signum, frame):  # as Ray Train's handler does with a Ctrl-C after its run
        pass

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)
    with runtime.signal_handlers_kept(signal.SIGINT, signal.SIGUSR1):
        signal.signal(signal.SIGINT, swallow)
        signal.signal(signal.SIGUSR1, swallow)
        signal.raise_signal(signal.SIGINT)  # swallowed
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)) == before
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_handlers_are_put_back_when_the_block_raises():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError), runtime.signal_handlers_kept(signal.SIGINT):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise RuntimeError("the run failed")
    assert signal.getsignal(signal.SIGINT) is before


def test_outside_the_main_thread_nothing_is_set_and_nothing_fails():
    failures = []

    def block():
        try:
            with runtime.signal_handlers_kept(signal.SIGINT):
                pass
        except Exception as err:  # shown by the assertion below
            failures.append(err)

    thread = threading.Thread(target=block)
    thread.start()
    thread.join()
    assert failures == [] and runtime.in_main_thread()
