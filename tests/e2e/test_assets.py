"""End-to-end: uploaded models become levels (the asset pipeline on the job queue), on
`kiln serve`: the asset's processing state in the REST API, its manifest and GLB levels
(checked by Khronos' glTF-Validator), the uploader's sessions told through `notify`,
hostile files failing with their reason, the explicit reprocess, deletion removing the
derived files, and a worker killed mid-processing finishing the asset once on retry."""
import asyncio
import contextlib
import hashlib
import json
import os
import pathlib
import signal
import sqlite3
import tempfile
import threading
import shutil
import unittest
import urllib.parse
import uuid

import websockets

from harness import Kiln, full_speed, needs, wait_until
from test_persistence import PG, STANDALONE, psql
from test_pipeline import MODELS, NPM, obj_grid, textured_gltf, validate
from test_uploads import send

SERVICE_KEY = "service-key-0123456789abcdef0123456789abcdef"
# Under AddressSanitizer (the asan preset) models of hundreds of thousands of triangles
# take minutes: those tests run in the dev preset (harness.full_speed).
BIG = "a model of 500,000 triangles takes minutes under AddressSanitizer (run in the dev preset)"
STORE_SECRET = "objects-secret-0123456789abcdef0123456789"
JWT_SECRET = "jwt-secret-0123456789abcdef0123456789abcdef"


def sha(b):
    return hashlib.sha256(b).hexdigest()


