"""docs/openapi.yaml against the real routes: every route documented, every documented
route exists, every example validates against its schema, and real responses of a
scenario validate against the schemas documented for their status codes. An independent
validator (Debian's python3-jsonschema, JSON Schema 2020-12 as OpenAPI 3.1 uses)."""
import hashlib
import http.client
import json
import os
import shutil
import urllib.parse
import pathlib
import unittest

import jsonschema
import yaml

from harness import Kiln, wait_until

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SERVICE_KEY = "service-key-0123456789abcdef0123456789abcdef"
METHODS = {"get", "put", "post", "patch", "delete"}


def load():
    with open(DOC) as f:
        return yaml.safe_load(f)


class OpenApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.doc = load()
        # auth.dev_tokens on: its route (POST /v1/dev/token) is documented and checked too.
        cls.kiln = Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false",
                        "--auth-dev-tokens", "true")

    @classmethod
    def tearDownClass(cls):
        cls.kiln.stop()

    def validator(self, schema):
        # $refs resolve against the whole document.
        resolver = jsonschema.RefResolver(base_uri="", referrer=self.doc)
        return jsonschema.Draft202012Validator(schema, resolver=resolver)

    def response_schema(self, path, method, status):
        op = self.doc["paths"][path][method]
        resp = op["responses"].get(str(status))
        self.assertIsNotNone(resp, f"{method.upper()} {path} documents no {status}")
        if "$ref" in resp:
            name = resp["$ref"].split("/")[-1]
            resp = self.doc["components"]["responses"][name]
        content = resp.get("content")
        if not content:
            return None
        return next(iter(content.values()))["schema"]

    def test_it_is_openapi_3_1_and_the_schemas_are_valid(self):
        self.assertEqual(self.doc["openapi"], "3.1.0")
        for name, schema in self.doc["components"]["schemas"].items():
            jsonschema.Draft202012Validator.check_schema(schema)

    def test_documented_routes_are_exactly_the_real_routes(self):
        status, _, body = self.kiln.request("GET", "/")
        self.assertEqual(status, 200)
        real = {(r["method"], r["path"]) for r in json.loads(body)["routes"]
                if r["path"].startswith("/v1/") and r["path"] != "/v1/collab"}
        documented = {(m.upper(), p) for p, ops in self.doc["paths"].items() for m in ops if m in METHODS}
        self.assertEqual(documented - real, set(), "documented but not served")
        self.assertEqual(real - documented, set(), "served but not documented")

    def test_every_example_validates(self):
        count = 0
        for path, ops in self.doc["paths"].items():
            for method, op in ops.items():
                if method not in METHODS:
                    continue
                body = op.get("requestBody", {}).get("content", {}).get("application/json")
                if body and "example" in body:
                    self.validator(body["schema"]).validate(body["example"])
                    count += 1
                for status, resp in op["responses"].items():
                    if "$ref" in resp:
                        resp = self.doc["components"]["responses"][resp["$ref"].split("/")[-1]]
                    for media in resp.get("content", {}).values():
                        if "example" in media:
                            self.validator(media["schema"]).validate(media["example"])
                            count += 1
        self.assertGreater(count, 15)

    def call(self, method, path, auth, body=None):
        status, _, doc = self.kiln.call(method, path, auth, body)
        return status, doc

    def test_real_responses_match_the_documented_schemas(self):
        steps = []

        def check(method, template, path, auth, body=None, expect=None):
            status, doc = self.call(method, path, auth, body)
            if expect is not None:
                self.assertEqual(status, expect, (path, doc))
            schema = self.response_schema(template, method.lower(), status)
            if schema is not None:
                self.validator(schema).validate(doc)
            steps.append((method, template, status))
            return doc

        tok = check("POST", "/v1/tokens", "/v1/tokens", SERVICE_KEY, {"user": {"id": "oa", "name": "O A"}}, 201)["token"]
        dev = check("POST", "/v1/dev/token", "/v1/dev/token", None, {"user": {"id": "dev", "name": "Dev"}}, 201)
        self.assertEqual(dev["user"], {"id": "dev", "name": "Dev"})
        check("POST", "/v1/dev/token", "/v1/dev/token", None, {"user": {"id": "a b"}}, 400)
        check("POST", "/v1/projects", "/v1/projects", tok, {"id": "oa-proj", "name": "OA"}, 201)
        check("POST", "/v1/projects", "/v1/projects", tok, {"id": "oa-proj", "name": "OA"}, 409)
        check("GET", "/v1/projects", "/v1/projects?limit=1", tok, expect=200)
        check("GET", "/v1/me", "/v1/me", tok, expect=200)
        check("GET", "/v1/projects/{project}", "/v1/projects/oa-proj", tok, expect=200)
        check("GET", "/v1/projects/{project}", "/v1/projects/nope", tok, expect=404)
        check("PATCH", "/v1/projects/{project}", "/v1/projects/oa-proj", tok, {"name": "OA 2"}, 200)
        check("PUT", "/v1/projects/{project}/members/{user}", "/v1/projects/oa-proj/members/bob", tok, {"role": "viewer"}, 200)
        check("PUT", "/v1/projects/{project}/members/{user}", "/v1/projects/oa-proj/members/oa", tok, {"role": "viewer"}, 409)
        check("GET", "/v1/projects/{project}/members", "/v1/projects/oa-proj/members", tok, expect=200)
        check("POST", "/v1/projects/{project}/scenes", "/v1/projects/oa-proj/scenes", tok, {"id": "main", "name": "Main"}, 201)
        check("GET", "/v1/projects/{project}/scenes", "/v1/projects/oa-proj/scenes", tok, expect=200)
        check("GET", "/v1/projects/{project}/scenes/{scene}", "/v1/projects/oa-proj/scenes/main", tok, expect=200)
        check("PATCH", "/v1/projects/{project}/scenes/{scene}", "/v1/projects/oa-proj/scenes/main", tok, {"name": "M"}, 200)
        check("GET", "/v1/projects/{project}/scenes/{scene}/stream", "/v1/projects/oa-proj/scenes/main/stream", tok,
              expect=200)
        check("GET", "/v1/projects/{project}/scenes/{scene}/stream", "/v1/projects/oa-proj/scenes/nope/stream", tok,
              expect=404)
        check("DELETE", "/v1/projects/{project}/scenes/{scene}", "/v1/projects/oa-proj/scenes/main", tok, expect=204)
        check("DELETE", "/v1/projects/{project}/members/{user}", "/v1/projects/oa-proj/members/bob", tok, expect=204)
        # Uploads: a small one (one PUT, sent here) and a large one (multipart, no bytes).
        ups = "/v1/projects/{project}/uploads"
        data = b"kiln" * 256
        small = check("POST", ups, "/v1/projects/oa-proj/uploads", tok,
                      {"filename": "a.png", "size": len(data), "content_type": "image/png",
                       "sha256": hashlib.sha256(data).hexdigest()}, 201)
        put = small["put"]
        u = urllib.parse.urlsplit(put["url"])
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
        c.request("PUT", u.path + "?" + u.query, body=data, headers=put["headers"])
        self.assertEqual(c.getresponse().status, 200)
        c.close()
        sid = small["upload"]["id"]
        done = check("POST", ups + "/{upload}/complete", f"/v1/projects/oa-proj/uploads/{sid}/complete", tok,
                     expect=201)
        check("POST", ups, "/v1/projects/oa-proj/uploads", tok,
              {"filename": "b.png", "size": len(data), "content_type": "image/png",
               "sha256": hashlib.sha256(data).hexdigest()}, 200)
        check("POST", ups, "/v1/projects/oa-proj/uploads", tok,
              {"filename": "c.exe", "size": 1, "content_type": "application/x-msdownload"}, 415)
        big = check("POST", ups, "/v1/projects/oa-proj/uploads", tok,
                    {"filename": "scan.glb", "size": 300 << 20, "content_type": "model/gltf-binary"}, 201)
        bid = big["upload"]["id"]
        check("POST", ups + "/{upload}/parts", f"/v1/projects/oa-proj/uploads/{bid}/parts", tok,
              {"parts": [1, 2]}, 200)
        check("GET", ups + "/{upload}", f"/v1/projects/oa-proj/uploads/{bid}", tok, expect=200)
        check("POST", ups + "/{upload}/complete", f"/v1/projects/oa-proj/uploads/{bid}/complete", tok,
              expect=409)
        check("DELETE", ups + "/{upload}", f"/v1/projects/oa-proj/uploads/{bid}", tok, expect=204)
        check("GET", "/v1/projects/{project}/assets", "/v1/projects/oa-proj/assets", tok, expect=200)
        check("GET", "/v1/projects/{project}/assets/{asset}",
              f"/v1/projects/oa-proj/assets/{done['asset']['id']}", tok, expect=200)
        # A model: its levels (the pipeline on serve's worker), its manifest, processing again.
        tri = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
        m = check("POST", ups, "/v1/projects/oa-proj/uploads", tok,
                  {"filename": "tri.obj", "size": len(tri), "content_type": "application/octet-stream",
                   "sha256": hashlib.sha256(tri).hexdigest()}, 201)
        u = urllib.parse.urlsplit(m["put"]["url"])
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
        c.request("PUT", u.path + "?" + u.query, body=tri, headers=m["put"]["headers"])
        self.assertEqual(c.getresponse().status, 200)
        c.close()
        model = check("POST", ups + "/{upload}/complete",
                      f"/v1/projects/oa-proj/uploads/{m['upload']['id']}/complete", tok, expect=201)["asset"]
        one = f"/v1/projects/oa-proj/assets/{model['id']}"

        def ready():
            doc = self.call("GET", one, tok)[1]
            return doc["processing"] if doc["processing"]["state"] == "ready" else None
        wait_until(ready, "the model's levels")
        check("GET", "/v1/projects/{project}/assets/{asset}", one, tok, expect=200)
        check("GET", "/v1/projects/{project}/assets/{asset}/manifest", one + "/manifest", tok, expect=200)
        check("GET", "/v1/projects/{project}/assets/{asset}/manifest",
              f"/v1/projects/oa-proj/assets/{done['asset']['id']}/manifest", tok, expect=404)
        check("POST", "/v1/projects/{project}/assets/{asset}/process", one + "/process", tok, expect=200)
        check("POST", "/v1/projects/{project}/assets/{asset}/process",
              f"/v1/projects/oa-proj/assets/{done['asset']['id']}/process", tok, expect=202)
        check("DELETE", "/v1/projects/{project}/assets/{asset}", one, tok, expect=204)
        check("DELETE", "/v1/projects/{project}/assets/{asset}",
              f"/v1/projects/oa-proj/assets/{done['asset']['id']}", tok, expect=204)
        # The job queue: the completed upload's asset.process job (made by the outbox relay,
        # run by serve's worker).
        jobs = "/v1/admin/jobs"

        def processed():
            status, doc = self.call("GET", jobs + "?type=asset.process&state=succeeded", SERVICE_KEY)
            mine = [j for j in doc.get("items", []) if j["payload"].get("asset") == done["asset"]["id"]]
            return status == 200 and mine
        job = wait_until(processed, "the upload's asset.process job to succeed")[0]
        check("GET", jobs, jobs + "?type=asset.process&limit=5", SERVICE_KEY, expect=200)
        check("GET", jobs, jobs + "?state=finished", SERVICE_KEY, expect=400)
        check("GET", jobs, jobs, tok, expect=403)
        shown = check("GET", jobs + "/{job}", f"{jobs}/{job['id']}", SERVICE_KEY, expect=200)
        self.assertEqual(shown["payload"]["asset"], done["asset"]["id"])
        self.assertEqual([a["outcome"] for a in shown["history"]], ["succeeded"])
        check("GET", jobs + "/{job}", f"{jobs}/j0123", SERVICE_KEY, expect=404)
        check("POST", jobs + "/{job}/retry", f"{jobs}/{job['id']}/retry", SERVICE_KEY, expect=409)
        check("POST", jobs + "/{job}/cancel", f"{jobs}/{job['id']}/cancel", SERVICE_KEY, expect=409)
        # Terminals (docs/terminals.md): on when this node runs as root with runc, else 503.
        on = shutil.which("runc") is not None and os.geteuid() == 0
        t = check("POST", "/v1/terminals", "/v1/terminals", tok, {"rows": 30, "cols": 90}, 201 if on else 503)
        check("GET", "/v1/terminals", "/v1/terminals", tok, expect=200 if on else 503)
        one_term = "/v1/terminals/" + (t["id"] if on else "tnone")
        check("GET", "/v1/terminals/{terminal}", one_term, tok, expect=200 if on else 503)
        check("GET", "/v1/terminals/{terminal}", "/v1/terminals/tnone", tok, expect=404 if on else 503)
        check("POST", "/v1/terminals", "/v1/terminals", SERVICE_KEY, expect=403)
        check("DELETE", "/v1/terminals/{terminal}", one_term, tok, expect=204 if on else 503)
        check("POST", "/v1/projects", "/v1/projects", tok, {"id": "oa-gone", "name": "Gone"}, 201)
        check("DELETE", "/v1/projects/{project}", "/v1/projects/oa-gone", tok, expect=204)
        check("POST", "/v1/users/{user}/revoke", "/v1/users/oa/revoke", SERVICE_KEY, expect=200)
        check("GET", "/v1/me", "/v1/me", tok, expect=401)
        # Every real API route had a real response checked against its schema (a new route
        # fails here until this walk covers it).
        status, _, body = self.kiln.request("GET", "/")
        real = {(r["method"], r["path"]) for r in json.loads(body)["routes"]
                if r["path"].startswith("/v1/") and r["path"] != "/v1/collab"}
        walked = {(m, t) for m, t, _ in steps}
        self.assertEqual(real - walked, set(), "routes whose responses were never checked")


if __name__ == "__main__":
    unittest.main()
