#!/usr/bin/env python3
"""Side-by-side benchmark of pb-backups and upstream PocketBase (see bench/README.md).

Two cases, each run on both servers with the same data and on the same machine:
  size   a data dir of --size MiB (half random bytes, half JSON lines, 2,000 small files)
  files  a data dir whose storage/ holds --files small files (~100 bytes each)
Each server gets its own copy of the data, on a free loopback port, and is measured for
create, download, upload, list latency (size case) and restore until served, with its peak
memory in every step. Next to the figures, the limits of the machine for the same work:
`cp -r` + `sync` of the data dir, Info-ZIP `zip -r -1 -q` of it and `unzip -q` + `sync` of
that zip. The table shows ours/upstream and ours/limit, and the targets of issue 14.

A third case, s3, runs ours alone (upstream's S3 is set through its settings API) with its
backups on a local moto S3 (scripts/s3-test-server): a create streamed into a multipart
upload, against the two parts done apart (our local create, a plain boto3 upload of its
archive) and started together; the target is about the two done at once, then the
store's completion (moto shares this machine's cores with the compression; see
bench/README.md).

--quick runs small sizes (CI runs it from scripts/test): it fails when a step does not
work, and when ours is out of generous same-run bounds against upstream (QUICK_BOUNDS), so
that a 2x regression fails CI. Every run checks the bytes downloaded and uploaded. --scale
measures ours alone from 512 MiB to 4 GiB and 70,000 to 200,000 files, and plots time and
memory against size.
"""

import argparse
import datetime
import http.client
import os
import shutil
import signal
import subprocess
import sys

# The parts, each in a module beside this one: common, payloads, api (HTTP calls), probes
# (memory, refusals, CPU), servers, steps (what is measured on one server), limits, targets,
# report, s3case and scale. This file runs the cases side by side and reads the flags.
from common import HERE, REPO, UPSTREAM_VERSION, BenchFailure, GiB, MiB, log
from limits import measure_limits
from payloads import build_files_payload, build_payload, check_free_disk
from report import case_title, fmt, machine, print_case_table, write_json
from s3case import print_s3_table, run_s3_case
from scale import SCALE_FILES, SCALE_MIXED_MIB, SCALE_QUICK_FILES, SCALE_SIZES_MIB, UPSTREAM_CAP_S, run_scale
from servers import build_ours, fetch_upstream
from steps import bench_one
from targets import QUICK_BOUNDS, check_bounds, check_targets, target_text


# Sizes of a full run and of --quick (CI: small, short list load); --scale's are in scale.py.
FULL = {"size": 512, "files": 70000, "s3_size": 256, "repeat": 3, "list_backups": 1000, "list_clients": 64, "list_secs": 5.0}
# Quick repeats each create, download, upload and restore 3 times, as a full run does: a
# single 0.2 s create, or a restore caught by one slow fsync, is too noisy for QUICK_BOUNDS
# to hold to a ratio.
QUICK = {"size": 32, "files": 5000, "s3_size": 32, "repeat": 3, "list_backups": 100, "list_clients": 16, "list_secs": 1.0}


def quick_failures(cases):
    """In --quick, what makes the run fail besides an exception: list requests that failed,
    and figures of ours out of QUICK_BOUNDS (or missing, when a bound needs them)."""
    problems = []
    for case, figures in cases.items():
        for name in ("ours", "upstream"):
            r = figures.get(name) or {}
            if r.get("list_errors"):
                problems.append("%s, %s case: %d list requests failed" % (name, case, r["list_errors"]))
        ours, upstream = figures.get("ours") or {}, figures.get("upstream") or {}
        for key, t in check_bounds(QUICK_BOUNDS, case, ours, upstream, figures.get("limits")).items():
            if t["holds"]:
                continue
            shown = "ours %s, upstream %s" % (fmt(ours.get(key)), fmt(upstream.get(key))) if t["against"] == "upstream" \
                else "ours %s" % fmt(ours.get(key))
            problems.append("%s case: %s is %s, bound %s (%s)" % (
                case, key, "missing" if t["value"] is None else ("%.2fx" % t["value"] if t["against"] == "upstream" else fmt(t["value"])),
                target_text(t).split(":")[0], shown))
    return problems


