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


def read_into_page_cache(path):
    """Reads the file or tree at `path` once, a tree in our archive's order (names sorted
    within each folder), so that the step or limit timed next finds its input in the page
    cache: the scale run starts each of them so, or a 16 GiB point's first reader would pay
    the disk reads that the one after it does not (and a 24 GiB machine cannot hold a 16 GiB
    tree and its archive at once)."""
    if os.path.isdir(path):
        subprocess.run(["sh", "-c", 'tar --sort=name -cf - -C "$1" . | cat >/dev/null', "sh", path], check=True)
    else:
        subprocess.run(["cat", path], check=True, stdout=subprocess.DEVNULL)


def drop_page_cache():
    """Empties the page cache (root only), for a cold read; False when not permitted."""
    sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False