class Listener:
    """A collaboration session of one user, collecting the `notify` frames it receives."""

    def __init__(self, node, token):
        self.frames = []
        self.cv = threading.Condition()
        self.ready = threading.Event()
        self.url = f"ws://{node.host}:{node.port}/v1/collab"
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.run(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the session did not open"

    async def run(self):
        async with websockets.connect(self.url, subprotocols=["kiln.v1"]) as ws:
            await ws.send(json.dumps({"t": "hello", "id": 1, "token": self.token}))
            assert json.loads(await ws.recv())["t"] == "welcome"
            self.ws = ws
            self.ready.set()
            try:
                async for text in ws:
                    m = json.loads(text)
                    if m.get("t") == "notify":
                        with self.cv:
                            self.frames.append(m)
                            self.cv.notify_all()
            except websockets.ConnectionClosed:
                pass

    def wait_for(self, pred, what, timeout=120):
        with self.cv:
            if not self.cv.wait_for(lambda: any(pred(f) for f in self.frames), timeout):
                raise AssertionError(f"no notify for {what}; got {self.frames}")
            return next(f for f in self.frames if pred(f))

    def close(self):
        if hasattr(self, "ws"):
            asyncio.run_coroutine_threadsafe(self.ws.close(), self.loop).result(10)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class AssetSuite:
    """The tests both deployments pass. Subclasses: start(*args) -> the API node (sets
    self.node, and self.sessions: the node collaboration sessions connect to)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-e2e-assets-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.start()
        self.ann = self.mint("ann")
        self.pid = "assets-" + os.urandom(4).hex()
        st, _, doc = self.call("POST", "/v1/projects", self.ann, {"id": self.pid, "name": "Assets"})
        self.assertEqual(st, 201, doc)

    def call(self, method, path, token=None, body=None):
        return self.node.call(method, path, token, body)

    def replica_behind(self, aid):
        """Holds the API's read replica (where there is one) at what it has now: the asset
        failed, while the block runs."""
        return contextlib.nullcontext()

    def mint(self, user):
        st, _, doc = self.call("POST", "/v1/tokens", SERVICE_KEY, {"user": {"id": user}})
        self.assertEqual(st, 201, doc)
        return doc["token"]

    def upload(self, name, data):
        st, _, doc = self.call("POST", f"/v1/projects/{self.pid}/uploads", self.ann,
                               {"filename": name, "size": len(data), "sha256": sha(data),
                                "content_type": "application/octet-stream"})
        self.assertEqual(st, 201, doc)
        s, _, b = send(doc["put"]["url"], body=data, headers=doc["put"]["headers"])
        self.assertEqual(s, 200, b)
        st, _, done = self.call("POST", f"/v1/projects/{self.pid}/uploads/{doc['upload']['id']}/complete",
                                self.ann)
        self.assertEqual(st, 201, done)
        return done["asset"]["id"]

    def asset(self, aid):
        st, _, doc = self.call("GET", f"/v1/projects/{self.pid}/assets/{aid}", self.ann)
        self.assertEqual(st, 200, doc)
        return doc

    def settled(self, aid):
        return wait_until(lambda: (lambda p: p if p and p["state"] in ("ready", "failed", "skipped") else None)(
            self.asset(aid)["processing"]), f"asset {aid} processed", timeout=300)

    def test_an_uploaded_model_becomes_valid_levels_and_its_uploader_hears_of_it(self):
        listener = Listener(self.sessions, self.ann)
        self.addCleanup(listener.close)
        grid = pathlib.Path(self.tmp, "terrain.obj")
        obj_grid(grid, 120)  # 28,800 triangles
        aid = self.upload("terrain.obj", grid.read_bytes())
        first = self.asset(aid)["processing"]
        self.assertIn(first["state"], ("queued", "processing", "ready"), first)
        done = self.settled(aid)
        self.assertEqual(done["state"], "ready", done)
        self.assertGreaterEqual(done["levels"], 4)
        self.assertIsNone(done["error"])
        st, hd, manifest = self.call("GET", done["manifest"], self.ann)
        self.assertEqual(st, 200, manifest)
        self.assertEqual(manifest["asset"], aid)
        self.assertEqual(manifest["pipeline"], done["pipeline"])
        self.assertEqual(manifest["source"]["triangles"], 28_800)
        levels = manifest["levels"]
        self.assertEqual(len(levels), done["levels"])
        files = []
        for i, lv in enumerate(levels):
            s, h, body = send(lv["url"], "GET")
            self.assertEqual(s, 200, lv)
            self.assertEqual(len(body), lv["bytes"])
            self.assertEqual(h["content-type"], "model/gltf-binary")
            # Named by content: the key holds the first 16 hex digits of its SHA-256.
            self.assertIn(sha(body)[:16], urllib.parse.urlsplit(lv["url"]).path)
            path = pathlib.Path(self.tmp, f"lod{i}.glb")
            path.write_bytes(body)
            files.append(path)
        for a, b in zip(levels, levels[1:]):
            self.assertLess(b["triangles"], a["triangles"])
            self.assertGreaterEqual(b["error"], a["error"])
        bad = {f: r["messages"] for f, r in validate(files).items() if r["errors"]}
        self.assertEqual(bad, {})
        # The uploader's session heard progress, then the outcome.
        listener.wait_for(lambda f: f.get("kind") == "asset" and f.get("event") == "progress", "progress")
        ready = listener.wait_for(lambda f: f.get("kind") == "asset" and f.get("event") == "ready", "ready")
        self.assertEqual((ready["asset"], ready["project"], ready["levels"]), (aid, self.pid, done["levels"]))
        # A viewer of the project sees the manifest; a stranger does not.
        bob = self.mint("bob")
        self.assertEqual(self.call("GET", done["manifest"], bob)[0], 404)
        st, _, _ = self.call("PUT", f"/v1/projects/{self.pid}/members/bob", self.ann, {"role": "viewer"})
        self.assertEqual(st, 200)
        self.assertEqual(self.call("GET", done["manifest"], bob)[0], 200)
        # Processing it again changes nothing: it is ready.
        st, _, again = self.call("POST", f"/v1/projects/{self.pid}/assets/{aid}/process", self.ann)
        self.assertEqual((st, again["processing"]["state"]), (200, "ready"), again)
        # Deleting the asset removes its levels from storage.
        st, _, _ = self.call("DELETE", f"/v1/projects/{self.pid}/assets/{aid}", self.ann)
        self.assertEqual(st, 204)
        wait_until(lambda: all(send(lv["url"], "GET")[0] == 404 for lv in levels), "the levels removed")

    def test_a_textured_model_serves_its_texture_levels(self):
        src = pathlib.Path(self.tmp, "ground.gltf")
        textured_gltf(src, 30, 600)  # 1,800 triangles, a 600 x 600 texture
        aid = self.upload("ground.gltf", src.read_bytes())
        done = self.settled(aid)
        self.assertEqual(done["state"], "ready", done)
        st, _, manifest = self.call("GET", done["manifest"], self.ann)
        self.assertEqual(st, 200, manifest)
        (texture,) = manifest["textures"]
        self.assertEqual([t["width"] for t in texture["levels"]], [600, 300, 150])  # down to <= 256
        for t in texture["levels"]:
            s, h, body = send(t["url"], "GET")
            self.assertEqual(s, 200, t)
            self.assertEqual(h["content-type"], t["mime_type"])
            self.assertEqual(len(body), t["bytes"])
            self.assertIn(sha(body)[:16], urllib.parse.urlsplit(t["url"]).path)
        self.assertEqual([lv["texture_level"] for lv in manifest["levels"]],
                         [min(i, 2) for i in range(len(manifest["levels"]))])

    def fails_with(self, listener, name, data, code):
        """Uploads `data`: the asset fails with `code`, its uploader is told, it has no
        manifest, and no job died (a bad file is not a dead job)."""
        aid = self.upload(name, data)
        done = self.settled(aid)
        self.assertEqual(done["state"], "failed", done)
        self.assertEqual(done["error"]["code"], code, done)
        self.assertTrue(done["error"]["detail"])
        self.assertIsNone(done["manifest"])
        told = listener.wait_for(lambda f: f.get("asset") == aid and f.get("event") == "failed", f"{name} failed")
        self.assertEqual(told["code"], code)
        st, _, _ = self.call("GET", f"/v1/projects/{self.pid}/assets/{aid}/manifest", self.ann)
        self.assertEqual(st, 404)
        st, _, jobs = self.call("GET", "/v1/admin/jobs?type=asset.process&state=dead", SERVICE_KEY)
        self.assertEqual((st, jobs["items"]), (200, []), jobs)

    @full_speed("the bomb is stopped by RLIMIT_AS, which a sanitized child does not set")
    def test_a_decompression_bomb_fails_on_the_memory_limit(self):
        listener = Listener(self.sessions, self.ann)
        self.addCleanup(listener.close)
        self.fails_with(listener, "bomb.off", (MODELS / "invalid/OutOfMemory.off").read_bytes(), "limits")

    def test_hostile_models_fail_with_their_reason_and_the_job_is_not_dead(self):
        listener = Listener(self.sessions, self.ann)
        self.addCleanup(listener.close)
        box = (MODELS / "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb").read_bytes()
        cases = {
            "cut.glb": (box[: len(box) // 2], "malformed"),
            "claims.glb": (b"solid x\nendsolid x\n" + os.urandom(16).hex().encode(), "unsupported"),
        }
        for name, (data, code) in cases.items():
            with self.subTest(name=name):
                self.fails_with(listener, name, data, code)
        # Asking again processes it again (and it fails the same way). The answer says what
        # the request did (queued), not what a replica behind the primary still holds.
        aid = self.upload("again.glb", box[:100])
        first = self.settled(aid)
        self.assertEqual(first["state"], "failed")
        with self.replica_behind(aid):
            st, _, doc = self.call("POST", f"/v1/projects/{self.pid}/assets/{aid}/process", self.ann)
        self.assertEqual(st, 202, doc)
        self.assertEqual(doc["processing"]["state"], "queued", doc)
        self.assertGreaterEqual(doc["processing"]["updated_at"], first["updated_at"])
        self.assertTrue(doc["started"], doc)
        # Its uploader reads her own write: queued or later, never the failure before it.
        later = self.asset(aid)["processing"]
        self.assertTrue(later["state"] in ("queued", "processing") or
                        later["updated_at"] >= doc["processing"]["updated_at"], later)
        again = wait_until(lambda: (lambda p: p if p["state"] == "failed" and p["updated_at"] >=
                                    doc["processing"]["updated_at"] else None)(self.asset(aid)["processing"]),
                           "the second run to fail", timeout=300)
        self.assertEqual(again["error"]["code"], first["error"]["code"])
        # Viewers may not ask.
        st, _, _ = self.call("PUT", f"/v1/projects/{self.pid}/members/vic", self.ann, {"role": "viewer"})
        self.assertEqual(self.call("POST", f"/v1/projects/{self.pid}/assets/{aid}/process", self.mint("vic"))[0], 403)



@needs(MODELS.is_dir(), "missing: Debian's assimp-testmodels (scripts/packages-test.txt)")
@needs(NPM, "KILN_NPM_DIR not set (run through ctest)")
class OnServe(AssetSuite, unittest.TestCase):
    """`kiln serve`: SQLite, the embedded store, the worker and the gateway in one process."""

    def start(self, *args, data_dir=None):
        k = Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false", *args, data_dir=data_dir)
        self.addCleanup(k.stop)
        self.node = self.sessions = k
        if hasattr(self, "pid"):  # a node started by a test: the same user and project
            self.ann = self.mint("ann")
            st, _, doc = self.call("POST", "/v1/projects", self.ann, {"id": self.pid, "name": "Assets"})
            self.assertIn(st, (201, 409), doc)
        return k

    def test_a_scene_streams_its_entities_with_world_bounds_and_levels(self):
        node = self.start("--persist-interval-ms", "200")
        grid = pathlib.Path(self.tmp, "rock.obj")
        obj_grid(grid, 40)  # 3,200 triangles, 40 x 40 x 1
        aid = self.upload("rock.obj", grid.read_bytes())
        self.assertEqual(self.settled(aid)["state"], "ready")
        st, _, _ = self.call("POST", f"/v1/projects/{self.pid}/scenes", self.ann, {"id": "yard", "name": "Yard"})
        self.assertEqual(st, 201)
        ops = [{"op": "create", "entity": "rock1", "parent": "root",
                "props": {"asset": aid, "position": [100, 0, 0]}},
               {"op": "create", "entity": "group", "parent": "root", "props": {"scale": 2}},
               {"op": "create", "entity": "rock2", "parent": "group",
                "props": {"asset": aid, "rotation": [0, 0, 0, 1], "scale": [1, 1, 3]}},
               {"op": "create", "entity": "bad", "parent": "root", "props": {"asset": aid, "position": "x"}},
               {"op": "create", "entity": "ghost", "parent": "root", "props": {"asset": "a0000nothere"}}]

        async def edit():
            async with websockets.connect(f"ws://{node.host}:{node.port}/v1/collab",
                                          subprotocols=["kiln.v1"]) as ws:
                await ws.send(json.dumps({"t": "hello", "id": 1, "token": self.ann}))
                await ws.send(json.dumps({"t": "join", "id": 2, "room": f"{self.pid}/yard"}))
                await ws.send(json.dumps({"t": "op", "id": 3, "room": f"{self.pid}/yard", "ops": ops}))
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if m.get("id") == 3:
                        return m
        ack = asyncio.run(edit())
        self.assertEqual(ack["t"], "ack", ack)
        path = f"/v1/projects/{self.pid}/scenes/yard/stream"
        doc = wait_until(lambda: (lambda r: r[2] if r[2].get("seq") == ack["seq"] else None)(
            self.call("GET", path, self.ann)), "the scene's snapshot stored")
        byid = {e["id"]: e for e in doc["entities"]}
        self.assertEqual(sorted(byid), ["ghost", "rock1", "rock2"])
        # The model spans x, y in [0, 40]: its sphere's center (20, 20, ~0.5) moves with the
        # entity, its radius scales with the largest axis scale.
        man = self.call("GET", f"/v1/projects/{self.pid}/assets/{aid}/manifest", self.ann)[2]
        c, r = man["bounds"]["sphere"]["center"], man["bounds"]["sphere"]["radius"]
        s1 = byid["rock1"]["sphere"]
        self.assertAlmostEqual(s1["center"][0], c[0] + 100, places=3)
        self.assertAlmostEqual(s1["radius"], r, places=3)
        s2 = byid["rock2"]["sphere"]
        self.assertAlmostEqual(s2["center"][1], c[1] * 2, places=3)
        self.assertAlmostEqual(s2["radius"], r * 6, places=3)
        self.assertEqual(byid["rock2"]["world"][12:15], [0, 0, 0])
        self.assertIsNone(byid["ghost"]["sphere"])
        self.assertEqual(doc["assets"]["a0000nothere"]["state"], "missing")
        levels = doc["assets"][aid]["levels"]
        self.assertEqual([lv["triangles"] for lv in levels], [lv["triangles"] for lv in man["levels"]])
        self.assertEqual(send(levels[-1]["url"], "GET")[0], 200)
        self.assertEqual([(x["id"], "position" in x["why"]) for x in doc["skipped"]], [("bad", True)])
        # Members only.
        self.assertEqual(self.call("GET", path, self.mint("eve"))[0], 404)

    def job_of(self, aid):
        st, _, jobs = self.call("GET", "/v1/admin/jobs?type=asset.process", SERVICE_KEY)
        mine = [j for j in jobs["items"] if j["payload"].get("asset") == aid]
        return mine[-1] if mine else None

    def busy(self, name, side=500):
        """Uploads a model of 2 * side^2 triangles and waits until its child is at work."""
        big = pathlib.Path(self.tmp, name)
        obj_grid(big, side)
        aid = self.upload(name, big.read_bytes())
        wait_until(lambda: (self.asset(aid)["processing"] or {}).get("stage") in ("import", "lod", "write"),
                   "the child at work", timeout=120)
        return aid

    def test_asking_again_at_once_starts_one_run(self):
        aid = self.upload("broken.glb", b"glTF" + bytes(40))
        self.assertEqual(self.settled(aid)["state"], "failed")
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            self.call("POST", f"/v1/projects/{self.pid}/assets/{aid}/process", self.ann))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(r[0] for r in results), [202] * 4, results)
        started = [r for r in results if r[2]["started"]]
        self.assertEqual(len(started), 1, results)
        self.assertEqual(self.settled(aid)["state"], "failed")

    @full_speed(BIG)
    def test_an_asset_deleted_while_processed_leaves_no_derived_files(self):
        aid = self.busy("doomed.obj")
        st, _, _ = self.call("DELETE", f"/v1/projects/{self.pid}/assets/{aid}", self.ann)
        self.assertEqual(st, 204)
        job = wait_until(lambda: (lambda j: j if j and j["state"] == "succeeded" else None)(self.job_of(aid)),
                         "the processing job to end", timeout=300)
        self.assertIn(job["result"]["state"], ("gone", "ready"), job)
        # The cleanup job ran (before or after): nothing of the asset is left.
        def leftovers():
            with sqlite3.connect(os.path.join(self.node.data_dir, "objects", "index.db")) as db:
                return db.execute("SELECT count(*) FROM objects WHERE key LIKE ?",
                                  (f"derived/{self.pid}/{aid}/%",)).fetchone()[0]
        wait_until(lambda: leftovers() == 0, "no derived file left")
        with sqlite3.connect(os.path.join(self.node.data_dir, "kiln.db")) as db:
            rows = db.execute("SELECT count(*) FROM asset_processing WHERE asset_id = ?", (aid,)).fetchone()[0]
        self.assertEqual(rows, 0)

    @full_speed(BIG)
    def test_cancelling_its_job_stops_the_child(self):
        # Heartbeats every second (a third of the lease) carry the cancel to the handler.
        self.start("--jobs-lease-ms", "3000")
        aid = self.busy("long.obj", side=700)
        job = self.job_of(aid)
        st, _, doc = self.call("POST", f"/v1/admin/jobs/{job['id']}/cancel", SERVICE_KEY)
        self.assertEqual(st, 200, doc)
        done = wait_until(lambda: (lambda j: j if j["state"] not in ("queued", "leased") else None)(self.job_of(aid)),
                          "the job to end", timeout=60)
        self.assertEqual(done["state"], "cancelled", done)
        p = self.asset(aid)["processing"]
        self.assertEqual((p["state"], p["error"]["code"]), ("failed", "stopped"), p)
        wait_until(lambda: not [q for q in os.listdir("/proc") if q.isdigit() and f"job-{job['id']}" in _cmdline(q)],
                   "the child gone")

    def test_a_member_removed_is_not_told_of_her_uploads(self):
        carl = self.mint("carl")
        st, _, _ = self.call("POST", "/v1/projects", carl, {"id": self.pid + "-c", "name": "Carl's"})
        self.assertEqual(st, 201)
        project = self.pid + "-c"
        st, _, _ = self.call("PUT", f"/v1/projects/{project}/members/ann", carl, {"role": "editor"})
        self.assertEqual(st, 200)
        listener = Listener(self.sessions, self.ann)
        self.addCleanup(listener.close)
        own, self.pid = self.pid, project
        aid = self.upload("first.glb", b"glTF" + bytes(40))  # ann's upload in Carl's project
        self.assertEqual(self.settled(aid)["state"], "failed")
        listener.wait_for(lambda f: f.get("asset") == aid and f.get("event") == "failed", "her own failure")
        st, _, _ = self.call("DELETE", f"/v1/projects/{project}/members/ann", carl)
        self.assertEqual(st, 204)
        st, _, doc = self.call("POST", f"/v1/projects/{project}/assets/{aid}/process", carl)
        self.assertEqual(st, 202, doc)
        queued_at = doc["processing"]["updated_at"]

        def second_run_over():
            p = self.call("GET", f"/v1/projects/{project}/assets/{aid}", carl)[2]["processing"]
            return p["state"] == "failed" and p["updated_at"] > queued_at
        wait_until(second_run_over, "the second run (which she is not told of)")
        # Then a notification she is due (her own project): the other run's would be before it.
        self.pid = own
        mine = self.upload("second.glb", b"glTF" + bytes(44))
        listener.wait_for(lambda f: f.get("asset") == mine and f.get("event") == "failed", "her own project's")
        about = [f for f in listener.frames if f.get("asset") == aid and f.get("event") == "failed"]
        self.assertEqual(len(about), 1, listener.frames)

    def test_files_that_are_not_models_are_skipped(self):
        aid = self.upload("notes.txt", b"not a model\n")
        self.assertIsNone(self.asset(aid)["processing"])
        st, _, jobs = wait_until(lambda: (lambda r: r if r[2]["items"] and r[2]["items"][0]["state"] == "succeeded"
                                          else None)(self.call("GET", "/v1/admin/jobs?type=asset.process", SERVICE_KEY)),
                                 "the job")
        self.assertEqual(self.asset(aid)["processing"]["state"], "skipped")

    @full_speed(BIG)
    def test_a_worker_killed_mid_processing_finishes_the_asset_once_on_retry(self):
        node = self.start("--jobs-lease-ms", "2000", data_dir=tempfile.mkdtemp(prefix="kiln-e2e-assets-kill-"))
        big = pathlib.Path(self.tmp, "big.obj")
        obj_grid(big, 500)  # 500,000 triangles: seconds of work
        aid = self.upload("big.obj", big.read_bytes())
        wait_until(lambda: (self.asset(aid)["processing"] or {}).get("stage") in ("import", "lod", "write"),
                   "the child at work", timeout=120)
        node.signal(signal.SIGKILL)
        node.proc.wait(30)
        children = [p for p in os.listdir("/proc") if p.isdigit() and
                    _cmdline(p).startswith(os.environ["KILN_BIN"] + "\0convert")]
        # The child dies with its worker (PR_SET_PDEATHSIG), within moments.
        wait_until(lambda: not [p for p in children if os.path.exists(f"/proc/{p}")], "the child gone")
        again = self.start("--jobs-lease-ms", "2000", data_dir=node.data_dir)
        self.node = again
        done = self.settled(aid)
        self.assertEqual(done["state"], "ready", done)
        st, _, jobs = self.call("GET", "/v1/admin/jobs?type=asset.process", SERVICE_KEY)
        mine = [j for j in jobs["items"] if j["payload"].get("asset") == aid]
        self.assertEqual(len(mine), 1, jobs)
        job = wait_until(lambda: (lambda j: j if j["state"] != "leased" else None)(
            self.call("GET", f"/v1/admin/jobs/{mine[0]['id']}", SERVICE_KEY)[2]), "the job to end")
        self.assertEqual(job["state"], "succeeded", job)
        self.assertGreaterEqual(job["attempts"], 2, job)  # the killed one, and the retry
        # One set of levels: the stored manifest names each level once.
        st, _, manifest = self.call("GET", done["manifest"], self.ann)
        self.assertEqual(len({lv["uri"] for lv in manifest["levels"]}), len(manifest["levels"]))


@needs(MODELS.is_dir(), "missing: Debian's assimp-testmodels (scripts/packages-test.txt)")
@needs(NPM, "KILN_NPM_DIR not set (run through ctest)")
@needs(STANDALONE and len(PG) == 3, "KILN_TEST_REDIS/KILN_TEST_PG not set (run through ctest)")
class OnNodes(AssetSuite, unittest.TestCase):
    """The roles apart: `kiln objects`, `kiln api` and `kiln worker` on PostgreSQL through
    PgBouncer, a `kiln gateway` holding the sessions; notifications cross Redis."""

    def start(self):
        self.db = db = "e2e_assets_" + uuid.uuid4().hex[:8]
        psql("postgres", f"CREATE DATABASE {db}")
        store = Kiln("--objects-secret-key", STORE_SECRET, "--http-access-log", "false", role="objects")
        self.addCleanup(store.stop)
        port = store.wait_for_log(lambda r: r.get("msg") == "object store listening", "the store")["port"]
        common = ["--api-service-key", SERVICE_KEY, "--auth-jwt-secret", JWT_SECRET, "--http-access-log", "false",
                  "--database-url", f"postgresql://postgres@{PG[0]}/{db}",
                  "--storage-endpoint", f"http://127.0.0.1:{port}", "--storage-secret-key", STORE_SECRET,
                  "--room-engine", "redis", "--redis-addresses", STANDALONE,
                  "--redis-prefix", "assets-" + uuid.uuid4().hex[:6]]
        self.node = Kiln(*common, "--database-read-urls", f"postgresql://postgres@{PG[2]}/{db}", role="api")
        self.addCleanup(self.node.stop)
        worker = Kiln(*common, role="worker")
        self.addCleanup(worker.stop)
        self.sessions = Kiln(*common, role="gateway")
        self.addCleanup(self.sessions.stop)
        return self.node

    @contextlib.contextmanager
    def replica_behind(self, aid):
        def replica_has_it():
            try:
                return psql(self.db, f"SELECT count(*) FROM asset_processing WHERE asset_id = '{aid}' "
                                     "AND state = 'failed'", hostport=PG[2]) == "1"
            except AssertionError:  # the replica has not replayed CREATE DATABASE yet
                return False
        wait_until(replica_has_it, "the replica to have the failure")
        psql("postgres", "SELECT pg_wal_replay_pause()", hostport=PG[2])
        try:
            wait_until(lambda: psql("postgres", "SELECT pg_get_wal_replay_pause_state()", hostport=PG[2]) == "paused",
                       "the replica's replay to pause")
            yield
        finally:
            psql("postgres", "SELECT pg_wal_replay_resume()", hostport=PG[2])


def _cmdline(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


if __name__ == "__main__":
    unittest.main()
