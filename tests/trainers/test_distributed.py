"""tf.distribute: MirroredStrategy on two logical CPUs, and two MultiWorkerMirroredStrategy workers on localhost."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests import processes

ROOT, ENV = processes.ROOT, processes.ENV


@pytest.mark.slow
def test_mirrored_step_matches_single_device():
    # Its own process: the two logical CPUs must be set before TensorFlow's context starts.
    result = processes.run_path(os.path.join(ROOT, "tests", "trainers", "distributed_check.py"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["replicas"] == 2
    assert abs(values["single_loss"] - values["mirrored_loss"]) < 1e-5, values
    assert values["max_weight_difference"] < 1e-5, values
    # Centers written from the training pass: the same 64 rows (the batch's samples) as on one device, the rows of
    # both replicas' halves gathered, and both copies of the centers identical.
    assert len(values["single_written_rows"]) == 64
    assert values["mirrored_written_rows"] == values["single_written_rows"]
    assert values["center_copies"] == 2 and values["replicas_agree_on_written_centers"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


@pytest.mark.slow
def test_two_local_workers_match_one_process(tmp_path):
    # refresh_mode=embed in both: "auto" picks the training-pass centers on one process, not under multi_worker.
    args = ["-m", "trainers.fit", "--dataset=digits", "--epochs=2", "--verbose=0", "--recalibrate_batchnorm=false",
            "--refresh_mode=embed"]
    single = processes.run_module(*args[1:], f"--workdir={tmp_path / 'single'}", timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            [sys.executable, *args, "--strategy=multi_worker", f"--workdir={tmp_path / 'multi'}"], cwd=ROOT,
            env={**ENV, "TF_CONFIG": tf_config}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [worker.communicate(timeout=900) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    one = json.load(open(tmp_path / "single" / "metrics.json"))
    two = json.load(open(tmp_path / "multi" / "metrics.json"))
    # Epoch 1 agrees to ~1e-7; float all-reduce order lets epoch 2 drift by ~1e-3 relative.
    assert two["history"]["loss"] == pytest.approx(one["history"]["loss"], rel=5e-3)
    assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=0.01)
    assert not any(name.startswith("keras_nngk_worker_") for name in os.listdir(tmp_path / "multi"))
