"""The servers' HTTP API as the bench calls it: requests on loopback, the superuser's login,
curl for timed transfers, and checks that the bytes served are the bytes stored."""

import hashlib
import http.client
import json
import os
import socket
import subprocess

from common import EMAIL, BenchFailure


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


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return os.path.getsize(path), h.hexdigest()


def downloaded_sha256(port, path):
    """Size and SHA-256 of what a GET of `path` answers, read as it streams."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            raise BenchFailure("download answered %s" % resp.status)
        h, n = hashlib.sha256(), 0
        for chunk in iter(lambda: resp.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
        return n, h.hexdigest()
    finally:
        conn.close()


def check_same_bytes(what, got, want):
    """Fails the run when (size, sha256) `got` is not `want`."""
    if got != want:
        raise BenchFailure("%s: %d bytes, sha256 %s; expected %d bytes, sha256 %s" % (what, got[0], got[1][:16], want[0], want[1][:16]))
