"""Fault injection on the real entry point: runs killed (SIGKILL, SIGINT) at several points, then rerun.

Each rerun must leave a whole run folder whose metrics equal those of an
uninterrupted run of the same config, bit for bit (resume restores the data
order, the optimizer state and the BatchNorm recalibration exactly). Also: one
writer per workdir, and a disk that is full or read-only gets one line.

Every run is a process of its own that the kernel kills: forked after
TensorFlow's import (tests/processes.py), or, for the run interrupted with
Ctrl-C and the lock holder, started with subprocess as a terminal would.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from keras_nngk.utils import files
from tests import processes

ROOT, ENV = processes.ROOT, processes.ENV
ARGS = ["--dataset=digits", "--epochs=3", "--verbose=0"]
WHOLE_RUN = ("config.json", "metrics.json", "history.json", "model.keras", "backbone.keras",
             "saved_model/saved_model.pb", "training.png", "class_names.json", "preprocessing.json")

# Runs trainers.fit in a child process that kills itself at a chosen point (NNGK_FAULT=<point>:<n>).
FAULTY_FIT = r"""
import os, signal, sys, threading
point, count = os.environ["NNGK_FAULT"].split(":")
count = int(count)
calls = []

def die(delay=0.0):
    if delay:
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
    else:
        os.kill(os.getpid(), signal.SIGKILL)

import tensorflow as tf
import tf_keras as keras
if point == "checkpoint":  # While the n-th checkpoint is being written.
    original_save = tf.train.CheckpointManager.save
    def save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            die(0.003)
        return original_save(self, *args, **kwargs)
    tf.train.CheckpointManager.save = save
elif point == "final_save":  # After the model file is written, before it is renamed to its real name.
    original_save = keras.Model.save
    def save(self, filepath, *args, **kwargs):
        result = original_save(self, filepath, *args, **kwargs)
        if str(filepath).endswith("model.keras"):
            die()
        return result
    keras.Model.save = save
elif point == "epoch":  # Mid-way through the n-th epoch.
    from keras_nngk.training import callbacks
    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == count:
            die(0.3)
    callbacks.HistoryLog.on_epoch_begin = on_epoch_begin

from absl import app
from trainers import fit
app.run(fit.main, argv=["trainers.fit"] + sys.argv[1:])
"""


def fit(workdir, *extra, fault=None, timeout=600):
    """`python -m trainers.fit` (or, with `fault`, the self-killing FAULTY_FIT) in a process of its own."""
    args = [*ARGS, f"--workdir={workdir}", *extra]
    if fault:
        return processes.run_code(FAULTY_FIT, *args, env=dict(ENV, NNGK_FAULT=fault), timeout=timeout)
    return processes.run_module("trainers.fit", *args, timeout=timeout)


def metrics_of(workdir):
    with open(os.path.join(workdir, "metrics.json")) as handle:
        metrics = json.load(handle)
    for key in ("train_seconds", "initial_epoch"):  # What legitimately differs between a resumed and a whole run.
        metrics.pop(key)
    return metrics


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("whole") / "run")
    result = fit(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return metrics_of(workdir)


def assert_whole(workdir):
    for name in WHOLE_RUN:
        assert os.path.exists(os.path.join(workdir, name)), name
    leftovers = [name for directory in (workdir, os.path.join(workdir, "checkpoints")) for name in os.listdir(directory)
                 if name.startswith(files.TEMPORARY_PREFIX) or name.endswith("_temp")]
    assert not leftovers and not os.path.exists(os.path.join(workdir, files.WorkdirLock.FILE_NAME))


@pytest.mark.slow
def test_killed_runs_complete_with_the_metrics_of_a_whole_run(tmp_path, uninterrupted):
    """One run folder killed at three points in turn, each rerun resuming from what the last one left: mid-way
    through epoch 2, while writing a checkpoint, after the model file is written but before it gets its real name.
    (One chain instead of three kill-and-rerun pairs: four processes instead of six.)"""
    workdir = str(tmp_path / "run")
    for fault in ("epoch:2", "checkpoint:1", "final_save:1"):  # The checkpoint of epoch 2 is the rerun's first.
        killed = fit(workdir, fault=fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr[-3000:])
        assert not os.path.exists(os.path.join(workdir, "metrics.json")), fault
        assert os.path.exists(os.path.join(workdir, "checkpoints", "checkpoint")), fault  # Epoch 1's at least.
    # Never a half-written model under its real name.
    assert not os.path.exists(os.path.join(workdir, "model.keras"))
    assert any(name.startswith(files.TEMPORARY_PREFIX) for name in os.listdir(workdir))
    # An unfinished run is refused in one line by evaluate (it used to crash on a partial model.keras; the other
    # kill points leave no model file at all, which the same check refuses).
    evaluation = processes.run_module("trainers.evaluate", f"--model={workdir}", timeout=300)
    assert evaluation.returncode == 2 and "did not finish" in evaluation.stderr.strip().splitlines()[-1]
    resumed = fit(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_whole(workdir)
    assert "Resuming" in resumed.stderr  # What the person who reran it reads.
    with open(os.path.join(workdir, "metrics.json")) as handle:
        assert json.load(handle)["initial_epoch"] >= 2  # Resumed (a run from scratch has the same metrics).
    assert metrics_of(workdir) == uninterrupted  # History, accuracies and sigma: bit for bit.


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_the_rerun_completes(tmp_path, uninterrupted):
    workdir = str(tmp_path / "run")
    # A shell without job control starts background jobs with SIGINT ignored, and Python then keeps ignoring it: give
    # the run the default disposition, as a terminal would, whatever shell started the tests.
    process = subprocess.Popen([sys.executable, "-m", "trainers.fit", *ARGS, f"--workdir={workdir}"], cwd=ROOT,
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(workdir, "history.json")) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == f"error: interrupted; rerun with --workdir={workdir} to resume from " \
                                              "its last checkpoint."
    assert "Traceback" not in stderr
    resumed = fit(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_whole(workdir)
    assert metrics_of(workdir) == uninterrupted


@pytest.mark.slow
def test_second_writer_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    workdir = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, "-m", "trainers.fit", "--dataset=digits", "--epochs=50", "--verbose=0",
                              f"--workdir={workdir}"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not os.path.exists(os.path.join(workdir, "config.json")) and time.time() < deadline:
            time.sleep(0.05)
        second = fit(workdir)
        last = second.stderr.strip().splitlines()[-1]
        assert second.returncode == 2 and "is in use by trainers.fit of process" in last, second.stderr[-2000:]
        assert f"process {first.pid} " in last
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with files.WorkdirLock(workdir):  # The kernel released the killed holder's lock.
        pass


def _mount_tmpfs(path, options):
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()[:100]})")


@pytest.mark.slow
@pytest.mark.parametrize("options, message", [("size=4m", "the disk is full"),
                                              ("ro", "the file system is read-only")])
def test_full_or_read_only_disk_gets_one_line(tmp_path, options, message):
    mount_point = tmp_path / "disk"
    _mount_tmpfs(mount_point, options)
    try:
        result = fit(str(mount_point / "run"))
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {message}") and "rerun" in last, last
    assert "Traceback" not in result.stderr
