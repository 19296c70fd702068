"""The report: one case's table (ours, upstream, their ratio, the limit and ours against it,
the target), the machine's description and the JSON results."""

import json
import os
import platform

from common import MiB
from targets import LIMIT_LABELS, ratio, target_text


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "%.3f" % v if abs(v) < 10 else "%.1f" % v
    return str(v)


# (figure, label, limit figure or None, whether the row carries the figure's target)
ROWS = [
    ("create_s", "create (s)", "zip_s", True),
    ("zip_mib", "zip size (MiB)", "zip_mib", True),
    ("download_s", "download, curl (s)", None, True),
    ("upload_s", "upload, curl multipart (s)", None, True),
    ("restore_s", "restore until serving (s)", "unzip_s", True),
    ("restore_s", "  the same against cp -r + sync", "cp_s", False),
    ("restore_accept_s", "  restore request answered (s)", None, True),
    ("restore_refused", "  refused connections", None, True),
    ("restore_failed", "  failed connections (reset, no answer)", None, True),
    ("list_p50_ms", "list p50 (ms)", None, True),
    ("list_p99_ms", "list p99 (ms)", None, True),
    ("list_rps", "list requests/s", None, True),
    ("writers_max_wait_ms", "longest write to data.db during a create (ms)", None, True),
    ("rss_idle_mib", "peak RSS idle (MiB)", None, True),
    ("rss_create_mib", "peak RSS create (MiB)", None, True),
    ("rss_download_mib", "peak RSS download (MiB)", None, True),
    ("rss_upload_mib", "peak RSS upload (MiB)", None, True),
    ("rss_list_mib", "peak RSS list (MiB)", None, True),
    ("rss_restore_mib", "peak RSS restore (MiB)", None, True),
    ("rss_before_restore_mib", "  RSS when the restore starts (MiB)", None, True),
]

# Figures whose ratio ours/upstream says nothing (counts, the moment of the answer).
NO_RATIO = {"restore_accept_s", "restore_refused", "restore_failed"}


def print_case_table(case, ours, upstream, limits, targets):
    lines = ["| step | ours | upstream | ours/upstream | limit | ours/limit | target |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for key, label, limit_key, carries_target in ROWS:
        o = ours.get(key) if ours else None
        u = upstream.get(key) if upstream else None
        if o is None and u is None:
            continue  # a step this case does not have (list in the files case)
        r = ratio(o, u) if key not in NO_RATIO else None
        lv = (limits or {}).get(limit_key) if limit_key else None
        limit = "%s (%s)" % (fmt(lv), LIMIT_LABELS[limit_key]) if lv is not None else "-"
        rl = ratio(o, lv)
        t = targets.get(key) if carries_target else None
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, fmt(o), fmt(u), "%.2f" % r if r is not None else "-", limit,
            "%.2f" % rl if rl is not None else "-", target_text(t) if t else ""))
    print("\n".join(lines))
    if limits and limits.get("unavailable"):
        print("\nlimits zip -r -1 / unzip unavailable: %s" % limits["unavailable"])


def case_title(case, args):
    if case == "s3":
        return ("s3 case: %d MiB data dir like the size case, backups on a local moto S3, ours only "
                "(upstream's S3 needs its settings API)" % args.s3_size)
    if case == "size":
        return "size case: %d MiB data dir (half random bytes, half JSON lines, 2,000 small files)" % args.size
    return "files case: %d files of ~100 bytes under storage/<collection>/<record>/" % args.files


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "mem_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MiB}


def write_json(path, result):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print("\nwritten:", path)
