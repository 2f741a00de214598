"""Object storage over https: `kiln objects` behind a TLS terminator (socat, OpenSSL, a
certificate made here for localhost), `kiln api` calling it with storage.endpoint https://
and storage.ca_file, and `kiln upload` sending its parts to the presigned https URLs
(trusting the certificate through SSL_CERT_FILE). Without the CA both refuse the
certificate, with a clear error."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from harness import KILN, WAIT, Kiln, helper_ports, needs

SERVICE_KEY = "service-key-0123456789abcdef0123456789abcdef"
SECRET = "objects-secret-0123456789abcdef0123456789"
MIB = 1 << 20


@needs(shutil.which("socat") and shutil.which("openssl"), "socat and openssl are needed")
class StorageOverTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-tls-")
        cls.cert, key = os.path.join(cls.tmp, "cert.pem"), os.path.join(cls.tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
                        cls.cert, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        cls.store = Kiln("--objects-secret-key", SECRET, "--http-access-log", "false", role="objects")
        port = cls.store.wait_for_log(lambda r: r.get("msg") == "object store listening", "the store")["port"]
        for cls.tls_port in helper_ports():  # socat cannot report a port-0 bind
            cls.socat = subprocess.Popen(
                ["socat", f"OPENSSL-LISTEN:{cls.tls_port},bind=127.0.0.1,fork,cert={cls.cert},"
                 f"key={key},verify=0", f"TCP:127.0.0.1:{port}"],
                stderr=open(os.path.join(cls.tmp, "socat.err"), "w"))
            deadline = time.monotonic() + WAIT
            while True:  # until socat accepts connections, or exits (the port was taken)
                try:
                    socket.create_connection(("127.0.0.1", cls.tls_port), timeout=1).close()
                    break
                except OSError:
                    if cls.socat.poll() is not None:
                        break
                    if time.monotonic() > deadline:
                        raise AssertionError("socat did not start")
                    time.sleep(0.05)  # polling an outside process's listen; bounded
            if cls.socat.poll() is None:
                break
            with open(os.path.join(cls.tmp, "socat.err")) as f:
                err = f.read()
            if "Address already in use" not in err:
                raise AssertionError("socat did not start: " + err)
        else:
            raise AssertionError("socat found no free port")
        cls.endpoint = f"https://localhost:{cls.tls_port}"

    @classmethod
    def tearDownClass(cls):
        cls.socat.terminate()
        cls.socat.wait(WAIT)
        cls.store.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def api(self, *extra):
        k = Kiln("--api-service-key", SERVICE_KEY, "--http-access-log", "false",
                 "--storage-endpoint", self.endpoint, "--storage-secret-key", SECRET,
                 "--uploads-multipart-threshold-bytes", str(6 * MIB), "--uploads-part-size-bytes", str(5 * MIB),
                 *extra, role="api")
        self.addCleanup(k.stop)
        return k

    def post(self, k, path, tok, body):
        st, _, doc = k.call("POST", path, tok, body)
        return st, doc

    def user(self, k, project):
        tok = self.post(k, "/v1/tokens", SERVICE_KEY, {"user": {"id": "ann"}})[1]["token"]
        self.assertEqual(self.post(k, "/v1/projects", tok, {"id": project, "name": project})[0], 201)
        return tok

    def upload(self, k, tok, project, path, env_extra):
        env = {k_: v for k_, v in os.environ.items() if not k_.startswith(("KILN_", "SSL_CERT"))}
        env.update(env_extra, KILN_TOKEN=tok)
        return subprocess.run([KILN, "upload", path, "--project", project, "--api", f"http://{k.host}:{k.port}",
                               "--state-dir", os.path.join(self.tmp, "state-" + project), "--no-progress"],
                              capture_output=True, text=True, env=env, timeout=120)

    def test_uploads_go_over_https(self):
        k = self.api("--storage-ca-file", self.cert)
        tok = self.user(k, "tls")
        path = os.path.join(self.tmp, "scan.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(12 * MIB))
        # The uploader does not trust the certificate: a clear refusal, nothing lost.
        r = self.upload(k, tok, "tls", path, {})
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("certificate verify failed", r.stderr)
        self.assertIn("run the same command again", r.stderr)
        # Trusting it: parts over https, the API's own calls over https, hash checked.
        r = self.upload(k, tok, "tls", path, {"SSL_CERT_FILE": self.cert})
        self.assertEqual(r.returncode, 0, r.stderr)
        done = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(done["asset"]["size"], 12 * MIB)
        st, _, b = k.request("GET", f"/v1/projects/tls/assets/{done['asset']['id']}",
                             {"Authorization": "Bearer " + tok})
        self.assertTrue(json.loads(b)["download"]["url"].startswith(self.endpoint + "/kiln/"))

    def test_an_untrusted_certificate_is_a_storage_error(self):
        k = self.api()  # no storage.ca_file: the system's CAs do not know this certificate
        tok = self.user(k, "untrusted")
        st, doc = self.post(k, "/v1/projects/untrusted/uploads", tok,
                            {"filename": "big.bin", "size": 7 * MIB, "content_type": "application/octet-stream"})
        self.assertEqual(st, 502, doc)
        self.assertEqual(doc["type"], "https://kiln.dev/problems/storage-unavailable")
        k.wait_for_log(lambda r: r.get("msg") == "api: object storage call failed", "the failure logged")


if __name__ == "__main__":
    unittest.main()
