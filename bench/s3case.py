"""The S3 case: ours alone with its backups on a local moto S3, a create streamed into a
multipart upload against its two parts done apart (our create on the local backend, a plain
boto3 upload of its archive) and started together; and its table."""

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from api import free_port, login, request
from common import EMAIL, PASSWORD_1, REPO, BenchFailure, MiB, die_with_parent, log, median, sync
from limits import limits_unavailable_reason, time_zip
from payloads import build_payload, copy_payload
from probes import RssSampler, cpu_delta, cpu_seconds
from report import fmt
from servers import Server
from targets import ratio, target_text


S3_BUCKET = "bench"
S3_KEYS = {"access": "bench-access-key", "secret": "bench-secret-key"}
S3_PART = 5 * MiB  # the server's part size; the plain upload uses the same, two in flight

# Run with the moto venv's Python (it has boto3, a dependency of moto): the bench itself stays
# standard library only. `mkbucket` makes the bucket; `upload` times boto3's upload_file of
# one archive (5 MiB parts, 2 in flight, as our server sends them) --repeat times, deleting
# each object after checking its size, and prints the seconds as JSON (each upload's, and
# apart its parts' and its completion's). With `upload-on-go` it prints "ready" once set up
# and waits for a line on stdin before each upload, so that the bench can start it together
# with something else.
S3_HELPER = r'''
import json, sys, time
import boto3
from boto3.s3.transfer import TransferConfig
endpoint, access, secret, cmd = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=access, aws_secret_access_key=secret)
if cmd == "mkbucket":
    s3.create_bucket(Bucket=sys.argv[5])
elif cmd in ("upload", "upload-on-go"):
    bucket, path, repeat, part = sys.argv[5], sys.argv[6], int(sys.argv[7]), int(sys.argv[8])
    config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=2, use_threads=True)
    # The store's completion (CompleteMultipartUpload), timed apart: it follows the last
    # part whatever the client does, so a streamed create cannot overlap it either.
    marks = {}
    s3.meta.events.register("before-call.s3.CompleteMultipartUpload", lambda **kw: marks.update(c0=time.monotonic()))
    s3.meta.events.register("after-call.s3.CompleteMultipartUpload", lambda **kw: marks.update(c1=time.monotonic()))
    runs, cpu, parts, complete, size = [], [], [], [], None
    for i in range(repeat):
        key = "bench_plain_upload_%d.zip" % i
        if cmd == "upload-on-go":
            print("ready", flush=True)
            sys.stdin.readline()
        marks.clear()
        started, cpu0 = time.monotonic(), time.process_time()
        s3.upload_file(path, bucket, key, Config=config)
        ended = time.monotonic()
        runs.append(ended - started)
        cpu.append(time.process_time() - cpu0)
        # An archive of one part is a single PUT, with no completion.
        parts.append(marks.get("c0", ended) - started)
        complete.append(marks.get("c1", ended) - marks.get("c0", ended))
        size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        s3.delete_object(Bucket=bucket, Key=key)
    print(json.dumps({"runs": runs, "cpu": cpu, "parts": parts, "complete": complete, "size": size}))
else:
    sys.exit("unknown command " + cmd)
'''


def moto_python():
    return os.path.join(REPO, ".venv-moto", "bin", "python")


