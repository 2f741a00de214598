"""Kiln's web editor (web/editor, served by `kiln serve --http-editor-dir` at /) in Debian's
Chromium through playwright-core, as two people use it (tests/e2e/editor/run.cjs drives the
pages; here: the server, the checks). Two browser contexts edit one scene and see each
other's edits and cursors within a second; a drag shows at the other while it happens and
lands as one durable op; `kiln serve` restarting loses nothing; an upload survives a page
reload halfway; a large scene streams coarse levels far away and fine ones near.
Screenshots of each step: build/<preset>/test-artifacts/editor/ (copies in docs/editor/)."""
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
import uuid

from harness import WAIT, Kiln, helper_ports, needs, wait_until
from test_pipeline import obj_grid
from test_uploads import send

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DIST = os.path.join(ROOT, "web", "editor", "dist")
NPM = os.environ.get("KILN_NPM_DIR", "")
ARTIFACTS = os.environ.get("KILN_ARTIFACTS") or os.path.join(tempfile.gettempdir(), "kiln-editor-artifacts")
SERVICE_KEY = "service-key-0123456789abcdef0123456789abcdef"
MIB = 1 << 20


class Serving(unittest.TestCase):
    """What kiln serve does with the editor's files and the development sign-in, without a browser."""

    def test_dev_sign_in_is_off_by_default(self):
        k = Kiln("--http-access-log", "false")
        try:
            # No such route: with or without a credential.
            st, _, doc = k.call("POST", "/v1/dev/token", None, {"user": {"id": "eve"}})
            self.assertEqual(st, 404, doc)
            st, _, doc = k.call("POST", "/v1/dev/token", "not-a-token", {"user": {"id": "eve"}})
            self.assertEqual(st, 404, doc)
            # Without an editor, a browser gets the page of links.
            st, hd, body = k.request("GET", "/", {"Accept": "text/html"})
            self.assertEqual(st, 200)
            self.assertIn(b"REST API", body)
        finally:
            k.stop()

    def test_only_the_files_found_at_start_are_served(self):
        d = tempfile.mkdtemp(prefix="kiln-editor-dist-")
        pathlib.Path(d, "index.html").write_text("<!doctype html><title>t</title>")
        pathlib.Path(d, "app-ABCDEFGH.js").write_text("console.log(1)")
        os.symlink("/etc/hostname", os.path.join(d, "linked.txt"))
        pathlib.Path(d, ".env").write_text("SECRET=1")  # hidden: skipped, never served
        k = Kiln("--http-access-log", "false", "--http-editor-dir", d)
        try:
            pathlib.Path(d, "later.js").write_text("added after start")
            st, hd, body = k.request("GET", "/", {"Accept": "text/html"})
            self.assertEqual((st, body), (200, b"<!doctype html><title>t</title>"))
            self.assertEqual(hd["cache-control"], "no-cache")
            st, hd, body = k.request("GET", "/editor/app-ABCDEFGH.js")
            self.assertEqual((st, hd["content-type"]), (200, "text/javascript; charset=utf-8"))
            self.assertIn("immutable", hd["cache-control"])
            for path in ("/editor/later.js", "/editor/linked.txt", "/editor/.env", "/editor/../index.html",
                         "/editor/%2e%2e/index.html", "/editor/index.html/", "/editor/"):
                self.assertEqual(k.request("GET", path)[0], 404, path)
            # A client asking for JSON still gets the node's index.
            st, _, doc = k.call("GET", "/")
            self.assertEqual((st, doc["name"]), (200, "kiln"))
        finally:
            k.stop()

    def test_a_bad_editor_directory_stops_the_start_with_the_reason(self):
        d = tempfile.mkdtemp(prefix="kiln-editor-bad-")
        steps = ((None, "no index.html"), ("template", "unbuilt template"), ("bad name", "is not made of"))
        for step, want in steps:
            if step == "template":
                pathlib.Path(d, "index.html").write_text('<script src="%APP%"></script>')
            if step == "bad name":
                pathlib.Path(d, "index.html").write_text("ok")
                pathlib.Path(d, "bad name.js").write_text("x")
            r = subprocess.run([os.environ["KILN_BIN"], "serve", "--http-listen", "127.0.0.1:0",
                                "--objects-listen", "127.0.0.1:0", "--data-dir", tempfile.mkdtemp(),
                                "--http-editor-dir", d], capture_output=True, text=True, timeout=WAIT,
                               env={k: v for k, v in os.environ.items() if not k.startswith("KILN_")})
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(want, r.stderr)
            self.assertIn("http.editor_dir", r.stderr)


