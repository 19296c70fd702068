"""The data the servers are measured on, deterministic and cached between runs: the size
case (random bytes and JSON lines), the files case (small files laid out like a PocketBase
storage) and the scale points; and the disk room a run needs."""

import json
import os
import random
import shutil
import subprocess
import sys

from common import GiB, MiB, log


# Bump one of these when its generator changes, so cached payloads are rebuilt.
PAYLOAD_VERSION = 2
FILES_PAYLOAD_VERSION = 1
SCALE_PAYLOAD_VERSION = 1

WORDS = (
    "alpha beta gamma delta invoice order customer status shipped pending refunded note "
    "comment title body draft published archived user admin editor viewer token session "
    "product price quantity total currency euro dollar yen address street city country "
    "postal email phone mobile created updated deleted verified active blocked premium "
    "free trial monthly yearly discount coupon cart checkout payment card bank transfer "
    "warehouse stock supplier category tag label color size weight width height depth"
).split()


def json_line(rnd, i):
    record = {
        "id": "%015x" % rnd.getrandbits(60),
        "seq": i,
        "created": "2026-%02d-%02d %02d:%02d:%02d.%03dZ"
        % (rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(0, 23), rnd.randint(0, 59),
           rnd.randint(0, 59), rnd.randint(0, 999)),
        "user": "user_%05d" % rnd.randint(0, 20000),
        "status": rnd.choice(["pending", "shipped", "refunded", "cancelled", "delivered"]),
        "amount": round(rnd.uniform(0, 5000), 2),
        "items": rnd.randint(1, 12),
        "verified": rnd.random() < 0.7,
        "tags": rnd.sample(WORDS, rnd.randint(0, 4)),
        "note": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 18))),
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


def write_random(path, size, rnd):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rnd.randbytes(n))
            left -= n


def write_jsonl(path, size, rnd, pool):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            chunk = "".join(rnd.choices(pool, k=4096)).encode()[:left]
            f.write(chunk)
            left -= len(chunk)


def write_big_files(root, kind, total, per_file, rnd, pool):
    """`total` bytes of random ("blobs") or JSON-lines ("records") data under
    storage/KIND, in files of at most `per_file` bytes."""
    d = os.path.join(root, "storage", kind)
    os.makedirs(d)
    left, n = total, 0
    while left:
        size = min(left, per_file)
        name = os.path.join(d, "%s_%03d.%s" % (kind, n, "bin" if kind == "blobs" else "jsonl"))
        if kind == "blobs":
            write_random(name, size, rnd)
        else:
            write_jsonl(name, size, rnd, pool)
        left -= size
        n += 1