def s3_helper(endpoint, *argv, timeout=1800):
    """Runs S3_HELPER in the moto venv; returns its stdout. Raises BenchFailure with its
    stderr when it fails."""
    try:
        done = subprocess.run([moto_python(), "-c", S3_HELPER, endpoint, S3_KEYS["access"], S3_KEYS["secret"]]
                              + [str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise BenchFailure("boto3 helper %s: %s" % (argv[0], e)) from e
    if done.returncode != 0:
        raise BenchFailure("boto3 helper %s failed: %s" % (argv[0], done.stderr.strip()[-2000:]))
    return done.stdout


class MotoServer:
    """scripts/s3-test-server on a free port (moto in .venv-moto, installed on first use).
    It runs in its own process group and dies with the bench (PDEATHSIG); stop() kills the
    group, and is called from a `finally`."""

    def __init__(self, log_path):
        self.log_path = log_path
        self.proc = None
        self.log = None
        self.endpoint = None

    def start(self):
        script = os.path.join(REPO, "scripts", "s3-test-server")
        if not os.access(moto_python(), os.X_OK):
            log("installing moto into .venv-moto (scripts/s3-test-server --install, once)")
        try:
            subprocess.run([script, "--install"], check=True, capture_output=True, text=True, timeout=900)
            probe = subprocess.run([moto_python(), "-c", "import boto3"], capture_output=True, text=True)
        except (OSError, subprocess.SubprocessError) as e:
            raise BenchFailure("scripts/s3-test-server --install failed: %s %s" % (e, (getattr(e, "stderr", None) or "").strip()))
        if probe.returncode != 0:
            raise BenchFailure("no boto3 in .venv-moto: %s" % probe.stderr.strip())
        port = free_port()
        self.endpoint = "http://127.0.0.1:%d" % port
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([script, str(port)], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise BenchFailure("the S3 test server exited at start; see %s" % self.log_path)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchFailure("the S3 test server did not listen within 60 s; see %s" % self.log_path)
                time.sleep(0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)  # its own group: the script and moto_server
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    pass
        if self.log:
            self.log.close()


def timed_creates(server, token, names, rss):
    """POST /api/backups for each name, each timed until the answer; returns (runs, peak RSS)."""
    t0 = rss.begin()
    runs = []
    for name in names:
        started = time.monotonic()
        status, body = request(server.port, "POST", "/api/backups", {"name": name}, {"Authorization": token})
        runs.append(time.monotonic() - started)
        if status not in (200, 204):
            raise BenchFailure("%s: create answered %s %s" % (server.name, status, body[:200]))
    return runs, rss.peak_since(t0)


def listed_size(server, token, name):
    """Size of backup `name` as the server lists it (on S3: the bucket's object)."""
    status, body = request(server.port, "GET", "/api/backups", None, {"Authorization": token})
    if status != 200:
        raise BenchFailure("%s: list answered %s %s" % (server.name, status, body[:200]))
    for item in json.loads(body):
        if item.get("key") == name:
            return item.get("size")
    return None


def run_s3_case(args, ours_bin):
    """Ours alone (upstream's S3 setup goes through its settings API, not flags): a create
    streamed into a multipart upload on a local moto, against its two parts done apart: our
    create on the local backend (same data, same compressor) and a plain boto3 multipart
    upload of that archive (5 MiB parts, 2 in flight), and the two started together. As
    moto shares the cores with the compression here, the limit is the create and the
    upload's parts done together, then the upload's completion."""
    payload = build_payload(args.cache, args.s3_size)
    base = os.path.join(args.work, "s3")
    shutil.rmtree(base, ignore_errors=True)
    data_dir = os.path.join(base, "data")
    os.makedirs(data_dir)
    subprocess.run([ours_bin, "superuser", "upsert", EMAIL, PASSWORD_1, "--dir", data_dir],
                   check=True, capture_output=True)
    copy_payload(payload, data_dir)
    names = ["bench_s3_%d.zip" % (i + 1) for i in range(args.repeat)]
    ours, lim = {}, {}
    moto = MotoServer(os.path.join(base, "moto.log"))
    server = None
    try:
        # (a) the local create: ours on the local backend, same data dir.
        server = Server("ours (local backend)", ours_bin, data_dir, os.path.join(base, "server-local.log"))
        log("s3 case: ours on the local backend, port %d: create" % server.port)
        server.start()
        rss = RssSampler(server.proc.pid)
        try:
            token = login(server.port, PASSWORD_1)
            cpu0 = cpu_seconds(server.proc.pid)
            runs, peak = timed_creates(server, token, names, rss)
            lim["local_create_cpu_s"] = (cpu_delta(server.proc.pid, cpu0) or 0) / len(names)
        finally:
            rss.stop()
        lim["local_create_runs_s"], lim["local_create_s"] = runs, median(runs)
        lim["rss_local_create_mib"] = peak
        server.stop()
        server = None
        archive = os.path.join(base, "local.zip")
        os.replace(os.path.join(data_dir, "backups", names[0]), archive)
        shutil.rmtree(os.path.join(data_dir, "backups"))
        lim["local_zip_mib"] = os.path.getsize(archive) / MiB
        if limits_unavailable_reason() is None:
            log("s3 case: zip -r -1 -q (for reference)")
            zip_path = os.path.join(base, "limit.zip")
            runs = time_zip(data_dir, zip_path, args.repeat)
            os.remove(zip_path)
            lim["zip_runs_s"], lim["zip_s"] = runs, median(runs)

        log("s3 case: starting moto (scripts/s3-test-server)")
        moto.start()
        s3_helper(moto.endpoint, "mkbucket", S3_BUCKET)

        # (b) the plain upload of the same archive, as boto3 does it.
        log("s3 case: plain boto3 multipart upload of the local archive, %.0f MiB" % lim["local_zip_mib"])
        sync()
        moto_cpu0 = cpu_seconds(moto.proc.pid)
        up = json.loads(s3_helper(moto.endpoint, "upload", S3_BUCKET, archive, args.repeat, S3_PART))
        lim["upload_runs_s"], lim["upload_s"] = up["runs"], median(up["runs"])
        lim["upload_complete_s"] = median(up["complete"])
        # CPU per upload: boto3 (measured inside the helper), moto (includes the deletes).
        lim["upload_cpu_s"] = median(up["cpu"])
        lim["upload_moto_cpu_s"] = (cpu_delta(moto.proc.pid, moto_cpu0) or 0) / args.repeat
        if up["size"] != os.path.getsize(archive):
            raise BenchFailure("plain upload: %s bytes in the bucket, %d sent" % (up["size"], os.path.getsize(archive)))
        lim["sum_s"] = lim["local_create_s"] + lim["upload_s"]
        lim["max_s"] = max(lim["local_create_s"], lim["upload_s"])

        # (c) the local create and the plain upload started at the same moment: on one
        # machine they compete for its cores (moto is one of the processes).
        log("s3 case: local create and plain upload, started together")
        server = Server("ours (local backend)", ours_bin, data_dir, os.path.join(base, "server-together.log"))
        server.start()
        token = login(server.port, PASSWORD_1)
        helper = subprocess.Popen([moto_python(), "-c", S3_HELPER, moto.endpoint, S3_KEYS["access"], S3_KEYS["secret"],
                                   "upload-on-go", S3_BUCKET, archive, str(args.repeat), str(S3_PART)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            creates = []
            for name in names:
                if helper.stdout.readline().strip() != "ready":
                    raise BenchFailure("s3 case: the upload helper did not start: %s" % helper.stderr.read()[-2000:])
                sync()
                helper.stdin.write("go\n")
                helper.stdin.flush()
                started = time.monotonic()
                status, body = request(server.port, "POST", "/api/backups", {"name": name}, {"Authorization": token})
                creates.append(time.monotonic() - started)
                if status not in (200, 204):
                    raise BenchFailure("ours (local backend): create answered %s %s" % (status, body[:200]))
            out, err = helper.communicate(timeout=1800)
            if helper.returncode != 0:
                raise BenchFailure("s3 case: the upload helper failed: %s" % err[-2000:])
        finally:
            if helper.poll() is None:
                helper.kill()
        up = json.loads(out)
        runs = [max(c, u) for c, u in zip(creates, up["runs"])]
        lim["together_runs_s"], lim["together_s"] = runs, median(runs)
        # What streaming can reach here: compressing and sending the parts overlapped on
        # these cores, then the completion, which follows the last part in any pipeline.
        runs = [max(c, p) + k for c, p, k in zip(creates, up["parts"], up["complete"])]
        lim["overlap_runs_s"], lim["overlap_s"] = runs, median(runs)
        server.stop()
        server = None
        shutil.rmtree(os.path.join(data_dir, "backups"), ignore_errors=True)

        # Ours with its backups on the bucket: the create streams into a multipart upload.
        env = dict(os.environ, PB_BACKUPS_S3_ACCESS_KEY=S3_KEYS["access"], PB_BACKUPS_S3_SECRET_KEY=S3_KEYS["secret"])
        server = Server("ours (S3)", ours_bin, data_dir, os.path.join(base, "server-s3.log"),
                        ["--backups-s3-bucket", S3_BUCKET, "--backups-s3-endpoint", moto.endpoint,
                         "--backups-s3-path-style=true"], env)
        log("s3 case: ours on S3, port %d: create" % server.port)
        server.start()
        rss = RssSampler(server.proc.pid)
        try:
            ours["rss_idle_mib"] = rss.current()
            token = login(server.port, PASSWORD_1)
            t0 = rss.begin()
            runs, cpu, moto_cpu = [], [], []
            for name in names:
                cpu0, moto_cpu0 = cpu_seconds(server.proc.pid), cpu_seconds(moto.proc.pid)
                started = time.monotonic()
                status, body = request(server.port, "POST", "/api/backups", {"name": name}, {"Authorization": token})
                runs.append(time.monotonic() - started)
                cpu.append(cpu_delta(server.proc.pid, cpu0))
                moto_cpu.append(cpu_delta(moto.proc.pid, moto_cpu0))
                if status not in (200, 204):
                    raise BenchFailure("ours (S3): create answered %s %s" % (status, body[:200]))
                # The answer means the object is complete in the bucket: it must be listed now.
                size = listed_size(server, token, name)
                if not size:
                    raise BenchFailure("ours (S3): %s not in the bucket after the create answered" % name)
                ours["zip_mib"] = size / MiB
                status, body = request(server.port, "DELETE", "/api/backups/" + name, None, {"Authorization": token})
                if status not in (200, 204):
                    raise BenchFailure("ours (S3): delete answered %s %s" % (status, body[:200]))
            ours["rss_create_mib"] = rss.peak_since(t0)
        finally:
            rss.stop()
        ours["create_runs_s"], ours["create_s"] = runs, median(runs)
        if None not in cpu + moto_cpu:
            ours["create_cpu_s"], ours["create_moto_cpu_s"] = median(cpu), median(moto_cpu)
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        alive = ""
        if server and server.proc:
            code = server.proc.poll()
            alive = " (server %s; see %s)" % ("exited with %s" % code if code is not None else "still running", server.log_path)
        raise BenchFailure("s3 case: %s: %s%s" % (type(e).__name__, e, alive)) from e
    finally:
        if server:
            server.stop()
        moto.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.remove(os.path.join(base, "local.zip"))
    return ours, lim


def print_s3_table(ours, lim, targets):
    def row(label, value, note=""):
        return "| %s | %s | %s |" % (label, fmt(value), note)

    def target(key):
        t = targets.get(key)
        return target_text(t) if t else ""

    o = ours.get("create_s")
    lines = ["| step | value | target |", "|---|---:|---|",
             row("ours: create on S3, POST /api/backups until the answer (s)", o, target("create_s")),
             row("local create: ours, local backend (s)", lim.get("local_create_s")),
             row("  zip -r -1 -q of the same data dir, for reference (s)", lim.get("zip_s"),
                 "" if "zip_s" in lim else "zip not installed"),
             row("plain upload: boto3 upload_file, 5 MiB parts, 2 in flight (s)", lim.get("upload_s")),
             row("  of which the store's completion, after the last part (s)", lim.get("upload_complete_s")),
             row("local create + plain upload (s)", lim.get("sum_s")),
             row("max(local create, plain upload) (s)", lim.get("max_s")),
             row("local create and plain upload started together, until both end (s)", lim.get("together_s")),
             row("local create and the plain upload's parts started together, then its completion (s)", lim.get("overlap_s")),
             row("ours / max", ratio(o, lim.get("max_s"))),
             row("ours / sum", ratio(o, lim.get("sum_s"))),
             row("ours / together", ratio(o, lim.get("together_s"))),
             row("ours / (together, then the completion)", ratio(o, lim.get("overlap_s"))),
             row("archive on S3 / local archive (MiB)", "%s / %s" % (fmt(ours.get("zip_mib")), fmt(lim.get("local_zip_mib")))),
             row("peak RSS, create on S3 (MiB)", ours.get("rss_create_mib"), target("rss_create_mib")),
             row("peak RSS, create on the local backend (MiB)", lim.get("rss_local_create_mib")),
             row("CPU s, create on S3: ours / moto", "%s / %s" % (fmt(ours.get("create_cpu_s")), fmt(ours.get("create_moto_cpu_s")))),
             row("CPU s, local create: ours", lim.get("local_create_cpu_s")),
             row("CPU s, plain upload: boto3 / moto", "%s / %s" % (fmt(lim.get("upload_cpu_s")), fmt(lim.get("upload_moto_cpu_s")))),
             ]
    print("\n".join(lines))
    print("\nCPU seconds are per run (medians); their sum over the run's time says how many of the "
          "%d cores were busy." % os.cpu_count())
