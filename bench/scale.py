"""The scale run (--scale): ours (and upstream with --scale-upstream) over growing data
dirs: time, peak RSS and peak disk of create and restore, download, upload and verify of
archives of many entries, each point's limits (--scale-limits) and issue 26's targets
beside them, as a table, as JSON and as a plot."""

import datetime
import os
import shutil
import subprocess
import sys

from common import HERE, REPO, BenchFailure, GiB, MiB, drop_page_cache, log
from limits import measure_limits, timed
from payloads import (PAYLOAD_VERSION, SCALE_PAYLOAD_VERSION, build_files_payload, build_payload,
                      build_scale_payload, check_free_disk, copy_payload, files_payload_root,
                      payload_is_cached)
from report import fmt, machine, write_json
from steps import bench_one, disk_usage_mib


# The points of a scale run, and its memory target. "size": random bytes plus 1/16 JSON
# lines; "mixed": half random, half JSON lines (issue 26's 16 GiB point); "files": ~100-byte
# files in record folders.
SCALE_SIZES_MIB = [512, 2048, 4096]
SCALE_MIXED_MIB = [16384]
SCALE_FILES = [70000, 200000, 1000000]
# Issue 26's files point: 1,000,000 files in 1,000 folders.
SCALE_FILES_PER_FOLDER = 1000
# --scale --quick (CI): the 200,000-file point alone, with the memory target asserted.
SCALE_QUICK_FILES = [200000]
SCALE_RSS_MIB = 64
# Upstream is measured where it finishes: a step past this is recorded as not finished.
UPSTREAM_CAP_S = 600
# Steps at each kind of point: the files points carry the archive of many entries, so
# download, upload and verify are measured there (issue 26's third row).
SCALE_STEPS = {
    "files": {"create", "writers", "download", "upload", "verify", "restore", "disk"},
    "size": {"create", "writers", "restore", "disk"},
    "mixed": {"create", "writers", "restore", "disk"},
}
UPSTREAM_STEPS = {"create", "restore"}


def measure_scale_limits(args, label, payload, binary, archive_mib, with_tar):
    """The limits beside a scale point (issue 26): those of measure_limits (cp -r + sync,
    zip -r -1, unzip -q + sync, unzip -tq), reading the tree (tar into a pipe), at the files
    points GNU tar writing the tree to an archive and reading it back into a tree (each +
    sync -f; the size points' targets do not use them, and a 16 GiB tar would not fit), and
    the disk's own write speed: `dd` from /dev/zero with conv=fsync of as many bytes as our
    archive and as the data dir. One run each (args.repeat is 1 here), each starting with
    its input in the page cache as the steps do; with --scale-cold-read, the tree read cold
    too, for the disk's read speed."""
    lim = measure_limits(args, label, payload, binary)
    base = os.path.join(args.work, label, "limits-tar")
    shutil.rmtree(base, ignore_errors=True)
    data_dir = os.path.join(base, "data")
    os.makedirs(data_dir)
    try:
        copy_payload(payload, data_dir, link=True)
        data_mib = max(1, int(round(disk_usage_mib(data_dir))))
        log("limits, %s: reading the tree%s, dd + fsync" % (label, ", tar write and read" if with_tar else ""))
        read_tree = ["sh", "-c", 'tar -cf - -C "$1" . | cat >/dev/null', "sh", data_dir]
        lim["read_tree_s"] = timed(read_tree, warm=data_dir)
        if with_tar:
            archive = os.path.join(base, "limit.tar")
            lim["tar_write_s"] = timed(["tar", "-cf", archive, "-C", data_dir, "."], sync_dir=base, warm=data_dir)
            out = os.path.join(base, "untarred")
            os.makedirs(out)
            lim["tar_read_s"] = timed(["tar", "-xf", archive, "-C", out], sync_dir=out, warm=archive)
            shutil.rmtree(out)
            os.remove(archive)
        # With --scale-cold-read, beside the warm figures, the disk's own read speed: the tree
        # read with the page cache emptied, what a create of a tree nobody read lately waits for.
        if args.scale_cold_read:
            if not drop_page_cache():
                raise BenchFailure("--scale-cold-read: emptying the page cache needs root")
            lim["read_tree_cold_s"] = timed(read_tree)
            lim["disk_read_cold_mib_s"] = data_mib / lim["read_tree_cold_s"]
        shutil.rmtree(data_dir)
        written = os.path.join(base, "dd.bin")
        for key, mib in (("dd_fsync_s", max(1, int(round(archive_mib)))), ("dd_data_fsync_s", data_mib)):
            lim[key] = timed(["dd", "if=/dev/zero", "of=" + written, "bs=1M", "count=%d" % mib,
                              "conv=fsync", "status=none"])
            os.remove(written)
        lim["dd_mib"], lim["dd_data_mib"] = max(1, int(round(archive_mib))), data_mib
        lim["disk_write_mib_s"] = lim["dd_mib"] / lim["dd_fsync_s"] if lim["dd_fsync_s"] else None
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return lim


