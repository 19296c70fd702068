"""Plot of a scale run (bench/run --scale): time and peak RSS of each step against the size
of the data dir and the number of files, ours and upstream's where it finished. Run by scale.py with the Python of its matplotlib venv (the
bench itself stays standard library only).

Usage: plot_scale.py RESULTS.json OUT.png [MORE_RESULTS.json ...]
(points of several runs together: the size points of one and the files points of another)
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt


def series(points, kinds, x_key, server, key):
    """(xs, ys) of `server`'s `key` at the points of `kinds`, where it has that figure."""
    rows = sorted((p for p in points if p["kind"] in kinds and key in (p.get(server) or {})), key=lambda p: p[x_key])
    return [p[x_key] for p in rows], [p[server][key] for p in rows]


COLUMNS = [
    (("size", "mixed"), "size_mib", "data dir (MiB)"),
    (("files",), "files", "small files in storage/"),
]
LINES = [
    ("ours", "create_s", "rss_create_mib", "o-", "create"),
    ("ours", "restore_s", "rss_restore_mib", "s-", "restore until serving"),
    ("ours", "verify_s", "rss_verify_mib", "^-", "verify"),
    ("ours", None, "rss_upload_mib", "v-", "upload"),
    ("ours", None, "rss_download_mib", "d-", "download"),
    ("upstream", "create_s", "rss_create_mib", "o--", "upstream create"),
    ("upstream", "restore_s", "rss_restore_mib", "s--", "upstream restore"),
]


def main():
    results_path, png = sys.argv[1], sys.argv[2]
    with open(results_path) as f:
        result = json.load(f)
    points = result["points"]
    dates = [result["date"][:10]]
    for more in sys.argv[3:]:
        with open(more) as f:
            other = json.load(f)
        kinds = {p["kind"] for p in other["points"]}
        points = [p for p in points if p["kind"] not in kinds] + other["points"]
        dates.append(other["date"][:10])
    columns = [c for c in COLUMNS if any(p["kind"] in c[0] for p in points)]
    fig, axes = plt.subplots(2, len(columns), figsize=(7 * len(columns), 8), squeeze=False)
    for col, (kinds, x_key, xlabel) in enumerate(columns):
        time_ax, rss_ax = axes[0][col], axes[1][col]
        for server, time_key, rss_key, style, label in LINES:
            if time_key:
                xs, ys = series(points, kinds, x_key, server, time_key)
                if xs:
                    time_ax.plot(xs, ys, style, label=label)
            xs, ys = series(points, kinds, x_key, server, rss_key)
            if xs:
                rss_ax.plot(xs, ys, style, label=label)
        rss_ax.axhline(result.get("rss_bound_mib", 64), color="grey", linestyle="--", linewidth=1, label="64 MiB target")
        time_ax.set_ylabel("seconds")
        rss_ax.set_ylabel("peak RSS (MiB)")
        for ax in (time_ax, rss_ax):
            ax.set_xlabel(xlabel)
            ax.set_xscale("log")
            ax.set_yscale("log" if ax is time_ax else "linear")
            ax.grid(True, alpha=0.3, which="both")
            ax.legend(fontsize=8)
        rss_ax.set_ylim(bottom=0)
    fig.suptitle("pb-backups scale runs of %s; upstream where it finished within 10 minutes"
                 % " and ".join(sorted(set(dates))))
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
