"""Helpers for tests that spawn worker processes with ``torch.multiprocessing``."""

from __future__ import annotations

import os
import socket
import sys


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_worker() -> None:
    """Leave a worker that has written its results, skipping interpreter teardown.

    Gloo's background threads occasionally abort the process while Python tears down ("terminate called without an
    active exception", SIGABRT), after every result is on disk; ``mp.spawn`` would then fail a passing test. Call this
    only on the success path, so a worker that raised still reports its traceback.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
