"""Direct uploads end to end: the upload API signs, the bytes go straight to the object
store over the presigned URLs it returns (sent here with raw HTTP, as a browser would),
and completion checks them. On `kiln serve` (SQLite, the embedded store in the process)
and on separate `kiln api` + `kiln objects` nodes with PostgreSQL through PgBouncer.

`UploadSuite` holds the tests; a subclass says how the nodes start.
"""
import concurrent.futures
import hashlib
import http.client
import json
import os
import sqlite3
import subprocess
import threading
import unittest
import urllib.parse
import uuid

from prometheus_client.parser import text_string_to_metric_families

from harness import WAIT, Kiln, needs, read_response, send_request
from test_persistence import PG, STANDALONE, psql, wait_until

SERVICE_KEY = "service-key-0123456789abcdef0123456789abcdef"
STORE_SECRET = "objects-secret-0123456789abcdef0123456789"
P = "https://kiln.dev/problems/"
MIB = 1 << 20
# Small parts keep the multipart tests quick: 5 MiB is S3's minimum part size.
QUOTA = 64 * MIB
SETTINGS = ["--uploads-multipart-threshold-bytes", str(6 * MIB), "--uploads-part-size-bytes", str(5 * MIB),
            "--uploads-project-quota-bytes", str(QUOTA), "--uploads-max-size-bytes", str(48 * MIB)]


