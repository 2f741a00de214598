#!/usr/bin/env python3
"""Gives kiln-bench's clients access through Kiln's REST API: the gateway decides joins from
live membership (a token proves identity only), so before a run the bench's project, its
members (`<user-prefix>0` .. `<user-prefix>N-1`, the ids kiln-bench signs tokens for) and
its scenes (`<project>/room0` ..) must exist.

    python3 bench/seed_access.py --api http://127.0.0.1:7700 --key-file DATA/service-key \
        --users 2000 --rooms 100

Idempotent: what exists already is kept. Uses keep-alive connections on 8 threads.
"""
import argparse
import concurrent.futures
import http.client
import json
import sys
import threading
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api", required=True, help="base URL of a node serving /v1")
    key = ap.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", help="the service key")
    key.add_argument("--key-file", help="a file holding the service key")
    ap.add_argument("--project", default="bench")
    ap.add_argument("--user-prefix", default="bench")
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--rooms", type=int, required=True)
    ap.add_argument("--role", default="editor", choices=["owner", "editor", "viewer"])
    a = ap.parse_args()
    secret = a.key or open(a.key_file).read().strip()
    url = urllib.parse.urlsplit(a.api)
    local = threading.local()

    def call(method, path, body, ok):
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        for _ in range(100):
            local.conn.request(method, path, json.dumps(body), {
                "Authorization": "Bearer " + secret, "Content-Type": "application/json"})
            r = local.conn.getresponse()
            data = r.read()
            if r.status != 429:
                break
            time.sleep(float(r.getheader("Retry-After", "1")))  # the API's rate limit
        if r.status not in ok:
            raise SystemExit(f"seed_access: {method} {path}: {r.status} {data[:300]!r}")

    call("POST", "/v1/projects", {"id": a.project, "name": a.project, "owner": "bench-owner"},
         (201, 409))
    jobs = [("PUT", f"/v1/projects/{a.project}/members/{a.user_prefix}{i}", {"role": a.role}, (200,))
            for i in range(a.users)]
    jobs += [("POST", f"/v1/projects/{a.project}/scenes", {"id": f"room{r}", "name": f"room{r}"},
              (201, 409)) for r in range(a.rooms)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(call, *j) for j in jobs]:
            f.result()
    print(f"seed_access: {a.users} members and {a.rooms} scenes in project {a.project}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
