"""The targets of issues 6 and 14, the same-run bounds of --quick, and the check of the
figures against them."""


# Targets of issue 14 (and the two of issue 6 it keeps): (case, figure, against, bound).
# `against` is "upstream" (ours/upstream), a limit figure (ours/limit, see LIMIT_LABELS) or
# "abs" (ours itself). Case "*" applies to both cases.
TARGETS = [
    ("size", "create_s", "upstream", 0.4),
    ("size", "zip_mib", "upstream", 1.02),
    ("size", "restore_s", "upstream", 0.4),
    ("files", "create_s", "zip_s", 1.5),
    ("files", "restore_s", "unzip_s", 1.2),
    ("*", "download_s", "upstream", 1.0),
    ("*", "upload_s", "upstream", 0.25),
    ("*", "rss_create_mib", "abs", 64),
    ("*", "rss_download_mib", "abs", 64),
    ("*", "rss_upload_mib", "abs", 64),
    ("size", "rss_list_mib", "abs", 64),
    ("*", "rss_restore_mib", "abs", 64),
    ("size", "restore_refused", "abs", 0),  # issue 6
    ("size", "list_p99_ms", "abs", 10),  # issue 6
    # S3: a create streamed into a multipart upload overlaps compressing and sending the
    # parts. With the store on the same cores, the limit is the two done at once there, then
    # the store's completion, which no pipeline can start before the last part; the 1.2x is
    # for the pipeline's ends. The max and the sum of the two done apart are shown beside.
    ("s3", "create_s", "overlap_s", 1.2),
]
# --quick's bounds, checked in the same run (CI): (case, figure, against, bound), as TARGETS.
# Measured on the shared 2-core machine (load 2-5, other builds writing to the same disk),
# eight runs: create 0.10-0.22x upstream in the size case (median of 3 creates; typical 0.16)
# and 0.03-0.10x in the files case (typical 0.05; upstream's own creates there took 1.1 s in
# one run and 2.4 s in another); restore until serving 0.25-0.40x (typical 0.32) and
# 0.30-0.40x (typical 0.33; one run at 0.65 before the sync ahead of the restore step); peak
# RSS 21-54 MiB in every step. So ours twice as slow as a typical run fails the size case's
# create (0.32 > 0.3) and restore (0.64 > 0.5) and the files case's restore (0.66 > 0.65); the
# files case's create, noisier, fails at three times. The restore bounds have the least room
# (1.25x and 1.6x the worst run seen); a restore was one sample until two quick runs of eight
# missed 0.5x (0.57, 0.58: one slow fsync in the swap), and is the median of three since. Memory is capped at 96 MiB, half again
# the 64 MiB target of full runs, as machines with more cores run more workers.
QUICK_BOUNDS = [
    ("size", "create_s", "upstream", 0.3),
    ("size", "restore_s", "upstream", 0.5),
    ("files", "create_s", "upstream", 0.15),
    ("files", "restore_s", "upstream", 0.65),
    ("*", "rss_create_mib", "abs", 96),
    ("*", "rss_download_mib", "abs", 96),
    ("*", "rss_upload_mib", "abs", 96),
    ("size", "rss_list_mib", "abs", 96),
    ("*", "rss_restore_mib", "abs", 96),
]
LIMIT_LABELS = {
    "zip_s": "zip -r -1 -q",
    "zip_mib": "zip -r -1",
    "unzip_s": "unzip -q + sync",
    "cp_s": "cp -r + sync",
    "overlap_s": "local create and upload parts together, then the completion",
}


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def check_targets(case, ours, upstream, limits):
    """figure -> {against, bound, value, holds}; `holds` is None when the figure to compare
    with is missing (upstream skipped, zip/unzip unavailable)."""
    return check_bounds(TARGETS, case, ours, upstream, limits)


def check_bounds(bounds, case, ours, upstream, limits):
    """check_targets for any list of bounds shaped like TARGETS."""
    results = {}
    for target_case, key, against, bound in bounds:
        if target_case not in ("*", case) or not ours or key not in ours:
            continue
        if against == "abs":
            value = ours[key]
        elif against == "upstream":
            value = ratio(ours[key], (upstream or {}).get(key))
        else:
            value = ratio(ours[key], (limits or {}).get(against))
        results[key] = {"against": against, "bound": bound, "value": value,
                        "holds": None if value is None else value <= bound}
    return results


def target_text(t):
    if t["against"] == "abs":
        bound = "<= %g" % t["bound"]
    elif t["against"] == "upstream":
        bound = "<= %gx upstream" % t["bound"]
    else:
        bound = "<= %gx %s" % (t["bound"], LIMIT_LABELS[t["against"]])
    status = {True: "holds", False: "MISSED", None: "n/a"}[t["holds"]]
    return "%s: %s" % (bound, status)
