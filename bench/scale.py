"""The scale run (--scale): ours alone over growing data dirs, time and peak RSS of create
and restore, each point's limits (--scale-limits), as a table, as JSON and as a plot."""

import datetime
import os
import shutil
import subprocess
import sys

from common import HERE, REPO, BenchFailure, GiB, MiB, log
from limits import measure_limits, timed
from payloads import (FILES_PAYLOAD_VERSION, SCALE_PAYLOAD_VERSION, build_files_payload, build_scale_payload,
                      check_free_disk, copy_payload, payload_is_cached)
from report import fmt, machine, write_json
from steps import bench_one


# The points of a scale run, and its memory target.
SCALE_SIZES_MIB = [512, 2048, 4096]
SCALE_FILES = [70000, 200000]
# --scale --quick (CI): the 200,000-file point alone, with the memory target asserted.
SCALE_QUICK_FILES = [200000]
SCALE_RSS_MIB = 64


def measure_scale_limits(args, label, payload, binary, archive_mib):
    """The limits beside a scale point (issue 26): those of measure_limits (cp -r + sync,
    zip -r -1, unzip -q + sync), GNU tar writing the tree to an archive and reading it back
    into a tree (each + sync -f), and the disk's own write speed: `dd` of as many bytes as
    our archive from /dev/zero with conv=fsync. One run each (args.repeat is 1 here)."""
    lim = measure_limits(args, label, payload, binary)
    base = os.path.join(args.work, label, "limits-tar")
    shutil.rmtree(base, ignore_errors=True)
    data_dir = os.path.join(base, "data")
    os.makedirs(data_dir)
    try:
        copy_payload(payload, data_dir)
        log("limits, %s: tar write and read, dd + fsync" % label)
        archive = os.path.join(base, "limit.tar")
        lim["tar_write_s"] = timed(["tar", "-cf", archive, "-C", data_dir, "."], sync_dir=base)
        out = os.path.join(base, "untarred")
        os.makedirs(out)
        lim["tar_read_s"] = timed(["tar", "-xf", archive, "-C", out], sync_dir=out)
        shutil.rmtree(out)
        os.remove(archive)
        shutil.rmtree(data_dir)
        mib = max(1, int(round(archive_mib)))
        written = os.path.join(base, "dd.bin")
        lim["dd_fsync_s"] = timed(["dd", "if=/dev/zero", "of=" + written, "bs=1M", "count=%d" % mib,
                                   "conv=fsync", "status=none"])
        lim["dd_mib"] = mib
        lim["disk_write_mib_s"] = mib / lim["dd_fsync_s"] if lim["dd_fsync_s"] else None
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return lim


