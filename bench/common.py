"""What every part of the bench shares: the repository's paths, upstream's version, the
superuser the servers get, units, logging, the failure that ends a run, and child processes
that die with the bench."""

import ctypes
import os
import signal
import subprocess
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
UPSTREAM_VERSION = "0.40.6"
EMAIL = "bench@example.com"
PASSWORD_1 = "bench-password-1"
PASSWORD_2 = "bench-password-2"

MiB = 1 << 20
GiB = 1 << 30

_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """Popen's preexec_fn: the child gets SIGKILL when the bench dies (PR_SET_PDEATHSIG,
    kept across exec), so no server outlives a killed bench."""
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def log(*args):
    print("[bench]", *args, file=sys.stderr, flush=True)


class BenchFailure(Exception):
    """A step did not work (a request failed, a restore never served, a server died)."""


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def sync():
    subprocess.run(["sync"], check=True)