def build_payload(cache, size_mib):
    """The size case: half random bytes, half JSON lines (files of at most 64 MiB), plus
    2,000 small text files; deterministic for a given size, cached between runs."""
    root = os.path.join(cache, "payload-%dM-v%d" % (size_mib, PAYLOAD_VERSION))

    def fill(root):
        rnd = random.Random(20261123)
        half = size_mib * MiB // 2
        pool = [json_line(rnd, i) for i in range(50000)]
        write_big_files(root, "blobs", half, 64 * MiB, rnd, pool)
        write_big_files(root, "records", half, 64 * MiB, rnd, pool)
        for i in range(2000):
            d = os.path.join(root, "storage", "small", "%02d" % (i // 100))
            os.makedirs(d, exist_ok=True)
            lines = "".join(rnd.choice(pool) for _ in range(rnd.randint(1, 8)))
            with open(os.path.join(d, "note_%04d.txt" % i), "w") as f:
                f.write(lines)

    return cached(root, "%d MiB payload" % size_mib, fill)


def build_scale_payload(cache, size_mib):
    """A scale point: `size_mib` MiB of random bytes (incompressible, so the 4 GiB point's
    zip really exceeds 4 GiB and needs ZIP64 offsets) in files of at most 256 MiB, plus
    size/16 of JSON lines so deflate has some work; cached between runs."""
    root = os.path.join(cache, "scale-%dM-v%d" % (size_mib, SCALE_PAYLOAD_VERSION))

    def fill(root):
        rnd = random.Random(20261127)
        pool = [json_line(rnd, i) for i in range(50000)]
        write_big_files(root, "blobs", size_mib * MiB, 256 * MiB, rnd, pool)
        write_big_files(root, "records", size_mib * MiB // 16, 64 * MiB, rnd, pool)

    return cached(root, "%d MiB scale payload" % size_mib, fill)


FILES_PER_RECORD = 100  # files per storage/<collectionId>/<recordId>/ folder (the files case)
RECORDS_PER_COLLECTION = 100


def small_file_text(rnd, record_id, i):
    """About 100 bytes of valid JSON, like a small attachment or a metadata sidecar."""
    head = '{"record":"%s","file":%d,"status":"%s","note":"' % (
        record_id, i, rnd.choice(["pending", "shipped", "refunded", "draft", "published"]))
    tail = '"}\n'
    room = max(0, 100 - len(head) - len(tail))
    note = ""
    while len(note) < room:
        note += rnd.choice(WORDS) + " "
    return head + note[:room] + tail


def files_payload_root(cache, count, per_folder=FILES_PER_RECORD):
    suffix = "" if per_folder == FILES_PER_RECORD else "-%dper" % per_folder
    return os.path.join(cache, "files-%d%s-v%d" % (count, suffix, FILES_PAYLOAD_VERSION))


def build_files_payload(cache, count, per_folder=FILES_PER_RECORD):
    """The files case: `count` files of ~100 bytes laid out like a PocketBase storage:
    storage/<collectionId>/<recordId>/<name>_<suffix>.json, `per_folder` files per record
    folder; deterministic, cached between runs."""
    root = files_payload_root(cache, count, per_folder)

    def fill(root):
        rnd = random.Random(20261126)
        collection = record_dir = None
        for i in range(count):
            if i % (per_folder * RECORDS_PER_COLLECTION) == 0:
                collection = "pbc_%010d" % rnd.getrandbits(32)
            if i % per_folder == 0:
                record_id = "%015x" % rnd.getrandbits(60)
                record_dir = os.path.join(root, "storage", collection, record_id)
                os.makedirs(record_dir)
            name = "%s_%010x.json" % (rnd.choice(WORDS), rnd.getrandbits(40))
            with open(os.path.join(record_dir, name), "w") as f:
                f.write(small_file_text(rnd, record_id, i))

    return cached(root, "%d-file payload" % count, fill)


def payload_is_cached(root):
    return os.path.exists(os.path.join(root, ".complete"))


def cached(root, what, fill):
    """`root`, filled by `fill(root)` unless a finished one is there: `.complete` is written
    last, so a build cut short is redone from scratch."""
    if payload_is_cached(root):
        return root
    log("building the %s in %s" % (what, root))
    shutil.rmtree(root, ignore_errors=True)
    fill(root)
    open(os.path.join(root, ".complete"), "w").close()
    return root


def copy_payload(payload, data_dir, link=False):
    """The payload's storage/ into `data_dir`: copied, or with `link` hard-linked (the scale
    run: a 16 GiB point would not fit on the disk three times over otherwise). Links are
    safe because neither server writes into a file of storage/: a restore renames the old
    tree aside and extracts new files. Linked files are then read once, so that they are in
    the page cache as a fresh copy's would be: else the first step to read them pays the
    disk reads that the steps after it do not."""
    subprocess.run(["cp", "-al" if link else "-r", os.path.join(payload, "storage"), data_dir], check=True)
    subprocess.run(["sync"], check=True)
    if link:
        subprocess.run(["sh", "-c", 'tar -cf - -C "$1" storage | cat >/dev/null', "sh", data_dir], check=True)


def check_free_disk(path, need_bytes, need_inodes, what):
    """Refuses (exits) when the file system of `path` cannot hold `what`."""
    os.makedirs(path, exist_ok=True)
    free = shutil.disk_usage(path).free
    st = os.statvfs(path)
    inodes = st.f_favail if st.f_files else None  # some file systems report no inode limit
    if free < need_bytes:
        sys.exit("bench: not enough free disk for %s in %s: %.1f GiB free, about %.1f GiB "
                 "needed (payloads, server data dirs, zips, restores); free some space or "
                 "choose --cache/--work elsewhere" % (what, path, free / GiB, need_bytes / GiB))
    if inodes is not None and inodes < need_inodes:
        sys.exit("bench: not enough free inodes for %s in %s: %d free, about %d needed"
                 % (what, path, inodes, need_inodes))