@needs(NPM, "KILN_NPM_DIR not set (run through ctest)")
@needs(os.path.isfile(os.path.join(DIST, "index.html")), "web/editor/dist (bash scripts/build-editor.sh)")
class Editor(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="kiln-editor-")
        # The page's origin is the node's address: a restart must come back on the same
        # port. A helper port (below the ephemeral range: no port-0 bind takes it meanwhile),
        # the next one when another test holds it.
        self.http = None
        for port in helper_ports():
            try:
                self.kiln = self.start(port)
                self.http = port
                break
            except AssertionError as e:
                if "did not start" not in str(e):
                    raise
        self.assertIsNotNone(self.http, "no free helper port")
        self.project = "p" + uuid.uuid4().hex[:8]

    def tearDown(self):
        self.kiln.stop()

    def start(self, port):
        return Kiln("--api-service-key", SERVICE_KEY, "--auth-dev-tokens", "true",
                    "--http-editor-dir", DIST, "--http-access-log", "false",
                    "--uploads-multipart-threshold-bytes", str(5 * MIB),
                    "--uploads-part-size-bytes", str(5 * MIB),
                    data_dir=self.data, http_listen=f"127.0.0.1:{port}")

    def drive(self, scenario, on_line=None, **env):
        """Runs one scenario of run.cjs; returns its JSON result."""
        full = dict(os.environ, NODE_PATH=os.path.join(NPM, "node_modules"), KILN_SCENARIO=scenario,
                    KILN_URL=f"http://127.0.0.1:{self.http}", KILN_ARTIFACTS=ARTIFACTS,
                    KILN_PROJECT=self.project, KILN_SCENE="main", **{k: str(v) for k, v in env.items()})
        p = subprocess.Popen(["node", os.path.join(HERE, "editor", "run.cjs")], env=full, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = []
        reader = threading.Thread(target=lambda: err.extend(p.stderr), daemon=True)
        reader.start()
        result = None
        try:
            for line in p.stdout:
                line = line.strip()
                if line.startswith("{"):
                    result = json.loads(line)
                elif on_line:
                    reply = on_line(line)
                    if reply:
                        p.stdin.write(reply + "\n")
                        p.stdin.flush()
            p.wait(timeout=300)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            reader.join(WAIT)
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()
        self.assertEqual(p.returncode, 0, "".join(err)[-5000:])
        self.assertIsNotNone(result, "".join(err)[-5000:])
        return result

    def call(self, method, path, token, body=None):
        st, _, doc = self.kiln.call(method, path, token, body)
        return st, doc

    def test_two_people_edit_one_scene(self):
        r = self.drive("collab")
        print(f"\n  edit {r['edit_ms']} ms, then {r['edits_ms']} ms; cursor {r['cursor_ms']} ms; "
              f"drag seen {r['drag_seen_ms']} ms", file=sys.stderr)
        # Within a second (the page's own clock, polled every frame): the median of five edits
        # (an ack waits for the journal's fsync, which a loaded machine stalls now and then).
        self.assertLess(sorted(r["edits_ms"])[2], 1000, r)
        self.assertLess(r["cursor_ms"], 1000, r)
        self.assertLess(r["drag_seen_ms"], 1000, r)
        # Seen while dragging: on the ephemeral lane, no durable op yet; one on release.
        self.assertEqual(r["seq_during_drag"], 0, r)
        self.assertEqual(r["seq_after_drag"], 1, r)
        self.assertTrue(r["moved"] and r["undone"], r)
        # Another member's malformed drag and cursor: ignored.
        self.assertIsNotNone(r["after_garbage"], r)
        self.assertFalse(r["garbage_cursor_shown"], r)
        # A drag whose member left mid-way stops showing (the member leaves, or 3 s of silence).
        self.assertLess(r["abandoned_drag_cleared_ms"], 10000, r)

    def test_sign_in_with_a_pasted_token_and_names_beyond_ascii(self):
        st, tok = self.call("POST", "/v1/tokens", SERVICE_KEY, {"user": {"id": "pasted", "name": "Paste Er"}})
        self.assertEqual(st, 201, tok)
        r = self.drive("signin", KILN_TOKEN=tok["token"])
        zoe, wang = r["Zoë 李"], r["王"]
        self.assertIn("Signed in as Zoë 李", zoe["shown"])
        self.assertEqual(zoe["me"]["name"], "Zoë 李")
        self.assertNotEqual(zoe["me"]["id"], wang["me"]["id"])
        self.assertIn("Signed in as Paste Er", r["pasted"])

    @needs(shutil.which("runc") and os.geteuid() == 0, "missing: runc and root (scripts/packages-test.txt)")
    def test_a_terminal_in_the_editor_survives_a_reload(self):
        r = self.drive("terminal")
        print(f"\n  terminal echo {r['echo_ms']} ms", file=sys.stderr)
        self.assertTrue(r["replayed"], r)
        (only,) = r["sessions"]["items"]
        self.assertFalse(only["running"], r)
        self.assertEqual(only["exit"]["code"], 3, r)

    def test_a_restart_of_kiln_serve_loses_nothing(self):
        def on_line(line):
            if line == "RESTART":
                self.kiln.stop()
                self.kiln = self.start(self.http)
                return "GO"
            return None
        r = self.drive("restart", on_line)
        self.assertEqual(len(r["ann_entities"]), 4, r)
        self.assertEqual(r["ann_entities"], r["bob_entities"])
        # The three edits made while the server was down, each once.
        self.assertEqual(r["seq_gain"], 3, r)

    def test_an_upload_survives_a_reload_halfway(self):
        size = 23 * MIB + 1234  # five parts of 5 MiB
        r = self.drive("upload", KILN_UPLOAD_BYTES=size)
        self.assertGreaterEqual(r["held"], 1, r)
        self.assertEqual(len(r["unfinished"]), 1, r)
        self.assertIn("terrain:v2.raw (23.0 MiB)", r["unfinished"][0])
        self.assertTrue(r["resumed"], r)
        # After the reload only the parts the store lacked were sent.
        self.assertNotIn(1, r["sent_after_reload"], r)
        self.assertNotIn(2, r["sent_after_reload"], r)
        data = pathlib.Path(ARTIFACTS, "terrain:v2.raw").read_bytes()
        st, asset = self.call("GET", f"/v1/projects/{self.project}/assets/{r['asset']}", r["token"])
        self.assertEqual(st, 200, asset)
        self.assertEqual((asset["size"], asset["sha256"]), (size, hashlib.sha256(data).hexdigest()))
        s, _, got = send(asset["download"]["url"], method="GET")
        self.assertEqual((s, hashlib.sha256(got).hexdigest()), (200, asset["sha256"]))

    def test_a_large_scene_streams_by_distance(self):
        st, tok = self.call("POST", "/v1/tokens", SERVICE_KEY, {"user": {"id": "ann", "name": "Ann"}})
        token = tok["token"]
        self.assertEqual(self.call("POST", "/v1/projects", token, {"id": self.project, "name": "Stream"})[0], 201)
        self.assertEqual(self.call("POST", f"/v1/projects/{self.project}/scenes", token,
                                   {"id": "main", "name": "main"})[0], 201)
        grid = pathlib.Path(self.data, "hills.obj")
        obj_grid(grid, 60)  # 7,200 triangles
        data = grid.read_bytes()
        st, doc = self.call("POST", f"/v1/projects/{self.project}/uploads", token,
                            {"filename": "hills.obj", "size": len(data), "content_type": "model/obj",
                             "sha256": hashlib.sha256(data).hexdigest()})
        self.assertEqual(st, 201, doc)
        self.assertEqual(send(doc["put"]["url"], body=data, headers=doc["put"]["headers"])[0], 200)
        st, done = self.call("POST", f"/v1/projects/{self.project}/uploads/{doc['upload']['id']}/complete", token)
        self.assertEqual(st, 201, done)
        aid = done["asset"]["id"]
        wait_until(lambda: self.call("GET", f"/v1/projects/{self.project}/assets/{aid}", token)[1]
                   ["processing"]["state"] == "ready", "the model's levels", timeout=300)
        count = 40
        r = self.drive("stream", KILN_TOKEN=token, KILN_ASSET=aid, KILN_ENTITIES=count)
        st, manifest = self.call("GET", f"/v1/projects/{self.project}/assets/{aid}/manifest", token)
        coarsest = len(manifest["levels"]) - 1
        self.assertGreaterEqual(coarsest, 2, manifest)
        levels = [r["levels"][f"m{i}"] for i in range(count)]
        # Near: the finest; far: the coarsest; never finer farther away.
        self.assertEqual(levels[0], 0, levels)
        self.assertEqual(levels[-1], coarsest, levels)
        self.assertEqual(levels, sorted(levels), levels)
        self.assertEqual(sum(r["stats"]["shown"]), count, r["stats"])
        self.assertIn("levels shown L0:", r["overlay"])


if __name__ == "__main__":
    unittest.main()
