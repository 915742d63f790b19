"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 pretrain together."""

import json
import os
import socket
import subprocess
import sys

from conftest import REPO


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_pretrain_and_only_the_chief_writes(tmp_path, cifar_data_dir):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    model_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "simclr_tf.main",
        "--flagfile=flags/cifar10_common.cfg",
        "--mode=pretrain",
        f"--data_dir={cifar_data_dir}",
        f"--model_dir={model_dir}",
        "--strategy=multi_worker",
        "--depth=18",
        "--width_multiplier=0.125",
        "--batch_size=16",
        "--train_steps=4",
        "--checkpoint_steps=2",
        "--eval_steps=1",
        "--knn_bank_size=64",
        "--shuffle_buffer=64",
    ]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs.append(
            subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[:6000]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["global_step"] == 4
    assert "2 replica(s)" in outputs[0]
    assert (model_dir / "ckpt-4.index").exists()
    assert not list(model_dir.glob(".worker_tmp_*"))
