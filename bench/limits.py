"""The machine's own limits for the same work, on a data dir like the servers': `cp -r` +
`sync`, Info-ZIP `zip -r -1 -q`, `unzip -q` + `sync` and `unzip -tq` (every entry read and
its CRC checked, nothing written)."""

import os
import shutil
import subprocess
import time

from common import EMAIL, PASSWORD_1, MiB, log, median, read_into_page_cache, sync
from payloads import copy_payload


def timed(argv, cwd=None, sync_dir=None, warm=None):
    """Seconds of one command, after a `sync` so that earlier writes are not charged to it;
    with `sync_dir`, plus `sync -f` of that dir's file system (syncfs, as our restore does;
    like it, this also waits for other writers of that file system); with `warm`, that
    input read into the page cache first (the scale run, as its steps are)."""
    if warm:
        read_into_page_cache(warm)
    sync()
    started = time.monotonic()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    if sync_dir:
        subprocess.run(["sync", "-f", sync_dir], check=True)
    return time.monotonic() - started


def time_zip(data_dir, archive, repeat, warm=False):
    """Runs of Info-ZIP's `zip -r -1 -q` of `data_dir` into `archive` (the last one is left)."""
    runs = []
    for _ in range(repeat):
        if os.path.exists(archive):
            os.remove(archive)
        runs.append(timed(["zip", "-r", "-1", "-q", archive, "."], cwd=data_dir, warm=data_dir if warm else None))
    return runs


def limits_unavailable_reason():
    missing = [tool for tool in ("zip", "unzip") if shutil.which(tool) is None]
    if missing:
        return ("%s not installed (not on PATH); the bench installs no system packages: "
                "install Info-ZIP (e.g. apt-get install zip unzip) to see these limits"
                % " and ".join(missing))
    return None


def measure_limits(args, case, payload, binary):
    """What the machine itself needs for the same work, on a data dir like the servers'
    (a database made by `superuser upsert`, the payload under storage/): `cp -r` + `sync`
    of it, Info-ZIP `zip -r -1 -q` of it (the create limit; its size is the zip size
    limit) and `unzip -q` + `sync` of that zip (the restore limit). Medians of --repeat."""
    base = os.path.join(args.work, case, "limits")
    shutil.rmtree(base, ignore_errors=True)
    data_dir = os.path.join(base, "data")
    os.makedirs(data_dir)
    if binary:
        subprocess.run([binary, "superuser", "upsert", EMAIL, PASSWORD_1, "--dir", data_dir],
                       check=True, capture_output=True)
    copy_payload(payload, data_dir, link=args.scale)
    lim = {}
    # The scale run starts each limit with its input in the page cache, as it does its steps.
    warm_tree = data_dir if args.scale else None
    try:
        log("limits, %s case: cp -r + sync" % case)
        copy = os.path.join(base, "copy")
        runs = []
        for _ in range(args.repeat):
            runs.append(timed(["cp", "-r", data_dir, copy], sync_dir=copy, warm=warm_tree))
            shutil.rmtree(copy)
        lim["cp_runs_s"], lim["cp_s"] = runs, median(runs)
        reason = limits_unavailable_reason()
        if reason:
            lim["unavailable"] = reason
            log("limits, %s case: zip/unzip unavailable: %s" % (case, reason))
            return lim
        log("limits, %s case: zip -r -1 -q, unzip -q + sync" % case)
        archive = os.path.join(base, "limit.zip")
        warm_zip = archive if args.scale else None
        runs = time_zip(data_dir, archive, args.repeat, warm=args.scale)
        lim["zip_runs_s"], lim["zip_s"] = runs, median(runs)
        lim["zip_mib"] = os.path.getsize(archive) / MiB
        out = os.path.join(base, "unzipped")
        runs = []
        for _ in range(args.repeat):
            runs.append(timed(["unzip", "-q", archive, "-d", out], sync_dir=out, warm=warm_zip))
            shutil.rmtree(out)
        lim["unzip_runs_s"], lim["unzip_s"] = runs, median(runs)
        lim["unzip_test_s"] = timed(["unzip", "-tq", archive], warm=warm_zip)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return lim
