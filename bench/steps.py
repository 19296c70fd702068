"""The measured steps on one server (create, create with a writer, download, upload, list,
verify, restore until serving), its data dir made and removed around them, and the
restore's phases read from our server's log."""

import datetime
import http.client
import json
import os
import shutil
import subprocess
import time
import zipfile

from api import check_same_bytes, curl, downloaded_sha256, login, request, sha256_of
from common import PASSWORD_1, PASSWORD_2, BenchFailure, MiB, log, median, read_into_page_cache, sync
from payloads import copy_payload
from probes import DiskSampler, RefusalPoller, RssSampler
from servers import Server, set_superuser_secrets, superuser_secrets
from writers import DataDbWriter


def tiny_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("note.txt", "list benchmark filler\n")


def has_zip64_records(path):
    """True when the archive ends with the ZIP64 end-of-central-directory locator, which a
    writer adds when offsets pass 4 GiB or there are more than 65,535 entries."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - (1 << 16) - 22 - 20))  # max comment + EOCD + locator
        return b"PK\x06\x07" in f.read()


def disk_usage_mib(path):
    """Space the files under `path` take on disk (blocks, not apparent sizes)."""
    out = subprocess.run(["du", "-s", "--block-size=1", path], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0]) / MiB


def run_server(server, args, loadgen, upload_source, upload_dir, steps, cap_s=600):
    """The steps (create, download, upload, list, verify, restore) on one started server;
    returns its figures. With "disk" among the steps, also the space the create and the
    restore take at their peak, beside the data dir's and the archive's own. Raises
    BenchFailure when a step does not work."""
    r = {}
    pid = server.proc.pid
    rss = RssSampler(pid)
    disk = DiskSampler(server.data_dir) if "disk" in steps else None
    if disk:
        r["data_dir_disk_mib"] = disk_usage_mib(server.data_dir)
    port = server.port
    try:
        r["rss_idle_mib"] = rss.current()
        token = login(port, PASSWORD_1)
        auth = {"Authorization": token}

        log(server.name, "create")
        # A full scale run starts each step with its input in the page cache, as its limits
        # (--scale --quick, in CI, checks memory alone and skips the reads).
        warm = args.scale and not args.quick
        if warm:
            read_into_page_cache(server.data_dir)
            sync()
        disk_t0 = disk.begin() if disk else None
        t0 = rss.begin_step(r, "create")
        runs = []
        for i in range(args.repeat):
            name = "bench_create.zip" if i == 0 else "bench_create_%d.zip" % (i + 1)
            started = time.monotonic()
            status, body = request(port, "POST", "/api/backups", {"name": name}, auth, timeout=cap_s)
            runs.append(time.monotonic() - started)
            if status not in (200, 204):
                raise BenchFailure("%s: create answered %s %s" % (server.name, status, body[:200]))
        r["create_runs_s"], r["create_s"] = runs, median(runs)
        r["rss_create_mib"] = rss.peak_since(t0)
        if disk:
            # The archive itself is in the figure: the create's peak is it plus any temp copy.
            r["disk_create_peak_mib"] = disk.peak_since(disk_t0)
        created = os.path.join(server.backups_dir, "bench_create.zip")
        r["zip_mib"] = os.path.getsize(created) / MiB
        r["zip64"] = has_zip64_records(created)

        if "writers" in steps:
            # One more create, not among the timed ones, with a writer of data.db every
            # 10 ms through SQLite as PocketBase writes: its longest wait is how long the
            # create blocks writers. The backup is deleted afterwards (disk).
            log(server.name, "create with a writer of data.db every 10 ms")
            if warm:
                read_into_page_cache(server.data_dir)
                sync()
            with DataDbWriter(os.path.join(server.data_dir, "data.db")) as writer:
                started = time.monotonic()
                status, body = request(port, "POST", "/api/backups", {"name": "bench_writers.zip"}, auth)
                r["writers_create_s"] = time.monotonic() - started
            if status not in (200, 204):
                raise BenchFailure("%s: create with a writer answered %s %s" % (server.name, status, body[:200]))
            r["writers"] = writer.summary()
            r["writers_max_wait_ms"] = r["writers"].get("max_wait_ms")
            if r["writers"]["failed"]:
                log(server.name, "writes failed during the create: %s" % r["writers"]["failures"])
            status, body = request(port, "DELETE", "/api/backups/bench_writers.zip", None, auth)
            if status not in (200, 204):
                raise BenchFailure("%s: delete answered %s %s" % (server.name, status, body[:200]))

        if "download" in steps:
            log(server.name, "download")
            status, body = request(port, "POST", "/api/files/token", None, auth)
            if status != 200:
                raise BenchFailure("%s: file token answered %s %s" % (server.name, status, body[:200]))
            file_token = json.loads(body)["token"]
            if warm:
                read_into_page_cache(created)
            t0 = rss.begin_step(r, "download")
            runs = []
            for _ in range(args.repeat):
                code, secs = curl(["-o", "/dev/null", "http://127.0.0.1:%d/api/backups/bench_create.zip?token=%s" % (port, file_token)])
                if code != 200:
                    raise BenchFailure("%s: download answered %s" % (server.name, code))
                runs.append(secs)
            r["download_runs_s"], r["download_s"] = runs, median(runs)
            r["rss_download_mib"] = rss.peak_since(t0)
            # Untimed: the bytes served are the stored archive's.
            got = downloaded_sha256(port, "/api/backups/bench_create.zip?token=%s" % file_token)
            check_same_bytes("%s: the downloaded bench_create.zip" % server.name, got, sha256_of(created))

        if "upload" in steps:
            log(server.name, "upload")
            if upload_source is None:
                upload_source = created
            upload_path = os.path.join(upload_dir, "bench_upload.zip")
            os.makedirs(upload_dir, exist_ok=True)
            if os.path.abspath(upload_source) != upload_path:
                shutil.copyfile(upload_source, upload_path)
            r["upload_mib"] = os.path.getsize(upload_path) / MiB
            if warm:
                read_into_page_cache(upload_path)
                sync()
            t0 = rss.begin_step(r, "upload")
            runs = []
            for i in range(args.repeat):
                name = "bench_upload.zip" if i == 0 else "bench_upload_%d.zip" % (i + 1)
                code, secs = curl(["-o", "/dev/null", "-H", "Authorization: " + token,
                                   "-F", "file=@%s;filename=%s" % (upload_path, name),
                                   "http://127.0.0.1:%d/api/backups/upload" % port])
                if code not in (200, 204):
                    raise BenchFailure("%s: upload answered %s" % (server.name, code))
                runs.append(secs)
            r["upload_runs_s"], r["upload_s"] = runs, median(runs)
            r["rss_upload_mib"] = rss.peak_since(t0)
            sent = sha256_of(upload_path)
            for i in range(args.repeat):
                name = "bench_upload.zip" if i == 0 else "bench_upload_%d.zip" % (i + 1)
                check_same_bytes("%s: the stored upload %s" % (server.name, name),
                                 sha256_of(os.path.join(server.backups_dir, name)), sent)

        if "list" in steps:
            log(server.name, "list with %d backups" % args.list_backups)
            filler = os.path.join(args.work, "filler.zip")
            tiny_zip(filler)
            names = []
            for i in range(args.list_backups - len(os.listdir(server.backups_dir))):
                name = os.path.join(server.backups_dir, "bench_list_%04d.zip" % i)
                shutil.copyfile(filler, name)
                names.append(name)
            status, body = request(port, "GET", "/api/backups", None, auth)
            if status != 200:
                raise BenchFailure("%s: list answered %s %s" % (server.name, status, body[:200]))
            r["list_count"] = len(json.loads(body))
            t0 = rss.begin_step(r, "list")
            out = subprocess.run([loadgen, "127.0.0.1:%d" % port, "/api/backups", str(args.list_clients),
                                  "1", str(args.list_secs), "Authorization: " + token],
                                 check=True, capture_output=True, text=True).stdout
            lg = json.loads(out)
            r["rss_list_mib"] = rss.peak_since(t0)
            r["list_p50_ms"], r["list_p99_ms"], r["list_rps"] = lg["p50_ms"], lg["p99_ms"], lg["rps"]
            r["list_errors"] = lg["errors"] + lg["non_200"]
            for name in names:
                os.remove(name)

        if "verify" in steps:
            log(server.name, "verify")
            if warm:
                read_into_page_cache(created)
            t0 = rss.begin_step(r, "verify")
            started = time.monotonic()
            status, body = request(port, "POST", "/api/backups/bench_create.zip/verify", None, auth, timeout=1800)
            r["verify_s"] = time.monotonic() - started
            r["rss_verify_mib"] = rss.peak_since(t0)
            if status != 200 or not json.loads(body).get("ok"):
                raise BenchFailure("%s: verify answered %s %s" % (server.name, status, body[:200]))

        log(server.name, "restore")
        poller = RefusalPoller(port)
        disk_t0 = disk.begin() if disk else None
        t0 = rss.begin_step(r, "restore")
        # As many restores as creates (the median counts): one restore alone carried any
        # stall of the disk in full (a quick run's restore of 32 MiB once took 1.3 s, 0.6 s
        # of it in the swap's fsyncs, where other runs took a third of upstream's time).
        runs, accepts = [], []
        try:
            for _ in range(args.repeat):
                runs.append(restore_once(server, port, auth, created, warm, cap_s, accepts))
        except BaseException:
            poller.stop()
            raise
        r["restore_runs_s"], r["restore_s"] = runs, median(runs)
        r["restore_accept_s"] = median(accepts)
        r["rss_restore_mib"] = rss.peak_since(t0)
        if disk:
            # Until served: the extraction beside the old data dir (moved aside, removed
            # after the swap) and the archive.
            r["disk_restore_peak_mib"] = disk.peak_since(disk_t0)
        time.sleep(0.3)
        poller.stop()
        r["restore_refused"] = poller.refused
        r["restore_failed"] = poller.failed
        r["restore_poll_attempts"] = poller.attempts
        r["restore_longest_wait_s"] = poller.longest_wait
        if server.proc.pid != pid or server.proc.poll() is not None:
            raise BenchFailure("%s: the server process is gone after the restore" % server.name)
        r["rss_after_mib"] = rss.current()
    finally:
        rss.stop()
        if disk:
            disk.stop()
    return r


def restore_once(server, port, auth, created, warm, cap_s, accepts):
    """One restore of bench_create.zip, timed from the request until the restored data is
    served; appends how long the request took to answer to `accepts`."""
    # The backup holds PASSWORD_1; changing it now invalidates `auth`, which becomes valid
    # again exactly when the restored data is served. So a server that answers the
    # restore early but serves the restored data later is timed until it serves it.
    set_superuser_secrets(server.data_dir, server.secrets_2)
    if request(port, "GET", "/api/backups", None, auth)[0] != 401:
        raise BenchFailure("%s: the old token still works after the password change" % server.name)
    token_2 = login(port, PASSWORD_2)
    if warm:
        read_into_page_cache(created)
    # The writeback of the steps before (uploads, list fillers) must not land in the
    # restore's time: ours syncs the file system before it serves the restored data.
    sync()
    time.sleep(0.2)
    started = time.monotonic()
    status, body = request(port, "POST", "/api/backups/bench_create.zip/restore", None,
                           {"Authorization": token_2})
    accepts.append(time.monotonic() - started)
    if status not in (200, 204):
        raise BenchFailure("%s: restore answered %s %s" % (server.name, status, body[:200]))
    deadline = started + cap_s
    while True:
        try:
            if request(port, "GET", "/api/backups", None, auth, timeout=60)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        if server.proc.poll() is not None:
            raise BenchFailure("%s exited during the restore; see %s" % (server.name, server.log_path))
        if time.monotonic() > deadline:
            raise BenchFailure("%s: the restored data was never served" % server.name)
        time.sleep(0.01)


# Marks of our server's log during a restore, in order: (mark, texts that show it).
RESTORE_MARKS = [
    ("extracted", ("extracted, swapping in", "initiate graceful shutdown")),
    ("old_server_stopped", ("server stopped",)),
    ("swapped", ("restore swapped in",)),
    ("committed", ("restore complete",)),
    ("serving", ("server started",)),
]


def restore_phases(log_path):
    """Seconds from the restore's start to each later mark of our server's log."""
    import re
    with open(log_path, "rb") as f:
        text = re.sub(rb"\x1b\[[0-9;]*m", b"", f.read()).decode(errors="replace")
    lines = text.splitlines()

    def stamp(line):
        try:
            return datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
        except (ValueError, IndexError):
            return None

    starts = [i for i, l in enumerate(lines) if "restore started" in l]
    starts = starts or [i for i, l in enumerate(lines) if "restore accepted" in l]
    if not starts or stamp(lines[starts[-1]]) is None:
        return None
    t0 = stamp(lines[starts[-1]])
    phases, at = {}, starts[-1] + 1
    for mark, needles in RESTORE_MARKS:
        for i in range(at, len(lines)):
            if any(n in lines[i] for n in needles) and stamp(lines[i]):
                phases[mark] = round((stamp(lines[i]) - t0).total_seconds(), 3)
                at = i + 1
                break
    return phases


def bench_one(name, binary, args, case, payload, loadgen, upload_source, steps, cap_s=600):
    """One server on a fresh data dir holding the payload; returns its figures. The data
    dir is deleted afterwards (scale payloads are large); the log stays for reading."""
    base = os.path.join(args.work, case, name)
    shutil.rmtree(base, ignore_errors=True)
    data_dir = os.path.join(base, "data")
    os.makedirs(data_dir)
    server = Server(name, binary, data_dir, os.path.join(base, "server.log"))
    # The restore step changes the password while the server runs. Our server refuses
    # offline commands on a data dir it serves (lock), so the change is made in data.db
    # directly, with the hash and token key `superuser upsert` wrote for PASSWORD_2.
    server.upsert(PASSWORD_2)
    server.secrets_2 = superuser_secrets(data_dir)
    server.upsert(PASSWORD_1)
    copy_payload(payload, data_dir, link=args.scale)
    # The copy's writeback must not land in the create's time (at 4 GiB it tripled it).
    sync()
    log("%s, %s case: serving %s on port %d" % (name, case, data_dir, server.port))
    server.start()
    try:
        r = run_server(server, args, loadgen, upload_source,
                       os.path.join(args.work, "upload", case), steps, cap_s)
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        # Name the server, the case and whether it is still alive: "connection refused"
        # alone does not say that the server died.
        code = server.proc.poll()
        raise BenchFailure("%s, %s case: %s: %s (server %s; see %s)" % (
            name, case, type(e).__name__, e, "exited with %s" % code if code is not None else "still running",
            server.log_path)) from e
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    if name == "ours":
        r["restore_phases_s"] = restore_phases(server.log_path)
    return r
