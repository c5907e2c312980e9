"""Ctrl-C that TensorFlow cannot lose.

Python raises `KeyboardInterrupt` in whatever Python code runs when the signal
arrives. Inside TensorFlow that is often code called from C++ (a function being
traced, a property read through pybind11), which may clear the error or turn it
into another: measured on `trainers.fit`, a `SystemError: bad argument to
internal function` from `auto_control_deps`, and a run that went on to finish
with exit status 0 after Ctrl-C.

Within `remembered()`, Ctrl-C still raises at once, as Python's own handler
does, and is also noted: `raise_if_interrupted()` raises it again at the next
safe point (the `Interruptible` callback: every batch and epoch), and
`interrupted()` lets an entry point report another error as the interrupt that
caused it.
"""

import contextlib
import signal
import threading

_interrupted = threading.Event()


def _handler(signum, frame):
    del signum, frame
    _interrupted.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembered():
    """Notes every Ctrl-C within (see the module). Does nothing outside the main thread, or where SIGINT is not
    Python's default handler (ignored in a background job, or handled by the caller, or by an outer `remembered`)
    or a start-up handler marked `replaceable_at_start` (the `trainers` commands' before their work begins)."""
    current = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not (
            current is signal.default_int_handler or getattr(current, "replaceable_at_start", False)):
        yield
        return
    _interrupted.clear()
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def interrupted():
    """Whether Ctrl-C was pressed within the current `remembered()`."""
    return _interrupted.is_set()


def raise_if_interrupted():
    """Raises `KeyboardInterrupt` if Ctrl-C was pressed within the current `remembered()` (again, where the first
    was lost)."""
    if _interrupted.is_set():
        raise KeyboardInterrupt
