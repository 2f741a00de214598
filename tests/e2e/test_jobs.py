"""The job queue end to end, on the real binary: an upload's asset.process job travels from
the outbox through RabbitMQ to `kiln serve`'s worker (deliveries only: the database sweep is
set an hour apart), the operator sees it through the admin routes, and a bad broker setting
stops the start with a clear error. The broker: the `rabbitmq` CTest fixture."""
import hashlib
import http.client
import os
import re
import unittest
import urllib.parse
import uuid

from harness import Kiln, needs, run_kiln, wait_until

SERVICE_KEY = "service-key-0123456789abcdef0123456789abcdef"
BROKER = (os.environ.get("KILN_TEST_RABBITMQ", "") + " ").split(" ")[0]


def metric(k, name):
    _, _, body = k.request("GET", "/metrics")
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def upload(k, token, project, data):
    """A small upload, sent and completed: the asset it makes."""
    status, _, up = k.call("POST", f"/v1/projects/{project}/uploads", token,
                           {"filename": "a.png", "size": len(data), "content_type": "image/png",
                            "sha256": hashlib.sha256(data).hexdigest()})
    assert status == 201, up
    put = urllib.parse.urlsplit(up["put"]["url"])
    c = http.client.HTTPConnection(put.hostname, put.port, timeout=20)
    c.request("PUT", put.path + "?" + put.query, body=data, headers=up["put"]["headers"])
    assert c.getresponse().status == 200
    c.close()
    status, _, done = k.call("POST", f"/v1/projects/{project}/uploads/{up['upload']['id']}/complete", token)
    assert status == 201, done
    return done["asset"]


@needs(BROKER, "KILN_TEST_RABBITMQ not set (run through ctest)")
class OnRabbitMq(unittest.TestCase):
    def test_an_uploads_job_travels_through_the_broker(self):
        prefix = "kiln.e2e." + uuid.uuid4().hex[:8]
        k = Kiln("--api-service-key", SERVICE_KEY, "--jobs-queue", "rabbitmq",
                 "--jobs-rabbitmq-url", f"amqp://guest:guest@{BROKER}",
                 "--jobs-rabbitmq-prefix", prefix, "--jobs-sweep-ms", "3600000")
        self.addCleanup(k.stop)
        wait_until(lambda: metric(k, "kiln_jobs_broker_connected") == 1, "the worker to consume")
        status, _, tok = k.call("POST", "/v1/tokens", SERVICE_KEY, {"user": {"id": "ann"}})
        self.assertEqual(status, 201)
        status, _, _ = k.call("POST", "/v1/projects", tok["token"], {"id": "jobs", "name": "Jobs"})
        self.assertEqual(status, 201)
        asset = upload(k, tok["token"], "jobs", b"glTF" * 64)

        def done():
            _, _, page = k.call("GET", "/v1/admin/jobs?type=asset.process&state=succeeded", SERVICE_KEY)
            return page["items"]
        job = wait_until(done, "the asset.process job to succeed")[0]
        self.assertEqual(job["payload"]["asset"], asset["id"])
        # Confirmed by the broker (the publisher awaits it after the delivery may have run).
        wait_until(lambda: metric(k, 'kiln_jobs_broker_published_total{result="ok"}') == 1,
                   "the publisher confirm")
        # The message reached the worker and the database decided: leased from it, or dropped
        # because a lease already waiting in this process took the job from the database
        # first (an enqueue wakes it: serve runs the API and the worker in one process).
        wait_until(lambda: metric(k, 'kiln_jobs_broker_deliveries_total{outcome="leased"}') +
                   metric(k, 'kiln_jobs_broker_deliveries_total{outcome="dropped"}') == 1,
                   "the job's message to reach the worker")
        _, _, ready = k.request("GET", "/readyz")
        self.assertIn(b'"jobs.broker":"ok"', ready)
        for line in k.lines:
            self.assertNotIn("guest:guest", line, "the broker's password reached the log")

    def test_a_bad_broker_setting_stops_the_start(self):
        for args, says in [(["--jobs-queue", "rabbitmq"], "set jobs.rabbitmq_url"),
                           (["--jobs-queue", "rabbitmq", "--jobs-rabbitmq-url", "http://u:s3cret@h/"],
                            "not an AMQP URL"),
                           (["--jobs-queue", "rabbitmq", "--jobs-rabbitmq-url", f"amqp://{BROKER}",
                             "--jobs-rabbitmq-prefix", "no spaces"], "jobs.rabbitmq_prefix"),
                           (["--jobs-queue", "rabbitmq", "--jobs-rabbitmq-url", f"amqp://{BROKER}",
                             "--jobs-rabbitmq-prefix", "amq.kiln"], "RabbitMQ reserves it")]:
            with self.subTest(args=args):
                p = run_kiln("worker", "--data-dir", "data", *args, timeout=60)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(says, p.stderr)
                self.assertNotIn("s3cret", p.stderr + p.stdout)
                self.assertNotIn("database ready", p.stderr, "the database was opened first")


class Settings(unittest.TestCase):
    def test_a_bad_per_type_limit_stops_the_start(self):
        for value, says in [("asset.process=9", "from 1 to 4"), ("asset.process", "not type=n"),
                            ("Asset=1", "a job type")]:
            with self.subTest(value=value):
                p = run_kiln("worker", "--data-dir", "data", "--jobs-type-concurrency", value,
                             timeout=60)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn("jobs.type_concurrency", p.stderr)
                self.assertIn(says, p.stderr)
                self.assertNotIn("database ready", p.stderr, "the database was opened first")


if __name__ == "__main__":
    unittest.main()
