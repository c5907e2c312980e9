"""Runs Python commands for the tests in fresh processes forked after TensorFlow's import (see tests/processes.py).

Started by `tests.processes` once per pytest worker: it imports TensorFlow as the
commands do (the `trainers` package, which silences TensorFlow's start-up lines)
and tf_keras (about 3 s, what every command would spend first), creates no
TensorFlow context or thread pool, then serves requests read as JSON lines on
stdin, one at a time. For each it forks a child that behaves as
`python -m <module> <args>`, `python <path> <args>` or `python -c <code> <args>`
started in `cwd`: its stdin is /dev/null, its stdout and stderr go to the files
named in the request, an uncaught exception prints its traceback and exits 1,
`sys.exit` sets the exit status, and exit handlers run. The reply is the child's
exit status (negative: killed by that signal), or `"timeout"` after killing it.

Nothing of keras_nngk or of the `trainers` commands is imported here: each child
imports what its command imports, as a fresh interpreter does.
"""

import atexit
import importlib
import json
import os
import runpy
import signal
import sys
import time
import traceback


def _preload():
    importlib.import_module("trainers")  # TensorFlow, with its start-up lines silenced, then tf_keras.
    importlib.import_module("tf_keras")


def _child(request, replies):
    """In the forked child: becomes the requested command; never returns."""
    code = 1
    try:
        replies.close()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        if "module" in request:
            sys.argv = [request["module"], *request["args"]]
            sys.path[0] = os.getcwd()  # As `python -m` does.
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        elif "path" in request:
            sys.argv = [request["path"], *request["args"]]
            sys.path[0] = os.path.dirname(os.path.abspath(request["path"]))  # As `python script.py` does.
            runpy.run_path(request["path"], run_name="__main__")
        else:
            sys.argv = ["-c", *request["args"]]
            sys.path[0] = ""  # As `python -c` does.
            exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})  # pylint: disable=exec-used
        code = 0
    except SystemExit as exit_request:
        if exit_request.code is None or isinstance(exit_request.code, int):
            code = exit_request.code or 0
        else:
            print(exit_request.code, file=sys.stderr)
            code = 1
    except BaseException:  # pylint: disable=broad-except  (as the interpreter reports an uncaught exception)
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()  # pylint: disable=protected-access
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)  # pylint: disable=protected-access


def _wait(pid, timeout):
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.01)


def main():
    _preload()
    replies = os.fdopen(os.dup(1), "w")  # The children's fd 1 is their own stdout.
    print(json.dumps({"ready": os.getpid()}), file=replies, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request, replies)
        print(json.dumps({"returncode": _wait(pid, request["timeout"])}), file=replies, flush=True)


if __name__ == "__main__":
    main()