def point_payload(args, kind, n):
    if kind == "size":
        return build_scale_payload(args.cache, n)
    if kind == "mixed":
        return build_payload(args.cache, n)
    return build_files_payload(args.cache, n, SCALE_FILES_PER_FOLDER)


def point_label(row):
    return {"size": "%d MiB random + 1/16 JSON lines", "mixed": "%d MiB, half random, half JSON lines",
            "files": "%d small files"}[row["kind"]] % row["n"]


def upstream_point(upstream_bin, args, label, payload):
    """Upstream on one point, or why not: a step past UPSTREAM_CAP_S is not waited for."""
    try:
        return bench_one("upstream", upstream_bin, args, label, payload, None, None, UPSTREAM_STEPS,
                         cap_s=UPSTREAM_CAP_S)
    except BenchFailure as e:
        log("upstream, %s: %s" % (label, e))
        return {"did_not_finish": str(e)}


def scale_targets(rows):
    """Issue 26's targets, each figure beside its limit measured in the same run:
    (point, what, figure, bound, holds)."""
    out = []

    def check(label, what, value, bound):
        if value is not None and bound is not None:
            out.append((label, what, value, bound, value <= bound))

    for row in rows:
        r, lim, label = row["ours"], row.get("limits", {}), point_label(row)
        for key in ("rss_create_mib", "rss_restore_mib", "rss_download_mib", "rss_upload_mib", "rss_verify_mib"):
            if key in r:
                check(label, key, r[key], SCALE_RSS_MIB)
        if row["kind"] == "files":
            check(label, "create_s / zip -r -1", r["create_s"], lim.get("zip_s"))
            check(label, "restore_s / unzip -q + sync", r["restore_s"], lim.get("unzip_s"))
            if "verify_s" in r and lim.get("unzip_test_s"):
                check(label, "verify_s / unzip -tq", r["verify_s"], 1.1 * lim["unzip_test_s"])
        if row["kind"] == "mixed" and lim:
            slower = max(lim.get("read_tree_s") or 0, lim.get("dd_fsync_s") or 0)
            check(label, "create_s / slower of reading the tree and dd of the archive", r["create_s"], 1.1 * slower)
            check(label, "restore_s / dd of the data dir", r["restore_s"], 1.1 * (lim.get("dd_data_fsync_s") or 0))
        if "disk_create_peak_mib" in r:
            check(label, "disk at the create's peak / archive + data dir", r["disk_create_peak_mib"],
                   r["zip_mib"] + r["data_dir_disk_mib"])
            check(label, "disk at the restore's peak / archive + data dir", r["disk_restore_peak_mib"],
                   r["zip_mib"] + r["data_dir_disk_mib"])
    # "Linear: 1M files no more than 12x the 70,000-file figures per entry": the time per
    # entry at 1M over the time per entry at 70k (1.0 is exactly linear).
    files = {row["n"]: row["ours"] for row in rows if row["kind"] == "files"}
    if 70000 in files and 1000000 in files:
        for key in ("create_s", "restore_s"):
            check("1000000 small files", "%s per entry at 1M / per entry at 70k (linear: at most 12x)" % key,
                  (files[1000000][key] / 1000000) / (files[70000][key] / 70000), 12)
    return out


