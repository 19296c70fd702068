"""A writer of data.db while a backup is made: does the create block it?

PocketBase writes its data.db through SQLite in WAL mode with a busy timeout of 10 s. This
writer does the same, from the bench's process, one small transaction every 10 ms, and
keeps how long each one took from BEGIN IMMEDIATE to COMMIT: a create that holds a lock on
the database shows as a write that waits that long (or fails after the busy timeout).
"""

import sqlite3
import threading
import time

# PocketBase's own connection settings (core/db_connect.go): WAL, busy_timeout(10000),
# synchronous(NORMAL).
BUSY_TIMEOUT_MS = 10000


class DataDbWriter:
    """Writes a row to `db_path` every `every` seconds while running (a `with` block)."""

    def __init__(self, db_path, every=0.010):
        self.db_path = db_path
        self.every = every
        self.waits = []
        self.failures = []
        self._stop = threading.Event()
        self._thread = None
        self._conn = None

    def __enter__(self):
        # isolation_level=None: the transactions are the writer's own, as written below.
        self._conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = %d" % BUSY_TIMEOUT_MS)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS _bench_writes (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._conn.close()
        return False

    def _run(self):
        tick = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("INSERT INTO _bench_writes (at) VALUES (?)", (time.time(),))
                self._conn.execute("COMMIT")
                self.waits.append(time.monotonic() - started)
            except sqlite3.Error as e:
                self.failures.append("%s after %.3f s" % (e, time.monotonic() - started))
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            # Paced, not back to back: one write per tick, as a steady stream of requests.
            tick += self.every
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def summary(self):
        waits = sorted(self.waits)
        if not waits:
            return {"writes": 0, "failed": len(self.failures), "failures": self.failures[:5]}
        return {
            "writes": len(waits),
            "failed": len(self.failures),
            "failures": self.failures[:5],
            "max_wait_ms": waits[-1] * 1000,
            "p99_wait_ms": waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000,
            "median_wait_ms": waits[len(waits) // 2] * 1000,
        }
