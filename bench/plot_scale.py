"""Plot of a scale run (bench/run --scale): time and peak RSS of create and restore against
the size of the data dir. Run by scale.py with the Python of its matplotlib venv (the
bench itself stays standard library only).

Usage: plot_scale.py RESULTS.json OUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt


def series(points, kind, x_key):
    rows = sorted((p for p in points if p["kind"] == kind), key=lambda p: p[x_key])
    xs = [p[x_key] for p in rows]
    get = lambda key: [p["ours"][key] for p in rows]
    return xs, get


def main():
    results_path, png = sys.argv[1], sys.argv[2]
    with open(results_path) as f:
        result = json.load(f)
    points = result["points"]
    kinds = [(k, x, label) for k, x, label in
             (("size", "size_mib", "data dir (MiB, mostly random bytes)"),
              ("files", "files", "small files in storage/"))
             if any(p["kind"] == k for p in points)]
    fig, axes = plt.subplots(2, len(kinds), figsize=(6 * len(kinds), 7), squeeze=False)
    for col, (kind, x_key, xlabel) in enumerate(kinds):
        xs, get = series(points, kind, x_key)
        time_ax, rss_ax = axes[0][col], axes[1][col]
        time_ax.plot(xs, get("create_s"), "o-", label="create")
        time_ax.plot(xs, get("restore_s"), "s-", label="restore until serving")
        time_ax.set_ylabel("seconds")
        rss_ax.plot(xs, get("rss_create_mib"), "o-", label="create")
        rss_ax.plot(xs, get("rss_restore_mib"), "s-", label="restore")
        rss_ax.axhline(64, color="grey", linestyle="--", linewidth=1, label="64 MiB target")
        rss_ax.set_ylabel("peak RSS (MiB)")
        rss_ax.set_ylim(bottom=0)
        time_ax.set_ylim(bottom=0)
        for ax in (time_ax, rss_ax):
            ax.set_xlabel(xlabel)
            ax.set_xticks(xs)
            ax.grid(True, alpha=0.3)
            ax.legend()
    fig.suptitle("pb-backups scale run, %s (load %.1f)" % (result["date"][:10], result["load_before"][0]))
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
