"""End-to-end: the real `kiln serve` on port 0, its endpoints, its limits, its shutdown."""
import json
import os
import pathlib
import signal
import socket
import time
import unittest

from prometheus_client.parser import text_string_to_metric_families

from harness import WAIT, Kiln, closed_by_peer, raw_exchange, read_response, send_request


def metrics_of(kiln):
    _, _, body = kiln.request("GET", "/metrics")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def wait_for_metric(kiln, name, predicate):
    """Polls /metrics (bounded) until the unlabelled gauge `name` satisfies predicate."""
    deadline = time.monotonic() + WAIT
    while True:
        value = metrics_of(kiln)[name].samples[0].value
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} stayed at {value}")


class Endpoints(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kiln = Kiln()

    @classmethod
    def tearDownClass(cls):
        cls.kiln.stop()

    def test_prints_the_url_to_open(self):
        self.assertRegex(self.kiln.url_line, r"^Kiln .* is running at http://127\.0\.0\.1:\d+/$")

    def test_healthz_says_alive(self):
        status, headers, body = self.kiln.request("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(json.loads(body), {"status": "alive"})

    def test_readyz_reports_each_check(self):
        status, _, body = self.kiln.request("GET", "/readyz")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body),
                         {"status": "ready",
                          "checks": {"data_dir": "ok", "journal": "ok", "persistence": "ok",
                                     "jobs": "ok"}})

    def test_a_browser_gets_a_landing_page_and_the_banner_says_where_things_are(self):
        status, headers, body = self.kiln.request("GET", "/", {"Accept": "text/html,*/*;q=0.8"})
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        page = body.decode()
        for needle in ('href="/openapi.yaml"', "/v1/collab", "kiln.v1", "service-key", "/readyz"):
            self.assertIn(needle, page)
        self.assertNotIn(self.kiln.data_dir, page, "the page tells no file system path")
        banner = "".join(self.kiln.banner)
        base = f"http://{self.kiln.host}:{self.kiln.port}"
        self.assertIn(f"{base}/openapi.yaml", banner)
        self.assertIn(f"ws://{self.kiln.host}:{self.kiln.port}/v1/collab", banner)
        self.assertIn(os.path.join(self.kiln.data_dir, "service-key"), banner)
        self.assertRegex(banner, r"object store +http://127\.0\.0\.1:\d+ ")

    def test_the_openapi_document_is_served_as_built(self):
        status, headers, body = self.kiln.request("GET", "/openapi.yaml")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/yaml")
        doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
        self.assertEqual(body, doc.read_bytes())

    def raw(self, request: bytes) -> bytes:
        return raw_exchange(self.kiln.host, self.kiln.port, request)

    def test_ambiguous_framing_is_refused_on_every_route(self):
        # RFC 9112 section 6 (request smuggling): the API, the gateway's upgrade path and the
        # health routes share the listener; the object store has its own (test_objects).
        from test_objects import SMUGGLING
        for path in (b"/v1/projects", b"/v1/collab", b"/healthz"):
            for what, rest, status in SMUGGLING:
                resp = self.raw(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + rest +
                                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertTrue(resp.startswith(b"HTTP/1.1 %d" % status), (path, what, resp[:200]))
                self.assertEqual(resp.count(b"HTTP/1.1 "), 1, (path, what, "pipelined request answered"))

    def test_the_neighbours_of_smuggling(self):
        # RFC 9112: whitespace before a colon and bare LF line ends are 400, a chunk size past
        # 64 bits is 400; each closes the connection (nothing pipelined is answered). An
        # obs-fold may be replaced by a space (section 5.2): it is, and the request is served.
        get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for what, req in [
                ("whitespace before colon", b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"),
                ("bare LF", b"GET /healthz HTTP/1.1\nHost: x\n\n"),
                ("chunk size overflow", b"POST /v1/projects HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                        b"Authorization: Bearer " + self.kiln.service_key().encode() +
                                        b"\r\nContent-Type: application/json\r\n\r\n"
                                        b"FFFFFFFFFFFFFFFFFF1\r\nhello\r\n0\r\n\r\n")]:
            resp = self.raw(req + get)
            self.assertTrue(resp.startswith(b"HTTP/1.1 400"), (what, resp[:200]))
            self.assertEqual(resp.count(b"HTTP/1.1 "), 1, what)
        resp = self.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n" + get)
        self.assertEqual(resp.count(b"HTTP/1.1 200"), 2, resp[:300])

    def expect_exchange(self, path, headers, body):
        """Sends a header section with `Expect: 100-continue`, then the body only if the
        server said 100. Returns (interim status line or None, final response bytes)."""
        with socket.create_connection((self.kiln.host, self.kiln.port), timeout=WAIT) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Expect: 100-continue\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode())
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
            interim = None
            if got.startswith(b"HTTP/1.1 100"):
                interim = got[:got.index(b"\r\n")]
                got = got[got.index(b"\r\n\r\n") + 4:]
                s.sendall(body)
                while b"\r\n\r\n" not in got:
                    got += s.recv(4096)
            return interim, got

    def test_expect_100_continue_is_answered_before_the_body(self):
        # RFC 9110 section 10.1.1: 100 Continue, or the final status as soon as the header
        # section decides it, so the client never sends a body for nothing.
        body = b'{"name":"expect","owner":"u-expect"}'
        key = f"Authorization: Bearer {self.kiln.service_key()}\r\n"
        json_ct = "Content-Type: application/json\r\n"
        interim, final = self.expect_exchange("/v1/projects", key + json_ct, body)
        self.assertEqual(interim, b"HTTP/1.1 100 Continue")
        self.assertTrue(final.startswith(b"HTTP/1.1 201"), final[:300])
        for what, path, headers, status in [
                ("no credential", "/v1/projects", json_ct, 401),
                ("a forged token", "/v1/projects", json_ct + "Authorization: Bearer a.b.c\r\n", 401),
                ("a body that is not JSON", "/v1/projects", key + "Content-Type: text/plain\r\n", 415),
                ("no such route", "/v1/nothing-here", key + json_ct, 404),
                ("a method the path does not take", "/v1/me", key + json_ct, 405)]:
            interim, final = self.expect_exchange(path, headers, body)
            self.assertIsNone(interim, what)
            self.assertTrue(final.startswith(b"HTTP/1.1 %d" % status), (what, final[:300]))
            self.assertIn(b"application/problem+json", final, what)
            if status == 401:
                self.assertIn(b"WWW-Authenticate: Bearer", final, what)
        # Too large for the listener: the final status at once, no 100.
        resp = self.raw(b"POST /v1/projects HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                        b"Content-Length: 999999999\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 413"), resp[:200])
        # Without Expect, a body behind a refused header section is not read either: the
        # connection closes after the answer, and what was pipelined is not served.
        resp = self.raw(b"POST /v1/projects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 401"), resp[:200])
        self.assertEqual(resp.count(b"HTTP/1.1 "), 1, resp[:400])

    def test_media_types_and_auth_schemes_are_case_insensitive(self):
        # RFC 9110 sections 8.3.1 and 11.1: "APPLICATION/JSON" is JSON, "bearer" is Bearer.
        body = b'{"name":"cases","owner":"u-cases"}'
        with socket.create_connection((self.kiln.host, self.kiln.port), timeout=WAIT) as s:
            send_request(s, "POST", "/v1/projects", {
                "authorization": f"bearer {self.kiln.service_key()}",
                "Content-Type": "APPLICATION/JSON ; charset=utf-8"}, body)
            status, _, resp = read_response(s)
        self.assertEqual(status, 201, resp)

    def test_index_lists_endpoints(self):
        status, _, body = self.kiln.request("GET", "/")
        self.assertEqual(status, 200)
        doc = json.loads(body)
        self.assertEqual(doc["name"], "kiln")
        self.assertEqual(doc["role"], "serve")
        self.assertIn("/metrics", doc["endpoints"])

    def test_unknown_path_is_404_problem(self):
        status, headers, body = self.kiln.request("GET", "/no/such/thing")
        self.assertEqual(status, 404)
        self.assertEqual(headers["content-type"], "application/problem+json")
        self.assertEqual(json.loads(body)["status"], 404)

    def test_wrong_method_is_405_with_allow(self):
        status, headers, _ = self.kiln.request("POST", "/healthz", body=b"{}")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "GET")

    def test_head_has_length_but_no_body(self):
        s = self.kiln.connect()
        status, headers, body = self.kiln.request("HEAD", "/healthz", sock=s)
        self.assertEqual(status, 200)
        self.assertEqual(int(headers["content-length"]), len(b'{"status":"alive"}'))
        self.assertEqual(body, b"")
        # The connection is still usable: no stray body bytes were sent.
        status, _, body = self.kiln.request("GET", "/healthz", sock=s)
        self.assertEqual((status, json.loads(body)), (200, {"status": "alive"}))
        s.close()

    def test_keep_alive_serves_several_requests_on_one_connection(self):
        s = self.kiln.connect()
        for _ in range(3):
            status, headers, _ = self.kiln.request("GET", "/healthz", sock=s)
            self.assertEqual(status, 200)
            self.assertNotEqual(headers.get("connection"), "close")
        s.close()

    def test_request_id_is_echoed_or_made(self):
        _, headers, _ = self.kiln.request("GET", "/healthz", headers={"X-Request-Id": "abc-123"})
        self.assertEqual(headers["x-request-id"], "abc-123")
        _, headers, _ = self.kiln.request("GET", "/healthz")
        self.assertRegex(headers["x-request-id"], r"^[0-9a-f]{16}$")
        _, headers, _ = self.kiln.request("GET", "/healthz", headers={"X-Request-Id": "a\"b"})
        self.assertRegex(headers["x-request-id"], r"^[0-9a-f]{16}$")

    def test_metrics_are_valid_prometheus_text(self):
        self.kiln.request("GET", "/healthz")
        self.kiln.request("GET", "/nope")
        status, headers, body = self.kiln.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"))
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        for name in ("process_cpu_seconds", "process_resident_memory_bytes",
                     "process_open_fds", "kiln_http_open_connections",
                     "kiln_http_requests", "kiln_http_request_duration_seconds"):
            self.assertIn(name, families)
        self.assertEqual(families["kiln_http_request_duration_seconds"].type, "histogram")
        self.assertGreater(families["process_resident_memory_bytes"].samples[0].value, 1e6)
        # The scrape itself holds a connection open.
        self.assertGreaterEqual(families["kiln_http_open_connections"].samples[0].value, 1)
        by_route = {(s.labels["route"], s.labels["status"]): s.value
                    for s in families["kiln_http_requests"].samples}
        self.assertGreaterEqual(by_route[("healthz", "200")], 1)
        self.assertGreaterEqual(by_route[("unmatched", "404")], 1)
        routes = {s.labels.get("route") for s in
                  families["kiln_http_request_duration_seconds"].samples}
        self.assertIn("healthz", routes)

    def test_logs_are_json_lines_with_request_ids_and_no_secrets(self):
        self.kiln.request("GET", "/healthz?token=QUERYSECRET",
                          headers={"Authorization": "Bearer HEADERSECRET", "X-Request-Id": "log-1"})
        rec = self.kiln.wait_for_log(lambda r: r.get("request_id") == "log-1", "the access log")
        for key in ("time", "level", "role", "node", "msg"):
            self.assertIn(key, rec)
        self.assertEqual(rec["path"], "/healthz")
        self.assertEqual(rec["status"], 200)
        joined = "\n".join(self.kiln.lines)
        self.assertNotIn("QUERYSECRET", joined)
        self.assertNotIn("HEADERSECRET", joined)


