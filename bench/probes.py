"""What is watched beside a step: a server's memory (sampled RSS and the kernel's
high-water mark), the space used on its file system, connections refused while it
restarts, and a process's CPU time."""

import os
import shutil
import socket
import threading
import time

from common import MiB


class Sampler:
    """A reading (`read()`, None when unavailable) taken every ~10 ms on a thread of its own,
    kept with its time, until `stop()`."""

    def __init__(self):
        self.samples = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            value = self.read()
            if value is not None:
                self.samples.append((time.monotonic(), value))
            time.sleep(0.01)

    def most_since(self, t0):
        return max([value for t, value in self.samples if t >= t0] or [0])

    def stop(self):
        self.stopped.set()
        self.thread.join()


class RssSampler(Sampler):
    """Samples VmRSS of one PID (the PID survives a re-exec); also resets and reads the
    kernel's high-water mark (VmHWM), which sees peaks between samples."""

    def __init__(self, pid):
        self.pid = pid
        super().__init__()

    def _field(self, name):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith(name + ":"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return None

    def read(self):
        return self._field("VmRSS")

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
        return max(self.most_since(t0), self._field("VmHWM") or 0) / MiB

    def current(self):
        return (self.read() or 0) / MiB


class DiskSampler(Sampler):
    """Samples the bytes used on the file system of `path`: the space a step needs at its
    peak (archives, temp copies, extractions) is the most used during it minus what was
    used when it began. Anything else writing to that file system counts too: run on a
    quiet machine."""

    def __init__(self, path):
        self.path = path
        super().__init__()

    def read(self):
        try:
            return shutil.disk_usage(self.path).used
        except OSError:
            return None

    def begin(self):
        """(start time, bytes used then)."""
        return time.monotonic(), self.read() or 0

    def peak_since(self, begun):
        t0, base = begun
        return (max(self.most_since(t0), self.read() or 0) - base) / MiB


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


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (all its threads), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_delta(pid, before):
    now = cpu_seconds(pid)
    return None if now is None or before is None else now - before
