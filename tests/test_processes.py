"""The tests' forked commands behave as `python -m` / `python -c` would: status, output, folder, environment."""

import os
import signal
import subprocess
import sys

import pytest

from tests import processes

pytestmark = pytest.mark.slow  # The first command starts the worker's server (a TensorFlow import, about 3 s).


def test_exit_status_output_and_traceback_as_a_fresh_interpreter(tmp_path):
    result = processes.run_code("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    failed = processes.run_code("raise RuntimeError('boom')")
    assert failed.returncode == 1 and failed.stderr.strip().splitlines()[-1] == "RuntimeError: boom"
    assert "Traceback (most recent call last)" in failed.stderr
    message = processes.run_code("import sys; sys.exit('bad thing')")
    assert (message.returncode, message.stderr) == (1, "bad thing\n")
    killed = processes.run_code("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.returncode == -signal.SIGKILL
    exit_handler = processes.run_code("import atexit; atexit.register(lambda: print('handler ran'))")
    assert exit_handler.stdout == "handler ran\n"


def test_folder_arguments_environment_and_a_clean_import_state(tmp_path):
    code = ("import json, os, sys; print(json.dumps([os.getcwd(), sys.argv, os.environ.get('NNGK_PROBE'), "
            "'keras_nngk' in sys.modules, 'tensorflow' in sys.modules]))")
    result = processes.run_code(code, "a", "--b=1", cwd=tmp_path, env={**processes.ENV, "NNGK_PROBE": "x"})
    assert result.returncode == 0, result.stderr
    # keras_nngk is not imported before the command imports it (TensorFlow is, by the server: its point).
    preloaded = "false" if os.environ.get("NNGK_TEST_FORK") == "0" else "true"
    assert result.stdout.strip() == f'["{tmp_path}", ["-c", "a", "--b=1"], "x", false, {preloaded}]'
    module = processes.run_module("trainers.predict", "--model=/no/such/model.tflite", "image.png")
    direct = subprocess.run([sys.executable, "-m", "trainers.predict", "--model=/no/such/model.tflite",
                             "image.png"], cwd=processes.ROOT, env=processes.ENV, capture_output=True, text=True,
                            timeout=300)
    assert module.returncode == direct.returncode == 2
    assert module.stderr.strip().splitlines()[-1] == direct.stderr.strip().splitlines()[-1]
    assert module.stdout == direct.stdout


def test_a_command_past_its_timeout_is_killed():
    with pytest.raises(subprocess.TimeoutExpired):
        processes.run_code("import time; print('started', flush=True); time.sleep(60)", timeout=1)
    assert processes.run_code("print('next')").stdout == "next\n"  # The server serves the next command.