def run_side_by_side(args, ours_bin, upstream_bin, loadgen):
    cases = args.cases
    need = 0
    if "s3" in cases:
        need += 4 * args.s3_size * MiB  # payload, data dir, its local archive, zip -r -1
    if "size" in cases:
        # Payload, limits, a data dir with its zips and uploads, the restore's extraction
        # (and upstream's copy of the archive).
        need += 9 * args.size * MiB
    if "files" in cases:
        need += 6 * args.files * 4096  # one 4 KiB block per small file and copy
    check_free_disk(args.work, need + GiB, ("files" in cases) * 6 * args.files, "this run")

    load_before = os.getloadavg()
    results = {}
    for case in cases:
        if case == "s3":
            if not ours_bin:
                log("s3 case: ours only, skipped with --only upstream")
                continue
            ours, limits = run_s3_case(args, ours_bin)
            results[case] = {"ours": ours, "upstream": None, "limits": limits,
                             "targets": check_targets(case, ours, None, limits)}
            continue
        if case == "size":
            payload = build_payload(args.cache, args.size)
            steps = {"create", "download", "upload", "list", "restore"}
        else:
            payload = build_files_payload(args.cache, args.files)
            steps = {"create", "download", "upload", "restore"}
        if not args.quick:
            steps.add("writers")
        limits = measure_limits(args, case, payload, ours_bin or upstream_bin)
        upstream = ours = None
        upload_source = None
        if upstream_bin:
            upstream = bench_one("upstream", upstream_bin, args, case, payload, loadgen, None, steps)
            # Both servers receive the very same upload: upstream's backup.
            upload_source = os.path.join(args.work, "upload", case, "bench_upload.zip")
        if ours_bin:
            ours = bench_one("ours", ours_bin, args, case, payload, loadgen, upload_source, steps)
        results[case] = {"ours": ours, "upstream": upstream, "limits": limits,
                         "targets": check_targets(case, ours, upstream, limits)}
    load_after = os.getloadavg()

    print()
    print("pb-backups vs PocketBase %s%s, %s, load %.2f before / %.2f after%s"
          % (UPSTREAM_VERSION, "" if upstream_bin else " (upstream not run: s3 case only)" if cases == ["s3"]
             else " (upstream skipped)", datetime.date.today(),
             load_before[0], load_after[0], ", --quick: figures not for comparison" if args.quick else ""))
    for case, figures in results.items():
        print("\n%s\n" % case_title(case, args))
        if case == "s3":
            print_s3_table(figures["ours"], figures["limits"], figures["targets"])
            continue
        print_case_table(case, figures["ours"], figures["upstream"], figures["limits"], figures["targets"])
        phases = (figures["ours"] or {}).get("restore_phases_s")
        if phases:
            print("\nours, restore phases (s after the restore started):",
                  ", ".join("%s %.3f" % kv for kv in phases.items()))
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "size_mib": args.size if "size" in cases else None,
        "files": args.files if "files" in cases else None,
        "s3_size_mib": args.s3_size if "s3" in cases else None,
        "repeat": args.repeat,
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_after,
        "upstream_version": UPSTREAM_VERSION if upstream_bin else None,
        "cases": results,
    }
    if args.out:
        out = args.out
    elif args.quick:
        out = os.path.join(REPO, "target", "bench-quick.json")  # CI: no stray file in the checkout
    else:
        tag = "-".join(["%dM" % args.size] * ("size" in cases) + ["%dfiles" % args.files] * ("files" in cases)
                       + ["%dM-s3" % args.s3_size] * ("s3" in cases))
        out = os.path.join(HERE, "results", "%s-%s.json" % (datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), tag))
    write_json(out, result)
    if args.quick:
        shown = []
        for case, figures in results.items():
            bounds = check_bounds(QUICK_BOUNDS, case, figures.get("ours") or {}, figures.get("upstream") or {}, None)
            shown += ["%s %s %s (%s)" % (case, key, "-" if t["value"] is None else "%.2f" % t["value"], target_text(t))
                      for key, t in bounds.items()]
        print("\n--quick bounds: " + "; ".join(shown))
        problems = quick_failures(results)
        if problems:
            raise BenchFailure("out of the --quick bounds or broken: " + "; ".join(problems))


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  bench/run                          all cases (512 MiB, 70,000 files both servers; 256 MiB to S3 ours)\n"
               "  bench/run --case s3 --s3-size 64   ours streaming a create to a local moto S3\n"
               "  bench/run --case files --files 20000 --repeat 1\n"
               "  bench/run --size 64 --case size    a quick look while the machine is busy\n"
               "  bench/run --quick                  what CI runs: small, with same-run bounds against upstream\n"
               "  bench/run --scale --scale-limits --scale-upstream\n"
               "                                     issue 26: 512 MiB..16 GiB and 70k..1M files, limits, upstream, plot\n"
               "  bench/run --scale --scale-sizes '' --scale-mixed '' --scale-files 70000,1000000 --scale-limits\n"
               "                                     the files points alone\n"
               "  bench/run --scale --quick          CI: 200k files alone, fails past 64 MiB of peak RSS\n"
               "  bench/run --scale --scale-sizes 16,32 --scale-files 2000 --plot /tmp/scale.png\n")
    p.add_argument("--case", choices=["size", "files", "s3", "both", "all"], default="all",
                   help="which case to measure: size (--size MiB of mixed data), files (--files small files), "
                        "s3 (ours alone, a create streamed to a local moto S3, --s3-size MiB), both = size and "
                        "files, all = the three (default)")
    p.add_argument("--size", type=int, help="size case: payload in MiB (default %d, quick %d)" % (FULL["size"], QUICK["size"]))
    p.add_argument("--files", type=int, help="files case: number of ~100-byte files (default %d, quick %d)" % (FULL["files"], QUICK["files"]))
    p.add_argument("--s3-size", type=int,
                   help="s3 case: payload in MiB, made like the size case's (default %d, quick %d)" % (FULL["s3_size"], QUICK["s3_size"]))
    p.add_argument("--only", choices=["ours", "upstream", "both"], default="both", help="which servers to run (default both)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, 3 runs, short list load; fails when a step does not work or ours is out "
                        "of the same-run bounds against upstream (QUICK_BOUNDS); results go to "
                        "target/bench-quick.json (run by scripts/test)")
    p.add_argument("--scale", action="store_true",
                   help="ours over growing data dirs (--scale-sizes, --scale-mixed, --scale-files): time, peak RSS "
                        "and peak disk of create and restore (download, upload and verify at the files points), "
                        "table, JSON and a PNG plot (--plot)")
    p.add_argument("--scale-sizes", type=int_list, metavar="MIB,...",
                   help="scale run: payload sizes in MiB, random bytes plus 1/16 JSON lines (default %s; none "
                        "with --quick)" % ",".join(map(str, SCALE_SIZES_MIB)))
    p.add_argument("--scale-mixed", type=int_list, metavar="MIB,...",
                   help="scale run: payload sizes in MiB, half random, half JSON lines (default %s; none with "
                        "--quick)" % ",".join(map(str, SCALE_MIXED_MIB)))
    p.add_argument("--scale-upstream", action="store_true",
                   help="scale run: upstream PocketBase too (create and restore), where a step finishes within "
                        "%d s" % UPSTREAM_CAP_S)
    p.add_argument("--scale-files", type=int_list, metavar="N,...",
                   help="scale run: file counts (default %s; %s with --quick)" % (
                       ",".join(map(str, SCALE_FILES)), ",".join(map(str, SCALE_QUICK_FILES))))
    p.add_argument("--plot", help="scale run: PNG path (default bench/scale.png)")
    p.add_argument("--scale-limits", action="store_true",
                   help="scale run: measure each point's limits too (zip, unzip + sync, unzip -t, tar write and "
                        "read, reading the tree, dd + fsync of the archive's and the data dir's size); needs room "
                        "for a second copy of the data dir")
    p.add_argument("--scale-cold-read", action="store_true",
                   help="scale run, with --scale-limits: also read each point's tree with the page cache emptied "
                        "(needs root; slows everything else on the machine for a while), for the disk's cold read "
                        "speed beside the warm figures")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/pb-backups-bench"),
                   help="where payloads, the load generator and the plot venv are kept")
    p.add_argument("--work", help="scratch dir for the servers' data dirs (default: CACHE/work)")
    p.add_argument("--ours-bin", help="use this pb-backups binary instead of building one")
    p.add_argument("--repeat", type=int,
                   help="runs of create, download, upload, restore and of each limit; the median is reported (default 3)")
    p.add_argument("--list-backups", type=int, help="backups in the folder for the list step (default 1000, quick 100)")
    p.add_argument("--list-clients", type=int, help="concurrent list clients (default 64, quick 16)")
    p.add_argument("--list-secs", type=float, help="measured seconds of list load (default 5, quick 1)")
    p.add_argument("--out", help="JSON results path (default bench/results/DATE-....json; quick: target/bench-quick.json)")
    args = p.parse_args()
    if args.scale:
        # --scale --quick: the one point CI can afford, its peak RSS held to the target.
        args.scale_sizes = args.scale_sizes if args.scale_sizes is not None else ([] if args.quick else SCALE_SIZES_MIB)
        args.scale_mixed = args.scale_mixed if args.scale_mixed is not None else ([] if args.quick else SCALE_MIXED_MIB)
        args.scale_files = args.scale_files if args.scale_files is not None else (SCALE_QUICK_FILES if args.quick else SCALE_FILES)
    if args.scale and args.only == "upstream":
        p.error("--scale measures ours, and upstream beside it with --scale-upstream")
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.work = args.work or os.path.join(args.cache, "work")
    args.cases = {"both": ["size", "files"], "all": ["size", "files", "s3"]}.get(args.case, [args.case])
    if args.cases == ["s3"] and args.only == "upstream":
        p.error("the s3 case measures ours alone")
    return args


