"""Starts a multi-worker run on this machine: N worker processes on 127.0.0.1, each with
its TF_CONFIG, for trying `--strategy=multi_worker` before a cluster does the same.

  python tools/launch_workers.py --num_workers=2 [--log_dir=DIR] -- \
      --flagfile=flags/quickstart.cfg --strategy=multi_worker --data_dir=...

Worker 0 is the chief: its output is this script's; the others' go to
`DIR/worker_N.log` (default: a new temporary directory, named at start). Exits with the
chief's exit code once every worker has ended (143, RESTARTABLE_EXIT_CODE, means a
preemption checkpoint was saved: run the same command again to resume). Ctrl-C or
SIGTERM reaches the chief as SIGTERM (the workers run in their own session), and the
whole cluster saves at one step and exits, as on a preempted cluster.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAIT_AFTER_CHIEF_S = 120  # then workers still running are stopped


def free_ports(n):
    """n ports free on 127.0.0.1 now (the OS may reuse them later, rarely)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(workers, index):
    """The TF_CONFIG of worker `index` of the cluster `workers` (host:port list)."""
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def start_workers(num_workers, command, log_dir, env=None, chief_output=None):
    """Starts `command` (argv) once per worker; returns the `Popen`s, chief first.

    The chief writes to `chief_output` (a file object; None: this process's stdout and
    stderr); worker N to `log_dir/worker_N.log`.
    """
    workers = [f"127.0.0.1:{p}" for p in free_ports(num_workers)]
    procs = []
    for index in range(num_workers):
        worker_env = {**(env or os.environ), "TF_CONFIG": tf_config(workers, index)}
        worker_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (REPO, worker_env.get("PYTHONPATH")) if p
        )
        if index == 0:
            out = chief_output
        else:
            out = open(os.path.join(log_dir, f"worker_{index}.log"), "w")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                command,
                cwd=REPO,
                env=worker_env,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                text=True,
                start_new_session=True,  # Ctrl-C reaches this launcher, not each worker
            )
        )
    return procs


def wait_all(procs, grace_s=WAIT_AFTER_CHIEF_S):
    """Waits for the chief, then up to `grace_s` for the rest; returns the chief's code."""
    code = procs[0].wait()
    for p in procs[1:]:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return code


def main(argv):
    args, sep, flags = argv, None, []
    if "--" in argv:
        at = argv.index("--")
        args, sep, flags = argv[:at], "--", argv[at + 1 :]
    options = dict(a.lstrip("-").split("=", 1) for a in args if "=" in a)
    unknown = set(options) - {"num_workers", "log_dir"}
    if sep is None or unknown or "num_workers" not in options:
        print(__doc__, file=sys.stderr)
        return 2
    num_workers = int(options["num_workers"])
    if num_workers < 1:
        print("--num_workers must be >= 1", file=sys.stderr)
        return 2
    if not any(f.startswith("--strategy") for f in flags):
        flags = [*flags, "--strategy=multi_worker"]
    log_dir = options.get("log_dir") or tempfile.mkdtemp(prefix="simclr_workers_")
    os.makedirs(log_dir, exist_ok=True)
    print(f"{num_workers} workers on 127.0.0.1; workers 1.. log to {log_dir}", file=sys.stderr)
    procs = start_workers(num_workers, [sys.executable, "-m", "simclr_tf.main", *flags], log_dir)

    def forward(signum, frame):
        if procs[0].poll() is None:  # one signalled worker is enough: it tells the rest
            procs[0].send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return wait_all(procs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
