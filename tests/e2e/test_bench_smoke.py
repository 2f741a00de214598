"""The load generator itself works: a short, small run against the real gateway.

Not a performance test (figures come from bench/run_collab.sh, recorded in
docs/benchmarks.md): this only keeps kiln-bench from rotting."""
import json
import os
import subprocess
import sys
import unittest

from collab_client import SECRET
from harness import Kiln, full_speed

BENCH = os.environ.get("KILN_BENCH_BIN", "kiln-bench")
SEED = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "seed_access.py")


def seed(node, users, rooms, key=None):
    """bench/seed_access.py: the bench's members and scenes, through node's REST API."""
    r = subprocess.run([sys.executable, SEED, "--api", f"http://{node.host}:{node.port}",
                        "--key", key or node.service_key(), "--users", str(users),
                        "--rooms", str(rooms)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr


@full_speed("kiln-bench (a load generator) is built in the dev preset only")
class BenchSmoke(unittest.TestCase):
    def test_collab_bench_reports_latencies_and_memory(self):
        kiln = Kiln("--auth-jwt-secret", SECRET, "--http-access-log", "false")
        try:
            seed(kiln, 40, 4)
            r = subprocess.run([BENCH, "collab", "--port", str(kiln.port), "--secret", SECRET,
                                "--clients", "40", "--room-size", "10", "--active", "0.5",
                                "--op-interval", "0.5", "--warmup", "0.5", "--duration", "2"],
                               capture_output=True, text=True, timeout=120)
        finally:
            kiln.stop()
        self.assertEqual(r.returncode, 0, r.stderr)
        d = json.loads(r.stdout)
        self.assertEqual((d["connected"], d["joined"], d["errors"]), (40, 40, 0))
        self.assertGreater(d["op_samples"], 0)
        self.assertGreater(d["cursor_samples"], 0)
        self.assertGreater(d["delivered_msgs_per_s"], 0)
        self.assertGreater(d["gateway_bytes_per_idle_connection"], 0)
        self.assertLess(d["op_p50_ms"], 10_000)


if __name__ == "__main__":
    unittest.main()