def main():
    args = parse_args()
    # A SIGTERM ends the bench through its `finally` blocks, which stop the servers and moto.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.makedirs(args.cache, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    for tool in ("curl", "rustc", "cp", "sync"):
        if shutil.which(tool) is None:
            sys.exit("bench needs %s on PATH" % tool)
    try:
        ours_bin = args.ours_bin or (build_ours() if args.only != "upstream" else None)
        if args.scale:
            upstream_bin = None
            if args.scale_upstream:
                upstream_bin, reason = fetch_upstream()
                if upstream_bin is None:
                    raise BenchFailure("--scale-upstream: no upstream PocketBase: %s" % reason)
            run_scale(args, ours_bin, upstream_bin)
            return
        loadgen = os.path.join(args.cache, "loadgen")
        if not os.path.exists(loadgen) or os.path.getmtime(loadgen) < os.path.getmtime(os.path.join(HERE, "loadgen.rs")):
            subprocess.run(["rustc", "-O", "--edition", "2021", os.path.join(HERE, "loadgen.rs"), "-o", loadgen], check=True)
        upstream_bin = None
        if args.only != "ours" and args.cases != ["s3"]:
            upstream_bin, reason = fetch_upstream()
            if upstream_bin is None:
                if args.quick:
                    # CI compares with upstream: a missing upstream must fail, not pass quietly.
                    raise BenchFailure("no upstream PocketBase: %s" % reason)
                log("SKIPPING upstream: %s" % reason)
        run_side_by_side(args, ours_bin, upstream_bin, loadgen)
    except (BenchFailure, RuntimeError, OSError, subprocess.CalledProcessError, http.client.HTTPException) as e:
        print("bench: FAILED: %s" % e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