def send(url, method="PUT", body=b"", headers=None):
    """One request to a presigned URL: (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=WAIT)
    try:
        c.request(method, u.path + ("?" + u.query if u.query else ""), body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def sha(b):
    return hashlib.sha256(b).hexdigest()


class UploadSuite:
    # Subclasses provide start(*args) -> api node, and sql(query) -> first column of rows.

    def setUp(self):
        self.nodes = []
        self.api = self.start(*SETTINGS)
        self.ann = self.mint("ann")
        self.pid = "up-" + uuid.uuid4().hex[:8]
        st, _, doc = self.call("POST", "/v1/projects", self.ann, {"id": self.pid, "name": "Uploads"})
        self.assertEqual(st, 201, doc)

    def tearDown(self):
        for n in self.nodes:
            n.stop()

    def call(self, method, path, auth=None, body=None, raw=None, headers=None):
        return self.api.call(method, path, auth, body, raw, headers)

    def mint(self, user):
        st, _, doc = self.call("POST", "/v1/tokens", SERVICE_KEY, {"user": {"id": user}})
        self.assertEqual(st, 201, doc)
        return doc["token"]

    def add_member(self, user, role):
        st, _, doc = self.call("PUT", f"/v1/projects/{self.pid}/members/{user}", self.ann, {"role": role})
        self.assertEqual(st, 200, doc)
        return self.mint(user)

    def create(self, tok=None, **body):
        st, _, doc = self.call("POST", f"/v1/projects/{self.pid}/uploads", tok or self.ann, body)
        return st, doc

    def up(self, uid):
        return f"/v1/projects/{self.pid}/uploads/{uid}"

    def problem(self, st_doc, status, kind):
        st, doc = st_doc[0], st_doc[-1]
        self.assertEqual(st, status, doc)
        self.assertEqual(doc["type"], P + kind, doc)
        return doc

    def put_parts(self, uid, data, numbers, part_size=5 * MIB):
        st, _, doc = self.call("POST", self.up(uid) + "/parts", self.ann, {"parts": numbers})
        self.assertEqual(st, 200, doc)
        etags = {}
        for p in doc["parts"]:
            n = p["number"]
            chunk = data[(n - 1) * part_size:n * part_size]
            self.assertEqual(p["size"], len(chunk))
            s, h, b = send(p["url"], body=chunk)
            self.assertEqual(s, 200, b)
            etags[n] = h["etag"]
        return etags

    # --- single PUTs --------------------------------------------------------------------

    def test_a_small_file_goes_up_in_one_put_and_comes_back(self):
        data = os.urandom(300_000)
        st, doc = self.create(filename="rock.png", size=len(data), content_type="image/png", sha256=sha(data))
        self.assertEqual(st, 201, doc)
        u = doc["upload"]
        self.assertFalse(u["multipart"])
        self.assertEqual(u["state"], "open")
        # Nothing there yet: completing says so and changes nothing.
        self.problem(self.call("POST", self.up(u["id"]) + "/complete", self.ann), 409, "not-uploaded")
        s, _, b = send(doc["put"]["url"], body=data, headers=doc["put"]["headers"])
        self.assertEqual(s, 200, b)
        st, _, done = self.call("POST", self.up(u["id"]) + "/complete", self.ann)
        self.assertEqual(st, 201, done)
        asset = done["asset"]
        self.assertEqual((asset["name"], asset["size"], asset["sha256"]), ("rock.png", len(data), sha(data)))
        self.assertEqual(done["upload"]["state"], "completed")
        # Completing again is harmless: the same asset.
        st, _, again = self.call("POST", self.up(u["id"]) + "/complete", self.ann)
        self.assertEqual((st, again["asset"]["id"]), (200, asset["id"]))
        # The asset, its download, and the event for the pipeline.
        st, _, meta = self.call("GET", f"/v1/projects/{self.pid}/assets/{asset['id']}", self.ann)
        self.assertEqual(st, 200, meta)
        s, hd, got = send(meta["download"]["url"], "GET")
        self.assertEqual((s, sha(got)), (200, sha(data)))
        # Saved under the asset's name, not the object key (the presigned URL says so).
        self.assertEqual(hd["content-disposition"],
                         "attachment; filename=\"rock.png\"; filename*=UTF-8''rock.png")
        # The override is part of what was signed: changing it breaks the signature.
        bent = meta["download"]["url"].replace("rock.png", "evil.exe")
        self.assertEqual(send(bent, "GET")[0], 403)
        st, _, listed = self.call("GET", f"/v1/projects/{self.pid}/assets", self.ann)
        self.assertEqual([a["id"] for a in listed["items"]], [asset["id"]])
        st, _, text = self.api.request("GET", "/metrics")
        samples = {(f.name, tuple(sorted(x.labels.items()))): x.value
                   for f in text_string_to_metric_families(text.decode()) for x in f.samples}
        self.assertEqual(samples[("kiln_uploads", (("event", "started"),))], 1)
        self.assertEqual(samples[("kiln_uploads", (("event", "completed"),))], 1)
        self.assertEqual(samples[("kiln_uploads_completed_bytes", ())], len(data))
        events = self.sql(f"SELECT body FROM events WHERE project_id = '{self.pid}' AND kind = 'asset.uploaded'")
        self.assertEqual(len(events), 1)
        ev = json.loads(events[0])
        self.assertEqual((ev["type"], ev["id"], ev["sha256"]), ("asset.uploaded", asset["id"], sha(data)))

    def test_the_store_refuses_bytes_that_are_not_the_declared_ones(self):
        data = os.urandom(100_000)
        st, doc = self.create(filename="a.bin", size=len(data), content_type="application/octet-stream",
                              sha256=sha(data))
        uid = doc["upload"]["id"]
        other = os.urandom(len(data))
        s, _, b = send(doc["put"]["url"], body=other, headers=doc["put"]["headers"])
        self.assertEqual(s, 400, b)
        self.assertIn(b"<Code>BadDigest</Code>", b)  # S3's code for bytes a checksum header refuses
        # Without the signed checksum header the signature does not match.
        s, _, b = send(doc["put"]["url"], body=data)
        self.assertEqual(s, 403, b)
        self.problem(self.call("POST", self.up(uid) + "/complete", self.ann), 409, "not-uploaded")
        # The right bytes: done.
        s, _, b = send(doc["put"]["url"], body=data, headers=doc["put"]["headers"])
        self.assertEqual(s, 200, b)
        st, _, done = self.call("POST", self.up(uid) + "/complete", self.ann)
        self.assertEqual(st, 201, done)

    def test_a_declared_size_that_does_not_match_is_refused(self):
        data = os.urandom(50_000)
        st, doc = self.create(filename="a.bin", size=len(data) + 1, content_type="application/octet-stream",
                              sha256=sha(data))
        uid = doc["upload"]["id"]
        s, _, b = send(doc["put"]["url"], body=data, headers=doc["put"]["headers"])
        self.assertEqual(s, 200, b)
        self.problem(self.call("POST", self.up(uid) + "/complete", self.ann), 409, "size-mismatch")
        st, _, now = self.call("GET", self.up(uid), self.ann)
        self.assertEqual(now["state"], "open")  # the wrong object is gone; abort to start over
        self.assertEqual(send(now["put"]["url"], "HEAD")[0], 403)  # signed for PUT only
        self.assertEqual(self.call("DELETE", self.up(uid), self.ann)[0], 204)
        self.assertEqual(self.call("GET", f"/v1/projects/{self.pid}/assets", self.ann)[2]["items"], [])

    def test_a_single_put_needs_its_hash_and_its_url_can_put_nothing_else(self):
        data = os.urandom(5000)
        self.problem(self.create(filename="a.png", size=len(data), content_type="image/png"), 400,
                     "sha256-required")
        st, doc = self.create(filename="a.png", size=len(data), content_type="image/png", sha256=sha(data))
        put = doc["put"]
        self.assertEqual(put["headers"]["content-type"], "application/octet-stream")
        self.assertEqual(send(put["url"], body=data, headers=put["headers"])[0], 200)
        st, _, done = self.call("POST", self.up(doc["upload"]["id"]) + "/complete", self.ann)
        self.assertEqual(st, 201, done)
        # The URL is still valid after completion: other bytes, or the same bytes as another
        # type, are refused; the asset's bytes and type stay what was completed.
        exe = b"MZ\x90\x00" + os.urandom(4000)
        self.assertNotEqual(send(put["url"], body=exe, headers=put["headers"])[0], 200)
        html = dict(put["headers"], **{"content-type": "text/html"})
        self.assertEqual(send(put["url"], body=data, headers=html)[0], 403)
        meta_hdr = dict(put["headers"], **{"x-amz-meta-evil": "1"})
        self.assertEqual(send(put["url"], body=data, headers=meta_hdr)[0], 403, "unsigned x-amz-*")
        # Another upload of the same bytes declaring another type cannot change what this
        # asset is served as (the shared object is stored as octet-stream).
        st, other = self.create(filename="b.svg", size=len(data), content_type="image/svg+xml", sha256=sha(data))
        self.assertEqual((st, other["deduplicated"]), (200, True))
        meta = self.call("GET", f"/v1/projects/{self.pid}/assets/{done['asset']['id']}", self.ann)[2]
        s, hd, got = send(meta["download"]["url"], "GET")
        self.assertEqual((s, sha(got), hd["content-type"]), (200, sha(data), "image/png"))

    def test_names_that_show_as_another_are_refused(self):
        for name in ("a\u0085b.png", "\u202etxt.exe", "a\u200fb.png", "x\u2066y.png"):
            self.problem(self.create(filename=name, size=10, content_type="image/png", sha256="0" * 64),
                         400, "invalid-request")
        st, doc = self.create(filename="Ünïcødé ✓.png", size=10, content_type="image/png", sha256="0" * 64)
        self.assertEqual(st, 201, doc)

    def test_a_file_the_project_has_is_not_sent_again(self):
        data = os.urandom(10_000)
        st, doc = self.create(filename="one.png", size=len(data), content_type="image/png", sha256=sha(data))
        send(doc["put"]["url"], body=data, headers=doc["put"]["headers"])
        st, _, done = self.call("POST", self.up(doc["upload"]["id"]) + "/complete", self.ann)
        self.assertEqual(st, 201, done)
        st, doc = self.create(filename="copy.png", size=len(data), content_type="image/png", sha256=sha(data))
        self.assertEqual(st, 200, doc)
        self.assertTrue(doc["deduplicated"])
        self.assertEqual(doc["asset"]["id"], done["asset"]["id"])
        self.assertNotIn("upload", doc)

    def test_deleting_an_asset_while_the_same_bytes_complete_never_leaves_an_asset_without_bytes(self):
        # Two uploads of the same bytes share the content-addressed object: one completes,
        # then its asset is deleted while the other completes. Whichever wins, every live
        # asset's bytes are downloadable, and a refused completion says to send them again.
        import time

        def call(*args):  # many calls in a row: the per-user rate limit is waited out as told
            for _ in range(50):
                got = self.call(*args)
                if got[0] != 429:
                    return got
                time.sleep(float(got[1].get("retry-after", "1")))
            return got

        def create(**body):
            st, _, doc = call("POST", f"/v1/projects/{self.pid}/uploads", self.ann, body)
            return st, doc

        outcomes = []
        for i in range(16):
            data = os.urandom(3000) + bytes([i])
            h = sha(data)
            docs = [create(filename=f"r{i}-{k}.bin", size=len(data), content_type="application/octet-stream",
                                sha256=h)[1] for k in range(2)]
            for d in docs:
                self.assertEqual(send(d["put"]["url"], body=data, headers=d["put"]["headers"])[0], 200)
            first = call("POST", self.up(docs[0]["upload"]["id"]) + "/complete", self.ann)[2]["asset"]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                # The completion first: it has more to do (it reads the object), so the two
                # overlap in either order over the rounds.
                done = pool.submit(call, "POST", self.up(docs[1]["upload"]["id"]) + "/complete", self.ann)
                deleted = pool.submit(call, "DELETE", f"/v1/projects/{self.pid}/assets/{first['id']}", self.ann)
                deleted, done = deleted.result(), done.result()
            self.assertEqual(deleted[0], 204, deleted)
            outcomes.append(done[0])
            if done[0] in (200, 201):
                st, _, meta = call("GET", f"/v1/projects/{self.pid}/assets/{done[2]['asset']['id']}", self.ann)
                if st == 200:  # live: its bytes are there
                    s, _, got = send(meta["download"]["url"], "GET")
                    self.assertEqual((s, sha(got)), (200, h), f"round {i}: a live asset without its bytes")
            else:
                self.assertEqual((done[0], done[2]["type"]), (409, P + "not-uploaded"), done)
            for a in call("GET", f"/v1/projects/{self.pid}/assets", self.ann)[2]["items"]:
                s, _, got = send(call("GET", f"/v1/projects/{self.pid}/assets/{a['id']}", self.ann)[2]["download"]["url"], "GET")
                self.assertEqual(s, 200, f"round {i}: asset {a['id']} has no bytes")
        print(f"\ncompletions racing deletions: {outcomes}", flush=True)

    def test_deleting_an_asset_frees_its_bytes_and_quota(self):
        data = os.urandom(40 * MIB)  # multipart (threshold 6 MiB); the quota is 64 MiB
        st, doc = self.create(filename="big.glb", size=len(data), content_type="model/gltf-binary",
                              sha256=sha(data))
        uid = doc["upload"]["id"]
        self.put_parts(uid, data, list(range(1, 9)))
        st, _, done = self.call("POST", self.up(uid) + "/complete", self.ann)
        self.assertEqual(st, 201, done)
        aid = done["asset"]["id"]
        url = self.call("GET", f"/v1/projects/{self.pid}/assets/{aid}", self.ann)[2]["download"]["url"]
        self.problem(self.create(filename="more.glb", size=30 * MIB, content_type="model/gltf-binary"),
                     413, "quota-exceeded")
        viewer = self.add_member("vic", "viewer")
        self.problem(self.call("DELETE", f"/v1/projects/{self.pid}/assets/{aid}", viewer), 403, "forbidden")
        st, _, _ = self.call("DELETE", f"/v1/projects/{self.pid}/assets/{aid}", self.ann)
        self.assertEqual(st, 204)
        self.problem(self.call("GET", f"/v1/projects/{self.pid}/assets/{aid}", self.ann), 404, "not-found")
        self.problem(self.call("DELETE", f"/v1/projects/{self.pid}/assets/{aid}", self.ann), 404, "not-found")
        self.assertEqual(send(url, "GET")[0], 404)  # the bytes are gone too
        kinds = self.sql(f"SELECT kind FROM events WHERE project_id = '{self.pid}' ORDER BY created_at")
        self.assertEqual(kinds, ["asset.uploaded", "asset.deleted"])
        # The quota is free again, and the same bytes are a new asset, not the deleted one.
        st, again = self.create(filename="big.glb", size=len(data), content_type="model/gltf-binary",
                                sha256=sha(data))
        self.assertEqual(st, 201, again)
        self.assertFalse(again["deduplicated"])

    def test_two_uploads_of_the_same_bytes_completing_at_once_make_one_asset(self):
        data = os.urandom(20_000)
        ups = []
        for name in ("a.png", "b.png"):  # both started before either completes: no dedup yet
            st, doc = self.create(filename=name, size=len(data), content_type="image/png", sha256=sha(data))
            self.assertEqual(st, 201, doc)
            s, _, b = send(doc["put"]["url"], body=data, headers=doc["put"]["headers"])
            self.assertEqual(s, 200, b)
            ups.append(doc["upload"]["id"])
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda u: self.call("POST", self.up(u) + "/complete", self.ann), ups))
        # Each upload's first completion is 201; the loser's completes onto the winner's asset.
        self.assertEqual([st for st, _, _ in done], [201, 201], done)
        self.assertEqual({d["upload"]["state"] for _, _, d in done}, {"completed"}, done)
        self.assertEqual(len({d["asset"]["id"] for _, _, d in done}), 1, done)
        self.assertEqual(len(self.sql(f"SELECT id FROM assets WHERE project_id = '{self.pid}'")), 1)
        self.assertEqual(len(self.sql(f"SELECT id FROM events WHERE project_id = '{self.pid}'")), 1)
        s, _, got = send(self.call("GET", f"/v1/projects/{self.pid}/assets/{done[0][2]['asset']['id']}",
                                   self.ann)[2]["download"]["url"], "GET")
        self.assertEqual(sha(got), sha(data))  # the shared content-addressed object survived

    def test_uploads_created_at_once_never_pass_the_quota_together(self):
        # 32 creations of 5 MiB (single PUTs, each other bytes) sent at the same moment on
        # connections opened beforehand, against the 64 MiB quota: exactly 12 fit.
        size, n = 5 * MIB, 32
        ready = threading.Barrier(n)

        def create(i):
            body = json.dumps({"filename": f"c{i}.bin", "size": size, "content_type": "application/octet-stream",
                               "sha256": sha(uuid.uuid4().bytes)}).encode()
            s = self.api.connect()
            try:
                ready.wait(WAIT)
                # The service key: its rate limit (burst 400) is not what is under test.
                send_request(s, "POST", f"/v1/projects/{self.pid}/uploads",
                             {"Authorization": "Bearer " + SERVICE_KEY, "Content-Type": "application/json"}, body)
                st, _, b = read_response(s)
                return st, json.loads(b)
            finally:
                s.close()

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(create, range(n)))
        accepted = [doc["upload"] for st, doc in results if st == 201]
        for st, doc in results:
            if st != 201:
                self.problem((st, doc), 413, "quota-exceeded")
        self.assertEqual(len(accepted), QUOTA // size, [st for st, _ in results])
        self.assertLessEqual(sum(u["size"] for u in accepted), QUOTA)
        held = self.sql(f"SELECT id FROM uploads WHERE project_id = '{self.pid}' AND state = 'open'")
        self.assertEqual(sorted(held), sorted(u["id"] for u in accepted))
        total = self.sql(f"SELECT SUM(size) FROM uploads WHERE project_id = '{self.pid}' AND state = 'open'")
        self.assertLessEqual(int(total[0]), QUOTA)

    # --- multipart ----------------------------------------------------------------------

    def test_a_multipart_upload_resumes_from_the_parts_the_store_holds(self):
        data = os.urandom(12 * MIB)  # 3 parts: 5 + 5 + 2 MiB
        st, doc = self.create(filename="scan.glb", size=len(data), content_type="model/gltf-binary",
                              sha256=sha(data))
        self.assertEqual(st, 201, doc)
        u = doc["upload"]
        self.assertTrue(u["multipart"])
        self.assertEqual((u["part_size"], u["part_count"]), (5 * MIB, 3))
        self.assertNotIn("put", doc)
        etags = self.put_parts(u["id"], data, [1, 3])
        # Another device asks what is there.
        st, _, now = self.call("GET", self.up(u["id"]), self.ann)
        self.assertEqual(st, 200, now)
        self.assertEqual(now["missing"], [2])
        self.assertEqual({p["number"]: p["etag"] for p in now["parts"]}, etags)
        self.problem(self.call("POST", self.up(u["id"]) + "/complete", self.ann), 409, "parts-missing")
        # A part of the wrong size is refused at completion, and can be sent again.
        st, _, urls = self.call("POST", self.up(u["id"]) + "/parts", self.ann, {"parts": [2]})
        s, _, _ = send(urls["parts"][0]["url"], body=b"short")
        self.assertEqual(s, 200)
        self.problem(self.call("POST", self.up(u["id"]) + "/complete", self.ann), 409, "part-size")
        self.put_parts(u["id"], data, [2])
        # A client listing parts out of order is refused.
        st, _, now = self.call("GET", self.up(u["id"]), self.ann)
        listed = [{"number": p["number"], "etag": p["etag"]} for p in now["parts"]]
        self.problem(self.call("POST", self.up(u["id"]) + "/complete", self.ann, {"parts": listed[::-1]}),
                     400, "invalid-parts")
        st, _, done = self.call("POST", self.up(u["id"]) + "/complete", self.ann, {"parts": listed})
        self.assertEqual(st, 201, done)
        s, _, got = send(self.call("GET", f"/v1/projects/{self.pid}/assets/{done['asset']['id']}",
                                   self.ann)[2]["download"]["url"], "GET")
        self.assertEqual(sha(got), sha(data))

    def test_the_first_bytes_decide_what_a_file_is(self):
        # An executable under an accepted name and type: refused at complete, nothing kept.
        exe = b"MZ\x90\x00\x03\x00\x00\x00" + os.urandom(4000)
        st, doc = self.create(filename="texture.png", size=len(exe), content_type="image/png", sha256=sha(exe))
        self.assertEqual(st, 201, doc)
        uid = doc["upload"]["id"]
        self.assertEqual(send(doc["put"]["url"], body=exe, headers=doc["put"]["headers"])[0], 200)
        refused = self.problem(self.call("POST", self.up(uid) + "/complete", self.ann), 415,
                               "content-type-not-allowed")
        self.assertIn("application/vnd.microsoft.portable-executable", refused["detail"])
        st, _, now = self.call("GET", self.up(uid), self.ann)
        self.assertEqual((now["state"], now["error"]), ("aborted", "content-type-not-allowed"))
        self.assertEqual(self.call("GET", f"/v1/projects/{self.pid}/assets", self.ann)[2]["items"], [])
        # A PNG declared as anything: accepted, and the asset says what it really is.
        png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2000)
        st, doc = self.create(filename="mystery.dat", size=len(png),
                              content_type="application/octet-stream", sha256=sha(png))
        self.assertEqual(send(doc["put"]["url"], body=png, headers=doc["put"]["headers"])[0], 200)
        st, _, done = self.call("POST", self.up(doc["upload"]["id"]) + "/complete", self.ann)
        self.assertEqual(st, 201, done)
        self.assertEqual((done["asset"]["content_type"], done["asset"]["detected_type"]),
                         ("application/octet-stream", "image/png"))
        # Bytes no signature knows keep the declared type, detected_type null.
        blob = b"v 0 0 0\nv 1 0 0\nf 1 2 1\n"
        st, doc = self.create(filename="tri.obj", size=len(blob), content_type="model/obj", sha256=sha(blob))
        self.assertEqual(send(doc["put"]["url"], body=blob, headers=doc["put"]["headers"])[0], 200)
        st, _, done = self.call("POST", self.up(doc["upload"]["id"]) + "/complete", self.ann)
        self.assertEqual((st, done["asset"]["detected_type"]), (201, None))

    def test_a_multipart_upload_with_the_wrong_hash_is_aborted_and_removed(self):
        data = os.urandom(7 * MIB)
        st, doc = self.create(filename="x.glb", size=len(data), content_type="model/gltf-binary",
                              sha256=sha(b"something else"))
        uid = doc["upload"]["id"]
        self.put_parts(uid, data, [1, 2])
        self.problem(self.call("POST", self.up(uid) + "/complete", self.ann), 409, "sha256-mismatch")
        st, _, now = self.call("GET", self.up(uid), self.ann)
        self.assertEqual((now["state"], now["error"]), ("aborted", "sha256-mismatch"))
        st, _, assets = self.call("GET", f"/v1/projects/{self.pid}/assets", self.ann)
        self.assertEqual(assets["items"], [])
        self.problem(self.call("POST", self.up(uid) + "/complete", self.ann), 409, "upload-aborted")

    def test_aborting_removes_the_parts_and_refuses_more(self):
        data = os.urandom(7 * MIB)
        st, doc = self.create(filename="x.glb", size=len(data), content_type="model/gltf-binary")
        uid = doc["upload"]["id"]
        st, _, urls = self.call("POST", self.up(uid) + "/parts", self.ann, {"parts": [1, 2]})
        s, _, _ = send(urls["parts"][0]["url"], body=data[:5 * MIB])
        self.assertEqual(s, 200)
        st, _, _ = self.call("DELETE", self.up(uid), self.ann)
        self.assertEqual(st, 204)
        s, _, b = send(urls["parts"][1]["url"], body=data[5 * MIB:])
        self.assertEqual(s, 404, b)
        self.assertIn(b"NoSuchUpload", b)
        self.problem(self.call("POST", self.up(uid) + "/complete", self.ann), 409, "upload-aborted")
        self.problem(self.call("POST", self.up(uid) + "/parts", self.ann, {"parts": [1]}), 409, "upload-aborted")
        st, _, _ = self.call("DELETE", self.up(uid), self.ann)
        self.assertEqual(st, 204)  # again: nothing left to do

    def test_presigned_part_urls_cannot_be_bent(self):
        st, doc = self.create(filename="x.glb", size=11 * MIB, content_type="model/gltf-binary")
        uid = doc["upload"]["id"]
        st, _, urls = self.call("POST", self.up(uid) + "/parts", self.ann, {"parts": [1]})
        url = urls["parts"][0]["url"]
        for bent in (url.replace("partNumber=1", "partNumber=2"),
                     url.replace(f"/uploads/{uid}", "/uploads/u0000"),
                     url.replace("X-Amz-Expires=", "X-Amz-Expires=9")):
            s, _, b = send(bent, body=b"x" * 100)
            self.assertEqual(s, 403, (bent, b))
        s, _, b = send(url, "GET")  # signed for PUT only
        self.assertEqual(s, 403, b)

    # --- refusals -----------------------------------------------------------------------

    def test_bad_declarations_are_refused_and_leave_nothing(self):
        ok = dict(filename="a.png", size=10, content_type="image/png")
        for bad in ({"filename": "../../etc/passwd"}, {"filename": "a\u0000b"}, {"filename": "x" * 256},
                    {"filename": ".."}, {"filename": "a\\b"}, {"filename": ""}, {"size": -1},
                    {"size": "ten"}, {"content_type": "image/png; charset=x"}, {"content_type": "png"},
                    {"sha256": "ABC"}, {"sha256": "g" * 64}):
            self.problem(self.create(**{**ok, **bad}), 400, "invalid-request")
        self.problem(self.create(**ok, extra=1), 400, "invalid-request")
        self.problem(self.create(**{**ok, "content_type": "application/x-msdownload"}), 415,
                     "content-type-not-allowed")
        self.problem(self.create(**{**ok, "size": 49 * MIB}), 413, "too-large")
        # The quota counts open uploads: 40 MiB open, 30 more do not fit in 64.
        st, doc = self.create(**{**ok, "size": 40 * MIB})
        self.assertEqual(st, 201, doc)
        d = self.problem(self.create(**{**ok, "size": 30 * MIB}), 413, "quota-exceeded")
        self.assertIn("64.0 MiB", d["detail"])
        # Aborting frees it.
        self.assertEqual(self.call("DELETE", self.up(doc["upload"]["id"]), self.ann)[0], 204)
        self.assertEqual(self.create(**{**ok, "size": 30 * MIB})[0], 201)
        rows = self.sql(f"SELECT state FROM uploads WHERE project_id = '{self.pid}' ORDER BY created_at")
        self.assertEqual(rows, ["aborted", "open"])

    def test_uploads_belong_to_their_creator(self):
        bob = self.add_member("bob", "editor")
        viewer = self.add_member("vic", "viewer")
        eve = self.mint("eve")
        data = os.urandom(1000)
        st, doc = self.create(filename="a.bin", size=len(data), content_type="application/octet-stream",
                              sha256=sha(data))
        uid = doc["upload"]["id"]
        send(doc["put"]["url"], body=data, headers=doc["put"]["headers"])
        for who in (bob, eve):
            for method, suffix, body in (("GET", "", None), ("POST", "/complete", None),
                                         ("POST", "/parts", {"parts": [1]}), ("DELETE", "", None)):
                self.problem(self.call(method, self.up(uid) + suffix, who, body), 404, "not-found")
        self.problem(self.create(viewer, filename="v.png", size=1, content_type="image/png"), 403, "forbidden")
        self.problem(self.create(eve, filename="e.png", size=1, content_type="image/png"), 404, "not-found")
        self.problem(self.call("GET", f"/v1/projects/{self.pid}/assets", eve), 404, "not-found")
        self.assertEqual(self.call("GET", self.up(uid))[0], 401)
        # Nothing of it changed: ann completes it.
        st, _, done = self.call("POST", self.up(uid) + "/complete", self.ann)
        self.assertEqual(st, 201, done)

    # --- Uppy -----------------------------------------------------------------------------

    def test_uppy_s3_multipart_routes(self):
        """The calls @uppy/aws-s3 makes (Companion's shapes), in its order."""
        data = os.urandom(12 * MIB)
        st, _, c = self.call("POST", "/s3/multipart", self.ann,
                             {"filename": "terrain.png", "type": "image/png",
                              "metadata": {"project": self.pid, "size": str(len(data))}})
        self.assertEqual(st, 200, c)
        uid, key = c["uploadId"], c["key"]
        q = "?key=" + urllib.parse.quote(key, safe="")
        st, _, batch = self.call("GET", f"/s3/multipart/{uid}/batch{q}&partNumbers=1,2", self.ann)
        self.assertEqual(st, 200, batch)
        st, _, one = self.call("GET", f"/s3/multipart/{uid}/3{q}", self.ann)
        self.assertEqual(st, 200, one)
        urls = {**batch["presignedUrls"], "3": one["url"]}
        size = 5 * MIB + MIB // 2  # Uppy picks its own part size: 5.5 + 5.5 + 1 MiB
        parts = []
        for n in (1, 2, 3):
            chunk = data[(n - 1) * size:n * size]
            s, h, _ = send(urls[str(n)], body=chunk)
            self.assertEqual(s, 200)
            parts.append({"PartNumber": n, "ETag": h["etag"]})
        st, _, listed = self.call("GET", f"/s3/multipart/{uid}{q}", self.ann)
        self.assertEqual([p["PartNumber"] for p in listed], [1, 2, 3])
        # The wrong key is not this upload.
        self.problem(self.call("GET", f"/s3/multipart/{uid}?key=projects/x", self.ann), 404, "not-found")
        st, _, done = self.call("POST", f"/s3/multipart/{uid}/complete{q}", self.ann, {"parts": parts})
        self.assertEqual(st, 200, done)
        self.assertEqual(done["asset"]["size"], len(data))
        self.assertTrue(done["location"].endswith(done["asset"]["id"]))
        # Abort of another one.
        st, _, c2 = self.call("POST", "/s3/multipart", self.ann,
                              {"filename": "b.png", "type": "image/png",
                               "metadata": {"project": self.pid, "size": 10}})
        q2 = "?key=" + urllib.parse.quote(c2["key"], safe="")
        self.assertEqual(self.call("DELETE", f"/s3/multipart/{c2['uploadId']}{q2}", self.ann)[0], 200)
        self.problem(self.call("GET", f"/s3/multipart/{c2['uploadId']}/1{q2}", self.ann), 409, "upload-aborted")
        self.problem(self.call("POST", "/s3/multipart", self.ann, {"filename": "c.png", "type": "image/png"}),
                     400, "invalid-request")


class OnServe(UploadSuite, unittest.TestCase):
    """`kiln serve`: SQLite, the embedded store in the same process."""

    def start(self, *args):
        k = Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false", *args)
        self.nodes.append(k)
        return k

    def sql(self, query):
        with sqlite3.connect(os.path.join(self.api.data_dir, "kiln.db")) as db:
            return [r[0] for r in db.execute(query)]

    def test_an_uploaded_asset_becomes_one_asset_process_job_that_the_worker_runs(self):
        # The outbox relay makes `asset.uploaded` into `asset.process` (the event id as its
        # idempotency key); serve's worker runs it: a PNG is not a model, so the pipeline
        # skips it (models: test_assets.py).
        data = os.urandom(50_000)
        st, doc = self.create(filename="rock.png", size=len(data), content_type="image/png", sha256=sha(data))
        self.assertEqual(st, 201, doc)
        put = doc["put"]
        s, _, b = send(put["url"], body=data, headers=put["headers"])
        self.assertEqual(s, 200, b)
        st, _, done = self.call("POST", self.up(doc["upload"]["id"]) + "/complete", self.ann)
        self.assertEqual(st, 201, done)
        asset = done["asset"]["id"]
        event = self.sql("SELECT id FROM events WHERE kind = 'asset.uploaded' AND body LIKE "
                         f"'%\"id\":\"{asset}\"%'")
        self.assertEqual(len(event), 1, event)
        key = "event:" + event[0]
        state = wait_until(lambda: [x for x in self.sql(
            f"SELECT state FROM jobs WHERE type = 'asset.process' AND idempotency_key = '{key}'")
            if x == "succeeded"], "the asset.process job to succeed")
        self.assertEqual(state, ["succeeded"])
        result = json.loads(self.sql(f"SELECT result FROM jobs WHERE idempotency_key = '{key}'")[0])
        self.assertEqual(result["state"], "skipped")
        self.assertEqual(result["reason"], "not a model file")
        self.assertEqual(self.sql("SELECT count(*) FROM events WHERE consumed_at IS NULL"), [0])
        self.assertEqual(self.sql("SELECT count(*) FROM jobs"), [1])

    def test_stale_uploads_are_aborted(self):
        k = self.start("--uploads-stale-after-s", "1", "--uploads-sweep-interval-s", "1")
        self.api = k
        ann = self.mint("ann")
        self.call("POST", "/v1/projects", ann, {"id": "stale", "name": "S"})
        st, _, doc = self.call("POST", "/v1/projects/stale/uploads", ann,
                               {"filename": "x.glb", "size": 7 * MIB, "content_type": "model/gltf-binary",
                                "sha256": "0" * 64})
        self.assertEqual(st, 201, doc)
        k.wait_for_log(lambda r: r.get("msg") == "api: stale uploads aborted", "the stale sweep")
        st, _, now = self.call("GET", "/v1/projects/stale/uploads/" + doc["upload"]["id"], ann)
        self.assertEqual(now["state"], "aborted")
        self.assertIn("stale", now["error"])


@needs(STANDALONE and len(PG) == 3, "KILN_TEST_REDIS/KILN_TEST_PG not set (run through ctest)")
class OnPostgres(UploadSuite, unittest.TestCase):
    """`kiln api` (PostgreSQL through PgBouncer, replica reads) and `kiln objects` apart."""

    def start(self, *args):
        self.db = "e2e_up_" + uuid.uuid4().hex[:8]
        psql("postgres", f"CREATE DATABASE {self.db}")
        store = Kiln("--objects-secret-key", STORE_SECRET, "--http-access-log", "false", role="objects")
        self.nodes.append(store)
        port = store.wait_for_log(lambda r: r.get("msg") == "object store listening", "the store")["port"]
        self.storage = ["--storage-endpoint", f"http://127.0.0.1:{port}", "--storage-secret-key", STORE_SECRET]
        api = Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false",
                   "--database-url", f"postgresql://postgres@{PG[0]}/{self.db}",
                   "--database-read-urls", f"postgresql://postgres@{PG[2]}/{self.db}",
                   "--storage-endpoint", f"http://127.0.0.1:{port}", "--storage-secret-key", STORE_SECRET,
                   *args, role="api")
        self.nodes.append(api)
        return api

    def test_several_api_nodes_sweeping_at_once_abort_each_stale_upload_once(self):
        # 40 open uploads (6 multipart, each with its upload in the store), then three API
        # nodes that find them stale. A session holding the uploads table's lock stops each
        # node's first sweep at its read, so that all three read the same stale uploads and
        # race to claim them the moment it lets go.
        ids = []
        for i in range(40):
            multipart = i % 7 == 0
            body = {"filename": f"s{i}.bin", "size": 7 * MIB if multipart else 1000,
                    "content_type": "application/octet-stream"}
            if not multipart:
                body["sha256"] = sha(uuid.uuid4().bytes)
            st, _, doc = self.call("POST", f"/v1/projects/{self.pid}/uploads", SERVICE_KEY, body)
            self.assertEqual(st, 201, doc)
            ids.append(doc["upload"]["id"])
        self.api.stop()  # its own sweep (stale after 7 days) must not be one of the readers
        locker = subprocess.Popen(["psql", "-h", PG[1].split(":")[0], "-p", PG[1].split(":")[1], "-U", "postgres",
                                   "-d", self.db, "-q", "-v", "ON_ERROR_STOP=1"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        try:
            locker.stdin.write("BEGIN;\nLOCK TABLE uploads IN ACCESS EXCLUSIVE MODE;\n")
            locker.stdin.flush()
            wait_until(lambda: psql(self.db, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                                             "WHERE c.relname = 'uploads' AND l.mode = 'AccessExclusiveLock' "
                                             "AND l.granted") == "1", "the lock on uploads")
            # Each node sweeps once (1 s after it starts; the interval is a day), on the primary.
            sweepers = [Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false",
                             "--database-url", f"postgresql://postgres@{PG[0]}/{self.db}", *self.storage,
                             "--uploads-stale-after-s", "1", "--uploads-sweep-interval-s", "86400",
                             "--database-statement-timeout-ms", "120000", role="api")
                        for _ in range(3)]
            self.nodes += sweepers
            wait_until(lambda: psql(self.db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                             "AND wait_event_type = 'Lock' AND query LIKE '%FROM uploads WHERE state%'")
                       == "3", "the three nodes' sweeps waiting on the lock")
        finally:
            locker.stdin.write("COMMIT;\n")
            locker.stdin.close()
            locker.wait(WAIT)
        wait_until(lambda: self.sql(f"SELECT count(*) FROM uploads WHERE project_id = '{self.pid}' "
                                    "AND state = 'open'") == ["0"], "every stale upload aborted")

        def stale_count(k):
            _, _, text = k.request("GET", "/metrics")
            return sum(x.value for f in text_string_to_metric_families(text.decode()) for x in f.samples
                       if x.name == "kiln_uploads_total" and x.labels == {"event": "stale"})
        per_node = wait_until(lambda: (lambda c: c if sum(c) >= len(ids) else None)([stale_count(k) for k in sweepers]),
                              "the aborts counted")
        for k in sweepers:
            k.stop()  # judged: no error-level log; the sweeps in progress finish first
        logged = [sum(r["count"] for r in k.log_records() if r.get("msg") == "api: stale uploads aborted")
                  for k in sweepers]
        print(f"\nstale uploads aborted per node: {[int(c) for c in per_node]}", flush=True)
        self.assertEqual(sum(per_node), len(ids), per_node)
        self.assertEqual(sum(logged), len(ids), logged)
        rows = self.sql(f"SELECT id || ' ' || state || ' ' || error FROM uploads WHERE project_id = '{self.pid}'")
        self.assertEqual(sorted(r.split(" ", 2)[:2] for r in rows), sorted([u, "aborted"] for u in ids))
        self.assertTrue(all("stale" in r.split(" ", 2)[2] for r in rows), rows)

    def sql(self, query):
        out = psql(self.db, query)
        return out.split("\n") if out else []


if __name__ == "__main__":
    unittest.main()