def run_scale(args, ours_bin, upstream_bin=None):
    """Ours (and upstream, with `upstream_bin`) over growing data dirs: time, peak RSS and
    disk of create and restore, and at the files points download, upload and verify; each
    point's limits with --scale-limits; as a table, as JSON and as a plot."""
    points = ([("size", n) for n in args.scale_sizes] + [("mixed", n) for n in args.scale_mixed]
              + [("files", n) for n in args.scale_files])
    # Disk: the payloads not yet cached, plus two copies of the largest point at once (an
    # archive is at most about 1.05x its data: random bytes are stored) and a margin. Data dirs are hard links to the payload (copy_payload), so they cost
    # nothing; what does: a server's backup and the restore's extraction (the restore takes
    # the archive by hard link: work dir and data dir share a file system), and the limits'
    # cp -r copy, then their zip and its extraction. Each is deleted after its step.
    need, inodes, largest = GiB, 0, 0
    for kind, n in points:
        if kind in ("size", "mixed"):
            nbytes = n * MiB * 17 // 16 + 64 * MiB
            cached = payload_is_cached(os.path.join(args.cache, "scale-%dM-v%d" % (n, SCALE_PAYLOAD_VERSION)) if kind == "size"
                                       else os.path.join(args.cache, "payload-%dM-v%d" % (n, PAYLOAD_VERSION)))
        else:
            nbytes = n * 4096
            inodes = max(inodes, 4 * n)
            cached = payload_is_cached(files_payload_root(args.cache, n, SCALE_FILES_PER_FOLDER))
        need += 0 if cached else nbytes
        largest = max(largest, nbytes)
    need += int(2.1 * largest)
    check_free_disk(args.cache, need, inodes, "the scale run")
    check_free_disk(args.work, need, inodes, "the scale run")

    args.repeat = 1
    partial = os.path.join(args.work, "scale-partial.json")
    load_before = os.getloadavg()
    rows = []
    for kind, n in points:
        payload = point_payload(args, kind, n)
        label = "scale-%s-%d" % (kind, n)
        row = {"kind": kind, "n": n, "size_mib": n if kind != "files" else None,
               "files": n if kind == "files" else None,
               "ours": bench_one("ours", ours_bin, args, label, payload, None, None, SCALE_STEPS[kind])}
        if upstream_bin:
            row["upstream"] = upstream_point(upstream_bin, args, label, payload)
        if args.scale_limits:
            row["limits"] = measure_scale_limits(args, label, payload, ours_bin, row["ours"]["zip_mib"], kind == "files")
        rows.append(row)
        # A long run cut short keeps the points done so far.
        write_json(partial, {"partial": True, "points": rows})
    load_after = os.getloadavg()

    print()
    print("pb-backups scale run, %s, load %.2f before / %.2f after"
          % (datetime.date.today(), load_before[0], load_after[0]))
    print()
    print("| data dir | zip (MiB) | ZIP64 | create (s) | peak RSS create (MiB) | restore until serving (s) | peak RSS restore (MiB) "
          "| verify (s) | peak disk create / restore (MiB) | longest write to data.db during a create (ms) | upstream create / restore (s) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    failures = []
    for row in rows:
        r, up = row["ours"], row.get("upstream") or {}
        label = point_label(row)
        writers = r.get("writers", {})
        upstream = ("did not finish" if "did_not_finish" in up
                    else "%s / %s" % (fmt(up.get("create_s")), fmt(up.get("restore_s"))) if up else "")
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s |" % (
            label, fmt(r["zip_mib"]), fmt(r["zip64"]), fmt(r["create_s"]), fmt(r["rss_create_mib"]),
            fmt(r["restore_s"]), fmt(r["rss_restore_mib"]), fmt(r.get("verify_s")),
            fmt(r.get("disk_create_peak_mib")), fmt(r.get("disk_restore_peak_mib")),
            fmt(writers.get("max_wait_ms")), upstream))
        # Every step's peak: create and restore always, download, upload and verify where run.
        for key in ("rss_create_mib", "rss_restore_mib") + tuple(
                k for k in ("rss_download_mib", "rss_upload_mib", "rss_verify_mib") if k in r):
            if r.get(key) is None or r[key] > SCALE_RSS_MIB:
                failures.append("%s, %s: %s MiB (bound %d MiB)" % (label, key, fmt(r.get(key)), SCALE_RSS_MIB))
        if writers.get("failed"):
            failures.append("%s: %d writes to data.db failed during the create: %s" % (label, writers["failed"], writers["failures"]))
    if args.scale_limits:
        print()
        print("limits (s): " + "; ".join(
            "%s: zip %s, unzip+sync %s, unzip -t %s, tar write %s, tar read %s, read tree %s (cold %s), dd+fsync of the archive's size %s, of the data dir's %s" % (
                point_label(row),
                *(fmt(row["limits"].get(k)) for k in ("zip_s", "unzip_s", "unzip_test_s", "tar_write_s", "tar_read_s",
                                                        "read_tree_s", "read_tree_cold_s", "dd_fsync_s", "dd_data_fsync_s")))
            for row in rows))
    targets = scale_targets(rows)
    if targets:
        print()
        print("targets (issue 26), each beside its limit from this run:")
        for label, what, value, bound, holds in targets:
            print("  %-5s %s, %s: %s (bound %s)" % ("ok" if holds else "MISS", label, what, fmt(value), fmt(bound)))
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
        "targets": [{"point": l, "what": w, "value": v, "bound": b, "holds": h} for l, w, v, b, h in targets],
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
