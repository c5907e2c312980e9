"""Commands run as separate processes in the tests, without paying TensorFlow's import for each.

`run_module("trainers.fit", "--epochs=1")` and `run_code("import ...")` return a
`subprocess.CompletedProcess` as `subprocess.run([sys.executable, "-m", ...],
capture_output=True, text=True)` would. They are forked from a server that has
already imported TensorFlow (tests/fork_server.py, one per pytest worker): every
command still starts from a process in which nothing of keras_nngk or of the
trainers commands is imported, and has its own working folder, environment,
stdout, stderr and exit status, but starts in milliseconds instead of about 3 s.
(The suite runs about 40 such commands.)

Where what is tested is the process itself (kills, signals, the start-up lines
a terminal shows, several processes at once), tests call `subprocess` directly.
`NNGK_TEST_FORK=0` makes these helpers start a new interpreter too.
"""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
_SERVER = {}


def _server():
    """The worker's fork server, started on first use (None when it cannot start)."""
    process = _SERVER.get("process")
    if process is not None and process.poll() is None:
        return process
    # As a module from the repository: the folder of the script would put tests/trainers/ first on sys.path.
    process = subprocess.Popen([sys.executable, "-m", "tests.fork_server"], cwd=ROOT, env=ENV,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if not process.stdout.readline().startswith('{"ready"'):
        process.kill()
        return None
    _SERVER["process"] = process
    atexit.register(process.kill)
    return process


def _run(command, request, cwd, env, timeout):
    environment = ENV if env is None else env
    cwd = str(cwd or ROOT)
    server = None if os.environ.get("NNGK_TEST_FORK") == "0" else _server()
    if server is None:
        return subprocess.run([sys.executable, *command], cwd=cwd, env=environment, capture_output=True, text=True,
                              timeout=timeout)
    folder = tempfile.mkdtemp(prefix="nngk-command-")
    try:
        outputs = {name: os.path.join(folder, name) for name in ("stdout", "stderr")}
        request = {**request, **outputs, "cwd": cwd, "env": dict(environment), "timeout": timeout}
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        reply = json.loads(server.stdout.readline())
        texts = {}
        for name, path in outputs.items():
            with open(path, errors="replace") as handle:
                texts[name] = handle.read()
        if reply["returncode"] == "timeout":
            raise subprocess.TimeoutExpired([sys.executable, *command], timeout, texts["stdout"], texts["stderr"])
        return subprocess.CompletedProcess([sys.executable, *command], reply["returncode"], texts["stdout"],
                                           texts["stderr"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_module(module, *args, cwd=None, env=None, timeout=600):
    """As `python -m module args...` in `cwd` (default: the repository) with `env` (default: ENV)."""
    return _run(["-m", module, *args], {"module": module, "args": list(args)}, cwd, env, timeout)


def run_path(path, *args, cwd=None, env=None, timeout=600):
    """As `python path args...` in `cwd` (default: the repository) with `env` (default: ENV)."""
    return _run([path, *args], {"path": path, "args": list(args)}, cwd, env, timeout)


def run_code(code, *args, cwd=None, env=None, timeout=600):
    """As `python -c code args...` in `cwd` (default: the repository) with `env` (default: ENV)."""
    return _run(["-c", code, *args], {"code": code, "args": list(args)}, cwd, env, timeout)
