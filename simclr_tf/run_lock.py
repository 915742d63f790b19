"""One training process per run directory: a lock file naming its holder.

Two runs on one `model_dir` would overwrite each other's checkpoints and resume from
each other's steps. The chief creates `model_dir/.lock` exclusively (host, pid, start
time) and removes it when the run ends; a second run finds it and stops in one line.
A lock left by a killed run on this host (its pid no longer alive) is stale and taken
over. On a remote file system (`gs://...`) no lock is taken: it has no exclusive
create here.
"""

import contextlib
import json
import os
import socket
import time

from absl import logging

LOCK_FILE = ".lock"


class RunLocked(RuntimeError):
    """Another live run holds the run directory, in one line."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _holder(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # being written, or garbled: treated as held


def acquire(model_dir):
    """Creates the lock; returns its path. Raises RunLocked if a live run holds it."""
    path = os.path.join(model_dir, LOCK_FILE)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            pid, host = holder.get("pid"), holder.get("host")
            if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                logging.warning("Taking over the lock of pid %d, which is gone (%s)", pid, path)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("since", 0)))
            raise RunLocked(
                f"{model_dir} is in use by pid {pid} on {host} since {since} "
                f"(if that run is gone, remove {path})"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise RunLocked(f"{model_dir}: could not take the lock {path}")


@contextlib.contextmanager
def holding(model_dir, enabled=True):
    """Holds the run directory's lock for the block (no-op when not `enabled`, e.g. on
    workers other than the chief, or on a remote file system)."""
    if not enabled or "://" in model_dir:
        yield None
        return
    path = acquire(model_dir)
    try:
        yield path
    finally:
        if _holder(path).get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
