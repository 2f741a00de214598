"""`kiln upload` against `kiln serve`: a 1 GiB multipart upload interrupted at random points
20 times (SIGKILL mid-part: the connections drop with bytes in flight; once SIGINT: Ctrl-C),
then resumed to the end. Each run may send only parts the store did not hold when it
started (asked of the API independently), a killed run can lose at most the parts in
flight, and the stored object's SHA-256 is the file's. Also: dedup, and refusals.

KILN_UPLOAD_TEST_MIB sets the file's size (1024 by default).
"""
import hashlib
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import http.client

from prometheus_client.parser import text_string_to_metric_families

from harness import KILN, WAIT, Kiln, full_speed

SERVICE_KEY = "service-key-0123456789abcdef0123456789abcdef"
MIB = 1 << 20
SIZE_MIB = int(os.environ.get("KILN_UPLOAD_TEST_MIB", "1024"))
PARALLEL = 4
INTERRUPTIONS = 20


class Run:
    """One `kiln upload --events` process; its stdout events, read as they come."""

    def __init__(self, args, env, parallel=PARALLEL):
        self.proc = subprocess.Popen([KILN, "upload", *args, "--events", "--no-progress",
                                      "--parallel", str(parallel)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.events = []
        self.cv = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cv:
                self.events.append(json.loads(line))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, predicate, timeout=120):
        """Waits until the events so far satisfy predicate, or the process ended."""
        with self.cv:
            ok = self.cv.wait_for(lambda: predicate(self.events) or self.proc.poll() is not None, timeout)
            if not ok:
                raise AssertionError("kiln upload made no progress: %s" % self.events[-3:])
            return predicate(self.events)

    def finish(self):
        code = self.proc.wait(300)
        self.reader.join(WAIT)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code, err

    def of(self, kind):
        with self.cv:
            return [e for e in self.events if e["event"] == kind]


def samples(k):
    """The node's metrics: {(name, ((label, value), ...)): value}."""
    _, _, text = k.request("GET", "/metrics")
    return {(x.name, tuple(sorted(x.labels.items()))): x.value
            for f in text_string_to_metric_families(text.decode()) for x in f.samples}


@full_speed("1 GiB uploaded 20 times over: heavy")
class UploadCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Twenty runs in quick succession by one user: the rate limit is not under test here
        # (test_rate_limits_are_waited_out is), so it does not throttle the test's own reads.
        cls.kiln = Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false",
                        "--api-user-requests-per-second", "1000")
        cls.api = f"http://{cls.kiln.host}:{cls.kiln.port}"
        cls.tmp = tempfile.mkdtemp(prefix="kiln-upload-")
        cls.token = cls.post("/v1/tokens", SERVICE_KEY, {"user": {"id": "ann"}})[1]["token"]
        cls.env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        cls.env["KILN_TOKEN"] = cls.token

    @classmethod
    def tearDownClass(cls):
        cls.kiln.stop()
        subprocess.run(["rm", "-rf", cls.tmp])

    @classmethod
    def post(cls, path, tok, body):
        st, _, doc = cls.kiln.call("POST", path, tok, body)
        return st, doc

    def get(self, path):
        st, _, doc = self.kiln.call("GET", path, self.token)
        return st, doc

    def project(self, pid):
        st, doc = self.post("/v1/projects", self.token, {"id": pid, "name": pid})
        self.assertEqual(st, 201, doc)

    def make_file(self, name, mib):
        path = os.path.join(self.tmp, name)
        h = hashlib.sha256()
        rng = random.Random(name)
        with open(path, "wb") as f:
            for _ in range(mib):
                chunk = rng.randbytes(MIB)
                h.update(chunk)
                f.write(chunk)
        return path, h.hexdigest()

    def upload_args(self, path, pid):
        return [path, "--project", pid, "--api", self.api, "--state-dir", os.path.join(self.tmp, "state")]

    def test_interrupted_twenty_times_then_resumed(self):
        self.project("big")
        path, digest = self.make_file("scan.bin", SIZE_MIB)
        args = self.upload_args(path, "big")
        rng = random.Random(7)
        upload_id, total = None, None
        completed_by_run = []
        for i in range(INTERRUPTIONS):
            held = set()
            if upload_id:
                st, doc = self.get(f"/v1/projects/big/uploads/{upload_id}")
                self.assertEqual((st, doc["state"]), (200, "open"), doc)
                held = {p["number"] for p in doc["parts"]}
            run = Run(args, self.env)
            # A random point: after 0-3 parts this run completes (0: once the first is in flight).
            k = rng.randint(0, 3)
            if k == 0:
                run.wait_for(lambda ev: any(e["event"] == "part-start" for e in ev))
            else:
                run.wait_for(lambda ev: sum(e["event"] == "part" for e in ev) >= k)
            ctrl_c = i == INTERRUPTIONS // 2
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGINT if ctrl_c else signal.SIGKILL)
            code, err = run.finish()
            start = run.of("upload")
            if start:
                upload_id = start[0]["id"]
                total = start[0]["parts"]
                self.assertEqual(set(start[0]["to_send"]) & held, set(), "a held part was planned again")
            started = {e["number"] for e in run.of("part-start")}
            done = {e["number"] for e in run.of("part")}
            self.assertEqual(done & held, set(), f"run {i} sent parts the store held")
            if run.of("done"):
                break  # it finished before the interruption landed
            if ctrl_c:
                self.assertEqual(code, 130, err)
                self.assertIn("Run the same command again to resume", err)
                self.assertEqual(started, done, "Ctrl-C lets the parts in flight finish")
            else:
                self.assertEqual(code, -signal.SIGKILL)
                self.assertLessEqual(len(started - done), PARALLEL, "more parts lost than in flight")
            completed_by_run.append(done)
        # Resume to the end.
        run = Run(args, self.env)
        code, err = run.finish()
        self.assertEqual(code, 0, err)
        final = run.of("done")[0]
        self.assertEqual(final["asset"]["sha256"], digest)
        self.assertEqual(final["asset"]["size"], SIZE_MIB * MIB)
        every = [n for done in completed_by_run for n in done] + [e["number"] for e in run.of("part")]
        self.assertEqual(len(every), len(set(every)), "a part completed twice")
        self.assertIsNotNone(total, "not a multipart upload: KILN_UPLOAD_TEST_MIB must pass 100")
        self.assertLessEqual(len(set(every)), total)
        # The stored object is the file (the API checked its hash too; check it here).
        st, meta = self.get(f"/v1/projects/big/assets/{final['asset']['id']}")
        u = urllib.parse.urlsplit(meta["download"]["url"])
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=WAIT)
        try:
            c.request("GET", u.path + "?" + u.query)
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            h = hashlib.sha256()
            while chunk := r.read(MIB):
                h.update(chunk)
        finally:
            c.close()
        self.assertEqual(h.hexdigest(), digest)
        print(f"{len(completed_by_run)} interruptions; parts completed per run: "
              f"{[len(d) for d in completed_by_run]} + {len(run.of('part'))}")

    def test_a_second_upload_of_the_same_file_sends_nothing(self):
        self.project("dedup")
        path, digest = self.make_file("tex.png", 2)
        args = self.upload_args(path, "dedup")
        first = Run(args, self.env)
        self.assertEqual(first.finish()[0], 0)
        second = Run(args, self.env)
        code, err = second.finish()
        self.assertEqual(code, 0, err)
        d = second.of("done")[0]
        self.assertTrue(d["deduplicated"])
        self.assertEqual((d["bytes_sent"], d["asset"]["id"]), (0, first.of("done")[0]["asset"]["id"]))

    def test_kiln_download_saves_the_asset_under_its_name_and_checks_it(self):
        self.project("down")
        path, digest = self.make_file("crate model.glb", 3)
        up = Run(self.upload_args(path, "down"), self.env)
        self.assertEqual(up.finish()[0], 0)
        aid = up.of("done")[0]["asset"]["id"]
        where = tempfile.mkdtemp(prefix="kiln-download-", dir=self.tmp)
        # A link planted where a careless downloader would write first is never followed.
        victim = os.path.join(self.tmp, "victim.txt")
        with open(victim, "w") as f:
            f.write("precious")
        os.symlink(victim, os.path.join(where, "crate model.glb.kiln-download"))
        r = subprocess.run([KILN, "download", aid, "--project", "down", "--api", self.api],
                           cwd=where, env=self.env, capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(r.returncode, 0, r.stderr)
        saved = os.path.join(where, "crate model.glb")
        with open(saved, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest)
        # Not replaced without --force; -o picks another name; nothing half-written is left.
        r = subprocess.run([KILN, "download", aid, "--project", "down", "--api", self.api],
                           cwd=where, env=self.env, capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--force", r.stderr)
        r = subprocess.run([KILN, "download", aid, "--project", "down", "--api", self.api, "-o", "copy.glb"],
                           cwd=where, env=self.env, capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(os.listdir(where)),
                         ["copy.glb", "crate model.glb", "crate model.glb.kiln-download"])
        with open(victim) as f:
            self.assertEqual(f.read(), "precious")
        # Someone else's project: the API's 404, said plainly.
        r = subprocess.run([KILN, "download", aid, "--project", "nope", "--api", self.api],
                           cwd=where, env=self.env, capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(r.returncode, 1)
        self.assertIn("404", r.stderr)

    def test_rate_limits_are_waited_out(self):
        # One request per second (burst 2) for this user: the uploader's calls get 429 and
        # it waits as Retry-After says instead of failing.
        k = Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false",
                 "--api-user-requests-per-second", "1", "--uploads-multipart-threshold-bytes", str(6 * MIB),
                 "--uploads-part-size-bytes", str(5 * MIB))
        try:
            tok = k.call("POST", "/v1/tokens", SERVICE_KEY, {"user": {"id": "slow"}})[2]["token"]
            self.assertEqual(k.call("POST", "/v1/projects", tok, {"id": "slow", "name": "Slow"})[0], 201)
            path, digest = self.make_file("slow.bin", 30)
            run = Run([path, "--project", "slow", "--api", f"http://{k.host}:{k.port}",
                       "--state-dir", os.path.join(self.tmp, "state-slow")], dict(self.env, KILN_TOKEN=tok))
            code, err = run.finish()
            self.assertEqual(code, 0, err)
            self.assertEqual(run.of("done")[0]["asset"]["sha256"], digest)
            st, _, metrics = k.request("GET", "/metrics")
            limited = [l for l in metrics.decode().splitlines()
                       if l.startswith('kiln_api_rate_limited_total{kind="user"}')]
            self.assertTrue(limited and float(limited[0].split()[-1]) > 0, limited)
        finally:
            k.stop()

    def small_parts_node(self, *args):
        """A `kiln serve` of its own with 5 MiB parts (multipart above 6 MiB)."""
        k = Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false",
                 "--uploads-multipart-threshold-bytes", str(6 * MIB), "--uploads-part-size-bytes",
                 str(5 * MIB), *args)
        self.addCleanup(k.stop)
        st, _, doc = k.call("POST", "/v1/tokens", SERVICE_KEY, {"user": {"id": "ann"}})
        self.assertEqual(st, 201, doc)
        tok = doc["token"]
        self.assertEqual(k.call("POST", "/v1/projects", tok, {"id": "p", "name": "P"})[0], 201)
        return k, f"http://{k.host}:{k.port}", dict(self.env, KILN_TOKEN=tok)

    def write_random(self, path, size, seed):
        with open(path, "wb") as f:
            f.write(random.Random(seed).randbytes(size))
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def test_a_changed_file_starts_over(self):
        k, api, env = self.small_parts_node()
        path = os.path.join(self.tmp, "changing.bin")
        args = [path, "--project", "p", "--api", api, "--state-dir", os.path.join(self.tmp, "state-changing")]
        # Same size with other bytes (only the mtime tells), then another size.
        for seed, size, new_size in ((1, 20 * MIB, 20 * MIB), (3, 20 * MIB, 22 * MIB)):
            with self.subTest(size=size, new_size=new_size):
                self.write_random(path, size, seed)
                first = Run(args, env, parallel=1)
                first.wait_for(lambda ev: any(e["event"] == "part" for e in ev))
                first.proc.send_signal(signal.SIGKILL)
                code, err = first.finish()
                self.assertEqual(code, -signal.SIGKILL, "the first run ended before it was interrupted")
                old = first.of("upload")[0]["id"]
                st, now = k.call("GET", f"/v1/projects/p/uploads/{old}", env["KILN_TOKEN"])[::2]
                self.assertEqual((st, now["state"], len(now["parts"]) >= 1), (200, "open", True), now)
                before = os.stat(path).st_mtime_ns
                digest = self.write_random(path, new_size, seed + 1)
                self.assertNotEqual(os.stat(path).st_mtime_ns, before, "the rewrite kept the mtime")
                again = Run(args, env, parallel=1)
                code, err = again.finish()
                self.assertEqual(code, 0, err)
                start = again.of("upload")[0]
                self.assertNotEqual(start["id"], old, "the changed file resumed the old upload")
                self.assertFalse(start["resumed"])
                self.assertEqual(start["to_send"], list(range(1, start["parts"] + 1)))
                asset = again.of("done")[0]["asset"]
                self.assertEqual((asset["sha256"], asset["size"]), (digest, new_size))

    def test_a_part_url_that_expired_during_a_stall_is_signed_again_once(self):
        # Part URLs live uploads.url_ttl_s (10 s at least). The uploader is stopped (SIGSTOP:
        # a laptop closed) while it holds the URLs of one batch (four parts), until they have
        # expired, then continued: each URL the store refuses (403) is signed afresh once.
        ttl = 10
        k, api, env = self.small_parts_node("--uploads-url-ttl-s", str(ttl))
        path = os.path.join(self.tmp, "stall.bin")
        digest = self.write_random(path, 20 * MIB, 5)  # four parts: one batch of URLs
        before = samples(k)
        run = Run([path, "--project", "p", "--api", api, "--state-dir", os.path.join(self.tmp, "state-stall")],
                  env, parallel=1)
        # The batch's URLs are signed before the first part starts; the other three are unused
        # yet (parts of 5 MiB take far longer to send than this test takes to stop it).
        run.wait_for(lambda ev: any(e["event"] == "part-start" for e in ev))
        run.proc.send_signal(signal.SIGSTOP)
        stopped = time.time()
        try:
            # Every URL it holds was signed before `stopped` (X-Amz-Date in whole seconds): a
            # deadline, not a synchronisation.
            time.sleep(max(0.0, stopped + ttl + 1.5 - time.time()))
        finally:
            run.proc.send_signal(signal.SIGCONT)
        code, err = run.finish()
        self.assertEqual(code, 0, err)
        asset = run.of("done")[0]["asset"]
        self.assertEqual((asset["sha256"], asset["size"]), (digest, 20 * MIB))
        after = samples(k)

        def moved(name, **labels):
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0) - before.get(key, 0)
        refused = moved("kiln_objects_requests_total", method="PUT", status="403")
        signed = moved("kiln_http_requests_total", route="api_upload_parts", method="POST", status="200")
        self.assertGreaterEqual(refused, 1, "no part URL had expired: the stall did not outlast them")
        # One batch for the four parts, and one signing more for each refused URL.
        self.assertEqual(signed, 1 + refused, (signed, refused))
        print(f"\n{refused:.0f} expired part URLs refused and signed again", flush=True)

    def test_refusals_are_clear(self):
        path, _ = self.make_file("x.png", 1)
        run = Run(self.upload_args(path, "nope"), self.env)
        code, err = run.finish()
        self.assertEqual(code, 1)
        self.assertIn("404", err)
        env = dict(self.env, KILN_TOKEN="forged.token.here")
        run = Run(self.upload_args(path, "dedup"), env)
        code, err = run.finish()
        self.assertEqual(code, 1)
        self.assertIn("401", err)
        run = Run(self.upload_args(path, "dedup"), {k: v for k, v in self.env.items() if k != "KILN_TOKEN"})
        code, err = run.finish()
        self.assertEqual(code, 2)
        self.assertIn("token", err)


if __name__ == "__main__":
    unittest.main()
