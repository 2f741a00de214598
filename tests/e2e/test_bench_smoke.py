"""The load generator itself works: a short, small run against the real gateway.

Not a performance test (figures come from bench/run_collab.sh, recorded in
docs/benchmarks.md): this only keeps kiln-bench from rotting."""
import json
import os
import subprocess
import sys
import unittest

from collab_client import SECRET
from harness import Kiln, full_speed, needs

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


PEERS = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "peers")


class Peer:
    """A peer server of bench/peers (node), on a port of its choosing."""

    def __init__(self, script):
        self.proc = subprocess.Popen(["node", os.path.join(PEERS, script)],
                                     env=dict(os.environ, PORT="0"), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # blocks until it listens, or exits
        if not line.startswith("listening on "):
            self.proc.kill()
            raise AssertionError(f"{script}: {line!r} {self.proc.communicate()[1]}")
        self.port = int(line.split()[-1])

    def stop(self):
        self.proc.kill()
        return self.proc.communicate()[1]


@full_speed("kiln-bench (a load generator) is built in the dev preset only")
@needs(os.path.isdir(os.path.join(PEERS, "node_modules")),
       "bench/peers/node_modules (bash scripts/npm-ci.sh bench/peers)")
class PeerSmoke(unittest.TestCase):
    """kiln-bench collab speaks the peers' protocols (bench/run_peers.sh): every op reaches
    the room and is acknowledged, cursors arrive, the servers log no error."""

    def drive(self, script, protocol):
        peer = Peer(script)
        try:
            r = subprocess.run([BENCH, "collab", "--protocol", protocol, "--port", str(peer.port),
                                "--pid", str(peer.proc.pid), "--clients", "40", "--room-size",
                                "10", "--active", "0.5", "--op-interval", "0.5", "--warmup",
                                "0.5", "--duration", "2"],
                               capture_output=True, text=True, timeout=120)
        finally:
            errors = peer.stop()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(errors, "", "the peer logged errors (a malformed message?)")
        d = json.loads(r.stdout)
        self.assertEqual((d["protocol"], d["connected"], d["joined"], d["errors"]),
                         (protocol, 40, 40, 0))
        # Each op reaches the other nine members of its room and comes back acknowledged.
        self.assertGreater(d["acks"], 0)
        self.assertGreaterEqual(d["op_samples"], 9 * (d["acks"] - 40))
        self.assertGreater(d["cursor_samples"], 0)
        self.assertGreater(d["server_cpu_us_per_frame"], 0)
        # Reported, not checked: a garbage-collected server's RSS can shrink between the two
        # readings, and at 40 connections the difference is noise (run_peers.sh uses 500+).
        self.assertIsInstance(d["gateway_bytes_per_idle_connection"], float)

    def test_socketio(self):
        self.drive("socketio-relay.js", "socketio")

    def test_yjs(self):
        self.drive("yws-relay.mjs", "yjs")


class BenchArguments(unittest.TestCase):
    """What a protocol needs and was not given ends in a clear error, before any connection."""

    @full_speed("kiln-bench (a load generator) is built in the dev preset only")
    def test_missing_options_are_named(self):
        cases = [(["--protocol", "kiln"], "--secret is required"),
                 (["--protocol", "socketio"], "--pid is required"),
                 (["--protocol", "yjs", "--secret", "x"], "--pid is required"),
                 (["--protocol", "mqtt", "--pid", "1"], "mqtt")]
        for args, message in cases:
            r = subprocess.run([BENCH, "collab", "--port", "1", *args], capture_output=True,
                               text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn(message, r.stderr, args)


if __name__ == "__main__":
    unittest.main()
