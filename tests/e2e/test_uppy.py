"""Stock Uppy (@uppy/core 4 + @uppy/aws-s3 4 from npm) in Debian's Chromium, driven by
playwright-core, on the editor's own origin, uploading through Kiln's Companion-shaped
routes (cross-origin: http.cors_origins) to the embedded store (objects.cors_origins).
The first PUT of part 2 is cut (connection reset): Uppy retries it, the upload completes,
and the API checks the SHA-256 the page computed (the asset exists only if it matches)."""
import hashlib
import http.client
import json
import os
import subprocess
import unittest
import urllib.parse

from harness import WAIT, Kiln, needs

HERE = os.path.dirname(os.path.abspath(__file__))
NPM = os.environ.get("KILN_NPM_DIR", "")
SERVICE_KEY = "service-key-0123456789abcdef0123456789abcdef"
MIB = 1 << 20
# Another origin than the API's (127.0.0.1:PORT), yet a secure context (crypto.subtle).
EDITOR = "http://localhost:9"


@needs(NPM, "KILN_NPM_DIR not set (run through ctest)")
class Uppy(unittest.TestCase):
    def setUp(self):
        self.kiln = Kiln("--api-service-key", SERVICE_KEY, "--objects-cors-origins", EDITOR,
                         "--http-cors-origins", EDITOR, "--http-access-log", "false")
        self.api = f"http://{self.kiln.host}:{self.kiln.port}"
        st, tok = self.call("POST", "/v1/tokens", SERVICE_KEY, {"user": {"id": "ann"}})
        self.token = tok["token"]
        st, doc = self.call("POST", "/v1/projects", self.token, {"id": "uppy", "name": "Uppy"})
        self.assertEqual(st, 201, doc)

    def tearDown(self):
        self.kiln.stop()

    def call(self, method, path, tok, body=None):
        st, _, doc = self.kiln.call(method, path, tok, body)
        return st, doc

    def test_other_origins_are_refused_at_preflight(self):
        st, hd, body = self.kiln.request("OPTIONS", "/s3/multipart", {
            "Origin": "http://evil.kiln.test", "Access-Control-Request-Method": "POST"})
        self.assertEqual(st, 403)
        self.assertNotIn("access-control-allow-origin", hd)

    def test_uppy_uploads_through_the_companion_routes(self):
        env = dict(os.environ, NODE_PATH=os.path.join(NPM, "node_modules"), KILN_API=self.api,
                   KILN_PAGE_ORIGIN=EDITOR, KILN_TOKEN=self.token, KILN_PROJECT="uppy", KILN_SIZE=str(12 * MIB),
                   KILN_CHUNK=str(5 * MIB), KILN_DROP_PARTS="2")
        r = subprocess.run(["node", os.path.join(HERE, "uppy", "run.cjs")], capture_output=True, text=True,
                           env=env, timeout=180)
        self.assertEqual(r.returncode, 0, r.stderr[-4000:])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(out["failed"], [], r.stderr[-4000:])
        self.assertEqual(out["dropped"], [2])  # cut once, sent again by Uppy
        self.assertEqual(out["parts"], [1, 2, 3])
        self.assertEqual(len(out["successful"]), 1)
        body = out["successful"][0]["body"]
        asset = body["asset"]
        self.assertEqual((asset["size"], asset["sha256"]), (12 * MIB, out["digest"]))
        self.assertTrue(body["location"].endswith(asset["id"]))
        st, meta = self.call("GET", f"/v1/projects/uppy/assets/{asset['id']}", self.token)
        self.assertEqual(st, 200, meta)
        u = urllib.parse.urlsplit(meta["download"]["url"])
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=WAIT)
        try:
            c.request("GET", u.path + "?" + u.query)
            got = c.getresponse().read()
        finally:
            c.close()
        self.assertEqual(hashlib.sha256(got).hexdigest(), out["digest"])


if __name__ == "__main__":
    unittest.main()