class BadInput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kiln = Kiln("--http-request-timeout-ms", "500", "--http-max-body-bytes", "1024",
                        "--http-max-header-bytes", "2048")

    @classmethod
    def tearDownClass(cls):
        cls.kiln.stop()

    def raw(self, data):
        s = self.kiln.connect()
        s.sendall(data)
        status, headers, body = read_response(s)
        self.assertEqual(headers.get("connection"), "close")
        self.assertTrue(closed_by_peer(s), "the server must close after a refused request")
        s.close()
        return status, body

    def assertStillServing(self):
        self.assertEqual(self.kiln.request("GET", "/healthz")[0], 200)

    def test_garbage_request_line_is_400(self):
        status, body = self.raw(b"GARBAGE\r\n\r\n")
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body)["type"], "https://kiln.dev/problems/malformed")
        self.assertStillServing()

    def test_bad_header_is_400(self):
        self.assertEqual(self.raw(b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n")[0], 400)
        self.assertEqual(self.raw(b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n")[0], 400)
        self.assertEqual(self.raw(b"GET / HTTP/9.9\r\n\r\n")[0], 400)
        self.assertStillServing()

    def test_binary_noise_is_400(self):
        self.assertEqual(self.raw(bytes(range(256)) * 4)[0], 400)
        self.assertStillServing()

    def test_oversized_headers_are_431(self):
        big = b"X-Big: " + b"a" * 4096 + b"\r\n"
        self.assertEqual(self.raw(b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")[0], 431)
        self.assertStillServing()

    def test_declared_oversized_body_is_413_before_it_is_sent(self):
        status, _ = self.raw(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        self.assertEqual(status, 413)
        self.assertStillServing()

    def test_oversized_chunked_body_is_413(self):
        chunk = b"%x\r\n%s\r\n" % (4096, b"z" * 4096)
        # A route that takes a body, with a credential and type that let it be read.
        status, _ = self.raw(b"POST /v1/projects HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"Authorization: Bearer " + self.kiln.service_key().encode() +
                             b"\r\nContent-Type: application/json\r\n\r\n" + chunk)
        self.assertEqual(status, 413)
        self.assertStillServing()

    def test_ten_megabytes_actually_sent_is_refused_cleanly(self):
        s = self.kiln.connect()
        send = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n"
        s.sendall(send)
        try:
            s.sendall(b"x" * 10485760)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once it has answered
        status, _, _ = read_response(s)
        self.assertEqual(status, 413)
        s.close()
        self.assertStillServing()

    def test_slow_request_times_out_with_408(self):
        s = self.kiln.connect()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        status, _, _ = read_response(s)
        self.assertEqual(status, 408)
        self.assertTrue(closed_by_peer(s))
        s.close()

    def test_refusals_are_counted(self):
        self.raw(b"GARBAGE\r\n\r\n")
        _, _, body = self.kiln.request("GET", "/metrics")
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        reasons = {s.labels["reason"]: s.value for s in fams["kiln_http_rejected"].samples}
        self.assertGreaterEqual(reasons.get("malformed", 0), 1)


class ConnectionLimit(unittest.TestCase):
    def test_connections_beyond_the_limit_get_503(self):
        kiln = Kiln("--http-max-connections", "2")
        try:
            held = [kiln.connect() for _ in range(2)]
            for s in held:  # a served request proves the server has counted the connection
                self.assertEqual(kiln.request("GET", "/healthz", sock=s)[0], 200)
            s3 = kiln.connect()
            status, headers, _ = read_response(s3)
            self.assertEqual(status, 503)
            self.assertEqual(headers["retry-after"], "1")
            s3.close()
            held[0].close()
            # Once a slot frees up new connections are served again. The server sees the
            # close asynchronously, so poll (bounded) until a new connection gets through.
            deadline = time.monotonic() + WAIT
            while True:
                status = kiln.request("GET", "/healthz")[0]
                if status == 200 or time.monotonic() > deadline:
                    break
            self.assertEqual(status, 200)
            held[1].close()
        finally:
            kiln.stop()


class Shutdown(unittest.TestCase):
    def drain_and_check(self, sig):
        kiln = Kiln("--shutdown-drain-ms", "20000")
        idle = kiln.connect()
        self.assertEqual(kiln.request("GET", "/healthz", sock=idle)[0], 200)
        busy = kiln.connect()
        busy.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # a request in progress
        # The server must have started reading it before the signal: wait until the gauge
        # counts it (and the scrape that asks).
        wait_for_metric(kiln, "kiln_http_requests_in_progress", lambda v: v >= 2)
        kiln.signal(sig)
        kiln.wait_for_log(lambda r: r["msg"] == "stopped accepting new connections", "drain start")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((kiln.host, kiln.port), timeout=5)
        self.assertTrue(closed_by_peer(idle), "idle keep-alive connections close at once")
        busy.sendall(b"\r\n")  # finish the request in progress: it is still answered
        status, headers, body = read_response(busy)
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["status"], "draining")
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(kiln.wait_exit(), 0)
        idle.close()
        busy.close()
        msgs = [r["msg"] for r in kiln.log_records()]
        self.assertIn("drained: every connection closed", msgs)
        self.assertIn("stopped", msgs)

    def test_sigterm_drains_in_flight_requests_and_exits_zero(self):
        self.drain_and_check(signal.SIGTERM)

    def test_sigint_does_the_same(self):
        self.drain_and_check(signal.SIGINT)

    def test_a_second_signal_during_a_drain_stops_at_once_and_cleanly(self):
        # Ctrl-C twice while a request is still arriving: the node stops now (exit 0), and
        # the drain that completes as the cut connections close starts nothing after the
        # modules have stopped (it once ran the persister's final flush on a stopped node).
        kiln = Kiln("--shutdown-drain-ms", "20000")
        busy = kiln.connect()
        busy.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # a request in progress
        wait_for_metric(kiln, "kiln_http_requests_in_progress", lambda v: v >= 2)
        kiln.signal(signal.SIGTERM)
        kiln.wait_for_log(lambda r: r["msg"] == "stopped accepting new connections", "drain start")
        kiln.signal(signal.SIGTERM)
        self.assertEqual(kiln.wait_exit(), 0)
        self.assertTrue(closed_by_peer(busy))
        busy.close()
        msgs = [r["msg"] for r in kiln.log_records()]
        self.assertIn("second signal: closing every connection now", msgs)
        self.assertIn("stopped", msgs)

    def test_drain_window_cuts_requests_that_never_finish(self):
        kiln = Kiln("--shutdown-drain-ms", "300")
        stuck = kiln.connect()
        stuck.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        self.assertEqual(kiln.request("GET", "/healthz")[0], 200)
        kiln.signal(signal.SIGTERM)
        self.assertEqual(kiln.wait_exit(), 0)
        self.assertTrue(closed_by_peer(stuck))
        stuck.close()
        msgs = [r["msg"] for r in kiln.log_records()]
        self.assertIn("drain window over: cutting remaining connections", msgs)


if __name__ == "__main__":
    unittest.main()