def run_scale(args, ours_bin):
    """Ours alone over growing data dirs: time and peak RSS of create and restore, as a
    table, as JSON and as a plot."""
    points = [("size", n) for n in args.scale_sizes] + [("files", n) for n in args.scale_files]
    # Disk: the payloads not yet cached, plus the largest point's data dir, backup zip,
    # the restore's extraction and a margin (the restore takes the archive by hard link,
    # a copy when it cannot), side by side (data dirs are deleted after each point).
    need, inodes, largest = GiB, 0, 0
    for kind, n in points:
        if kind == "size":
            nbytes = n * MiB * 17 // 16 + 64 * MiB
            cached = payload_is_cached(os.path.join(args.cache, "scale-%dM-v%d" % (n, SCALE_PAYLOAD_VERSION)))
        else:
            nbytes = n * 4096
            inodes = max(inodes, 4 * n)
            cached = payload_is_cached(os.path.join(args.cache, "files-%d-v%d" % (n, FILES_PAYLOAD_VERSION)))
        need += 0 if cached else nbytes
        largest = max(largest, nbytes)
    need += int(4.5 * largest)
    check_free_disk(args.cache, need, inodes, "the scale run")
    check_free_disk(args.work, need, inodes, "the scale run")

    args.repeat = 1
    load_before = os.getloadavg()
    rows = []
    for kind, n in points:
        payload = build_scale_payload(args.cache, n) if kind == "size" else build_files_payload(args.cache, n)
        r = bench_one("ours", ours_bin, args, "scale-%s-%d" % (kind, n), payload, None, None, {"create", "writers", "restore"})
        row = {"kind": kind, "size_mib": n if kind == "size" else None,
               "files": n if kind == "files" else None, "ours": r}
        if args.scale_limits:
            row["limits"] = measure_scale_limits(args, "scale-%s-%d" % (kind, n), payload, ours_bin, r["zip_mib"])
        rows.append(row)
    load_after = os.getloadavg()

    print()
    print("pb-backups scale run (ours alone), %s, load %.2f before / %.2f after"
          % (datetime.date.today(), load_before[0], load_after[0]))
    print()
    print("| data dir | zip (MiB) | ZIP64 | create (s) | peak RSS create (MiB) | restore until serving (s) | peak RSS restore (MiB) | longest write to data.db during a create (ms) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    failures = []
    for row in rows:
        r = row["ours"]
        label = "%d MiB random + 1/16 JSON lines" % row["size_mib"] if row["kind"] == "size" else "%d small files" % row["files"]
        writers = r.get("writers", {})
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, fmt(r["zip_mib"]), fmt(r["zip64"]), fmt(r["create_s"]), fmt(r["rss_create_mib"]),
            fmt(r["restore_s"]), fmt(r["rss_restore_mib"]), fmt(writers.get("max_wait_ms"))))
        for key in ("rss_create_mib", "rss_restore_mib"):
            if r.get(key) is None or r[key] > SCALE_RSS_MIB:
                failures.append("%s, %s: %s MiB (bound %d MiB)" % (label, key, fmt(r.get(key)), SCALE_RSS_MIB))
        if writers.get("failed"):
            failures.append("%s: %d writes to data.db failed during the create: %s" % (label, writers["failed"], writers["failures"]))
    if args.scale_limits:
        print()
        print("limits (s): " + "; ".join(
            "%s: zip %s, unzip+sync %s, tar write %s, tar read %s, dd+fsync of the archive's size %s" % (
                row["kind"] + "-" + str(row["size_mib"] or row["files"]),
                *(fmt(row["limits"].get(k)) for k in ("zip_s", "unzip_s", "tar_write_s", "tar_read_s", "dd_fsync_s")))
            for row in rows))
        print()
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "scale": True,
        "quick": args.quick,
        "rss_bound_mib": SCALE_RSS_MIB,
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_after,
        "points": rows,
    }
    if args.quick:
        # CI: the checkout stays clean, and the memory bound fails the run.
        write_json(args.out or os.path.join(REPO, "target", "bench-scale-quick.json"), result)
        if failures:
            raise BenchFailure("; ".join(failures))
        return
    out = args.out or os.path.join(HERE, "results", "%s-scale.json" % datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    write_json(out, result)
    plot_scale(args, out, args.plot or os.path.join(HERE, "scale.png"))
    if failures:
        print("\nMISSED: " + "; ".join(failures))


def plot_venv_python(cache):
    """The Python of a venv under the cache with matplotlib, made on first use (the bench
    itself stays standard library only). Returns (path, None) or (None, reason)."""
    venv = os.path.join(cache, "plot-venv")
    python = os.path.join(venv, "bin", "python")
    try:
        probe = subprocess.run([python, "-c", "import matplotlib"], capture_output=True) if os.path.exists(python) else None
        if probe is None or probe.returncode != 0:
            log("making the plot venv %s (matplotlib from PyPI)" % venv)
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True, text=True)
            subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"],
                           check=True, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as e:
        detail = (getattr(e, "stderr", None) or "").strip().splitlines()[-1:] or [""]
        return None, "%s %s" % (e, detail[0])
    return python, None


def plot_scale(args, json_path, png):
    python, reason = plot_venv_python(args.cache)
    if python is None:
        print("\nno plot: could not make the matplotlib venv under %s (%s)" % (args.cache, reason))
        return
    done = subprocess.run([python, os.path.join(HERE, "plot_scale.py"), json_path, png])
    if done.returncode != 0:
        print("\nno plot: bench/plot_scale.py failed (exit %d)" % done.returncode)
        return
    print("plot:", png)
