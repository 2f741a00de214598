"""The TypeScript SDK (sdk/ts) against a real `kiln serve`: its integration tests (Vitest,
sdk/ts/test/integration) run with KILN_API pointing at a fresh node started here with a
service key and 5 MiB multipart uploads. Two users edit one scene, a refused edit rolls
back, a killed connection resumes without loss, uploads resume after an abort and
deduplicate, and a model's levels arrive and drive the LOD selection mirror."""
import json
import os
import subprocess
import unittest

from harness import Kiln, needs

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SDK = os.path.join(ROOT, "sdk", "ts")
SERVICE_KEY = "service-key-0123456789abcdef0123456789abcdef"
MIB = 1 << 20


@needs(os.path.isdir(os.path.join(SDK, "node_modules")), "sdk/ts/node_modules (bash scripts/npm-ci.sh sdk/ts)")
class Sdk(unittest.TestCase):
    def setUp(self):
        self.kiln = Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false",
                         "--uploads-multipart-threshold-bytes", str(5 * MIB),
                         "--uploads-part-size-bytes", str(5 * MIB))

    def tearDown(self):
        self.kiln.stop()

    def test_sdk_integration_suite(self):
        env = dict(os.environ, KILN_API=f"http://{self.kiln.host}:{self.kiln.port}",
                   KILN_SERVICE_KEY=SERVICE_KEY, NO_COLOR="1")
        report = os.path.join(self.kiln.data_dir, "vitest.json")
        r = subprocess.run(["node", "node_modules/vitest/vitest.mjs", "run", "--dir", "test/integration",
                            "--reporter=default", "--reporter=json", f"--outputFile.json={report}"],
                           cwd=SDK, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, r.stdout[-6000:] + r.stderr[-3000:])
        with open(report) as f:
            results = json.load(f)
        # Every test ran (none skipped: the suite saw the server) and passed.
        self.assertGreaterEqual(results["numTotalTests"], 6)
        self.assertEqual(results["numPassedTests"], results["numTotalTests"], r.stdout[-4000:])


if __name__ == "__main__":
    unittest.main()
