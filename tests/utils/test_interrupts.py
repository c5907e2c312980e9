"""`kn.utils.interrupts`: a Ctrl-C that code in between swallows (as TensorFlow's C++ does, measured: a run that
finished after Ctrl-C) or turns into another error (a `SystemError` from tracing) still stops the run."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tf_keras as keras

from keras_nngk.training import callbacks as callbacks_lib
from keras_nngk.training import loop as loop_lib
from keras_nngk.utils import interrupts
from tests import processes
from trainers import common


@pytest.fixture(autouse=True)
def python_handles_sigint():
    """Python's own SIGINT handler, as in a terminal: a background job (CI runs the tests under nohup) starts with
    SIGINT ignored, which `remembered` rightly leaves alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _press_ctrl_c_and_swallow_it():
    """Ctrl-C delivered while code that drops the exception runs (what TensorFlow's C++ boundary does)."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # Python runs the handler here at the latest.
    except KeyboardInterrupt:
        return True
    return False


def test_a_swallowed_ctrl_c_is_raised_again_and_the_handler_is_restored():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts.remembered():
        interrupts.raise_if_interrupted()  # Nothing pressed: no-op.
        assert not interrupts.interrupted()
        assert _press_ctrl_c_and_swallow_it()  # Still raised at once, as Python's own handler does.
        assert interrupts.interrupted()
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts.remembered():  # Each use starts afresh.
        assert not interrupts.interrupted()


def test_not_installed_off_the_main_thread_or_over_another_handler():
    seen = []

    def in_thread():
        with interrupts.remembered():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # A background job's disposition is kept.
    try:
        with interrupts.remembered():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_commands_start_up_handler_is_replaced_then_the_default_restored(monkeypatch):
    import trainers  # pylint: disable=import-outside-toplevel
    assert not trainers._starting_a_command()  # pylint: disable=protected-access  (pytest imported it: no handler)
    for program, starting in (("-m", True), ("/usr/bin/nngk-fit", True), ("/usr/bin/pytest", False), ("", False)):
        monkeypatch.setattr(sys, "argv", [program])
        assert trainers._starting_a_command() is starting, program  # pylint: disable=protected-access
    signal.signal(signal.SIGINT, trainers._interrupted_while_starting)  # pylint: disable=protected-access
    try:
        with interrupts.remembered():
            assert signal.getsignal(signal.SIGINT) is interrupts._handler  # pylint: disable=protected-access
    finally:
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.mark.slow
def test_ctrl_c_while_a_command_starts_is_one_line_and_status_130():
    """What `python -m trainers.<name>` does on Ctrl-C during TensorFlow's import (seconds): no traceback."""
    code = ("import sys; sys.argv[0] = '-m'; import trainers, os, signal, time; "
            "os.kill(os.getpid(), signal.SIGINT); time.sleep(60)")
    result = subprocess.run([sys.executable, "-c", code], cwd=processes.ROOT, env=processes.ENV, capture_output=True,
                            text=True, timeout=300, check=False,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == 130, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "error: interrupted while starting; nothing was written."


def test_entry_points_report_an_interrupt_turned_into_another_error_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        with common.user_errors(lambda: "rerun to resume."):
            _press_ctrl_c_and_swallow_it()
            raise SystemError("bad argument to internal function")  # What tracing raised after Ctrl-C.
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == "error: interrupted; rerun to resume."
    with pytest.raises(SystemError):  # The same error without Ctrl-C is not an interrupt.
        with common.user_errors():
            raise SystemError("bad argument to internal function")


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class _SwallowedCtrlC(keras.callbacks.Callback):
    """Presses Ctrl-C during batch `at` and swallows it; counts the batches that ended."""

    def __init__(self, at):
        super().__init__()
        self.at, self.ended = at, 0

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.at:
            _press_ctrl_c_and_swallow_it()

    def on_train_batch_end(self, batch, logs=None):
        self.ended += 1


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_training_stops_at_the_end_of_the_batch_where_ctrl_c_was_swallowed(loop):
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = _model()
    press = _SwallowedCtrlC(at=3)
    with interrupts.remembered():
        with pytest.raises(KeyboardInterrupt):
            if loop == "fit":
                model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False,
                          callbacks=[press, callbacks_lib.Interruptible()])
            else:
                import tensorflow as tf  # pylint: disable=g-import-not-at-top
                dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
                custom = loop_lib.CustomLoop(model, keras.optimizers.SGD(), tf.distribute.get_strategy(), verbose=0)
                custom.fit(dataset, 2, 10, callbacks=[press, callbacks_lib.Interruptible()])
    assert press.ended == 4  # Batches 0-3: the one where Ctrl-C was pressed ended, no other began.
    with interrupts.remembered():  # Not pressed: the callback changes nothing.
        history = _model().fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callbacks_lib.Interruptible()])
    assert len(history.history["loss"]) == 2
