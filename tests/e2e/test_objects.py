"""The embedded object store (`kiln objects`) against independent clients: the AWS SDK for
JavaScript v3 (s3_sdk.test.cjs, run with node's own test runner) and raw sockets for what
a well-behaved SDK never sends (hostile keys, bodies cut short)."""
import os
import re
import subprocess
import unittest

from harness import Kiln, raw_exchange, needs

HERE = os.path.dirname(os.path.abspath(__file__))
NPM = os.environ.get("KILN_NPM_DIR", "")
SECRET = "objects-secret-0123456789abcdef0123456789"


SMUGGLING = [  # (what, request head + body, status); each followed by a pipelined GET
    ("TE gzip then CL", b"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("CL then TE gzip", b"Content-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\nhello", 400),
    ("TE chunked and CL", b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("final coding not chunked", b"Transfer-Encoding: chunked, gzip\r\n\r\nhello", 400),
    ("a coding not implemented", b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("conflicting CL", b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("CL list", b"Content-Length: 5, 6\r\n\r\nhello!", 400),
]


@needs(NPM, "KILN_NPM_DIR not set (run through ctest)")
class ObjectStore(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kiln = Kiln("--objects-secret-key", SECRET, "--objects-cors-origins", "http://editor.example",
                        "--objects-buckets", "kiln,kiln-spare",
                        "--http-access-log", "false", role="objects")
        rec = cls.kiln.wait_for_log(lambda r: r.get("msg") == "object store listening", "the object store")
        cls.port = rec["port"]

    @classmethod
    def tearDownClass(cls):
        cls.kiln.stop()

    def test_the_aws_sdk_suite(self):
        env = dict(os.environ, NODE_PATH=os.path.join(NPM, "node_modules"),
                   KILN_S3_ENDPOINT=f"http://127.0.0.1:{self.port}", KILN_S3_KEY="kiln",
                   KILN_S3_SECRET=SECRET)
        r = subprocess.run(["node", "--test", "--test-reporter=spec", os.path.join(HERE, "s3_sdk.test.cjs")],
                           capture_output=True, text=True, env=env, timeout=300)
        print(r.stdout[-4000:])
        self.assertEqual(r.returncode, 0, r.stdout[-6000:] + r.stderr[-2000:])
        # Every test of the file ran and passed (none skipped or lost).
        with open(os.path.join(HERE, "s3_sdk.test.cjs")) as f:
            count = sum(1 for line in f if line.startswith("test("))
        self.assertIn(f"pass {count}", r.stdout)
        self.assertIn("fail 0", r.stdout)

    def raw(self, request: bytes) -> bytes:
        return raw_exchange("127.0.0.1", self.port, request)

    def test_ambiguous_framing_is_refused_and_nothing_after_it_is_answered(self):
        for what, rest, status in SMUGGLING:
            resp = self.raw(b"PUT /kiln/smuggled HTTP/1.1\r\nHost: x\r\n" + rest +
                            b"GET /kiln/x HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(resp.startswith(b"HTTP/1.1 %d" % status), (what, resp[:200]))
            self.assertEqual(resp.count(b"HTTP/1.1 "), 1, (what, "the pipelined request was not answered"))

    def test_unsigned_requests_are_denied(self):
        resp = self.raw(b"GET /kiln/anything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 403"), resp[:200])
        self.assertIn(b"<Code>AccessDenied</Code>", resp)
        # The error document names the request as its x-amz-request-id header does.
        rid = re.search(rb"x-amz-request-id: (\w+)", resp, re.I).group(1)
        self.assertIn(b"<RequestId>" + rid + b"</RequestId>", resp)

    def test_a_preflight_without_origin_is_400(self):
        resp = self.raw(b"OPTIONS /kiln/x HTTP/1.1\r\nHost: x\r\nAccess-Control-Request-Method: PUT\r\n"
                        b"Connection: close\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 400"), resp[:200])
        resp = self.raw(b"OPTIONS /kiln/x HTTP/1.1\r\nHost: x\r\nOrigin: http://editor.example\r\n"
                        b"Access-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 200"), resp[:200])

    def test_browser_form_uploads_are_refused_as_not_implemented(self):
        # POST Object (an HTML form with a policy) is not implemented: 501, nothing stored.
        body = (b"--b\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nform.txt\r\n"
                b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nhi\r\n--b--\r\n")
        resp = self.raw(b"POST /kiln HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        self.assertTrue(resp.startswith(b"HTTP/1.1 501"), resp[:200])
        self.assertIn(b"<Code>NotImplemented</Code>", resp)

    def test_a_refused_upload_is_answered_not_reset(self):
        # A PUT with a forged signature and a 4 MiB body: the 403 must reach the client even
        # though the store never reads the body.
        body = b"x" * (4 << 20)
        head = (b"PUT /kiln/forged HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode() +
                b"\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-date: 20260101T000000Z\r\n"
                b"Authorization: AWS4-HMAC-SHA256 Credential=kiln/20260101/us-east-1/s3/aws4_request, "
                b"SignedHeaders=host, Signature=00\r\n\r\n")
        resp = self.raw(head + body)
        self.assertTrue(resp.startswith(b"HTTP/1.1 403"), resp[:200])

    def test_oversized_headers_are_answered_then_closed(self):
        resp = self.raw(b"GET /kiln/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 400"), resp[:200])
        self.assertIn(b"<Code>RequestHeaderSectionTooLarge</Code>", resp)

    def test_a_malformed_request_is_answered_then_closed(self):
        resp = self.raw(b"GET /kiln/x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        self.assertTrue(resp.startswith(b"HTTP/1.1 400"), resp[:200])
        self.assertIn(b"<Code>BadRequest</Code>", resp)


if __name__ == "__main__":
    unittest.main()
