"""Terminal sessions end to end (docs/terminals.md): `kiln serve` with real sandboxes (runc,
as root), the REST routes (/v1/terminals) and the terminal WebSocket (/v1/term, kiln.term.v1)
spoken by a test client. Offsets and reattach, owners, quotas, limits, bad frames, a flood
that a client cannot keep up with, and what a killed server leaves behind."""
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import websockets
from prometheus_client.parser import text_string_to_metric_families

from harness import Kiln, WAIT, needs, run_kiln

RUNC = shutil.which("runc")


class Term:
    """One kiln.term.v1 connection: attach, type, read output with offsets."""

    def __init__(self, ws):
        self.ws = ws
        self.out = b""
        self.next = None  # the offset the next output must have
        self.exit = None
        self.attached = None

    @classmethod
    async def attach(cls, node, token, session, offset=0, small_buffer=False):
        sock = None
        if small_buffer:  # a reader that falls behind soon: no autotuned megabytes of buffer
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.connect((node.host, node.port))
        ws = await websockets.connect(f"ws://{node.host}:{node.port}/v1/term", sock=sock,
                                      subprotocols=["kiln.term.v1"], max_size=None, max_queue=4)
        t = cls(ws)
        await ws.send(json.dumps({"t": "attach", "token": token, "session": session, "offset": offset}))
        t.attached = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if t.attached.get("t") == "attached":
            t.next = t.attached["from"]
        return t

    async def send(self, data):
        await self.ws.send(json.dumps({"t": "in", "data": data}))

    async def read_until(self, needle, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.out and self.exit is None:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic())))
            self.take(m)
        return self.out

    def take(self, m):
        if m["t"] == "out":
            assert m["offset"] == self.next, (m["offset"], self.next)
            data = base64.b64decode(m["data"])
            self.out += data
            self.next += len(data)
        elif m["t"] == "exit":
            self.exit = m

    async def until_closed(self):
        try:
            while True:
                self.take(json.loads(await asyncio.wait_for(self.ws.recv(), WAIT)))
        except websockets.ConnectionClosed as e:
            return e.code


def run(coro):
    return asyncio.run(coro)


def metrics(node):
    """{sample name: value} of the node's /metrics (unlabelled samples)."""
    _, _, text = node.request("GET", "/metrics")
    return {x.name: x.value for f in text_string_to_metric_families(text.decode())
            for x in f.samples if not x.labels}


async def closed_with(node, frames, timeout=WAIT):
    """Sends raw frames on a fresh /v1/term connection; returns the close code."""
    ws = await websockets.connect(f"ws://{node.host}:{node.port}/v1/term", subprotocols=["kiln.term.v1"])
    try:
        for f in frames:
            await ws.send(f)
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as e:
        return e.code, e.reason


@needs(RUNC and os.geteuid() == 0, "missing: runc and root (scripts/packages-test.txt)")
class Terminals(unittest.TestCase):
    ARGS = ["--sandbox-enabled", "on", "--auth-dev-tokens", "true",
            "--sandbox-sessions-per-user", "2", "--sandbox-memory-bytes", str(128 << 20),
            "--sandbox-disk-bytes", str(64 << 20),
            "--sandbox-scrollback-bytes", "65536", "--sandbox-shell", "/bin/sh"]

    def setUp(self):
        self.node = Kiln(*self.ARGS)

    def tearDown(self):
        self.node.stop()

    def token(self, user):
        status, _, doc = self.node.call("POST", "/v1/dev/token", body={"user": {"id": user}})
        self.assertEqual(status, 201, doc)
        return doc["token"]

    def open(self, token, **body):
        status, headers, doc = self.node.call("POST", "/v1/terminals", token, body or None)
        self.assertEqual(status, 201, doc)
        self.assertEqual(headers["location"], "/v1/terminals/" + doc["id"])
        return doc

    def test_output_has_offsets_and_a_reattach_loses_nothing(self):
        ann = self.token("ann")
        s = self.open(ann, rows=30, cols=100)
        self.assertTrue(s["running"])

        async def go():
            t = await Term.attach(self.node, ann, s["id"])
            self.assertEqual(t.attached["t"], "attached", t.attached)
            await t.send("stty size; echo $((6*7))\r")
            await t.read_until("42\r\n")
            self.assertIn(b"30 100\r\n", t.out)
            read_to = t.next
            m = metrics(self.node)
            self.assertEqual((m["kiln_terminal_sessions"], m["kiln_terminal_clients"]), (1, 1), m)
            self.assertEqual(m["kiln_terminal_warm_starts_total"] + m["kiln_terminal_cold_starts_total"], 1)
            # Typed, then the connection dropped before the output came back.
            await t.send("echo away-$((1+1))\r")
            await t.ws.close()
            seen = b""
            deadline = time.monotonic() + WAIT
            while b"away-2\r\n" not in seen and time.monotonic() < deadline:
                back = await Term.attach(self.node, ann, s["id"], read_to)
                self.assertEqual((back.attached["from"], back.attached["lost"]), (read_to, 0))
                try:
                    await back.read_until("away-2\r\n", timeout=0.5)
                except asyncio.TimeoutError:
                    pass
                seen = back.out
                await back.ws.close()
            self.assertIn(b"away-2\r\n", seen)
            self.assertNotIn(b"42\r\n", seen, "nothing before the offset again")
        run(go())
        status, _, doc = self.node.call("GET", "/v1/terminals/" + s["id"], ann)
        self.assertEqual(status, 200)
        self.assertEqual((doc["running"], doc["attached"]), (True, 0))
        self.assertGreater(doc["end"], 0)

    def test_a_command_runs_instead_of_the_shell(self):
        ann = self.token("ann")
        s = self.open(ann, command=["sh", "-c", "echo made-$((6*7)) > /work/out; cat /work/out; exit 4"])
        self.assertEqual(s["command"][0], "sh")

        async def go():
            t = await Term.attach(self.node, ann, s["id"])
            self.assertEqual(t.attached["t"], "attached", t.attached)
            self.assertEqual(await t.until_closed(), 1000)
            return t
        t = run(go())
        self.assertIn(b"made-42", t.out)
        self.assertEqual((t.exit["reason"], t.exit["code"]), ("exited", 4))
        status, _, doc = self.node.call("GET", "/v1/terminals/" + s["id"], ann)
        self.assertEqual((status, doc["running"], doc["command"][0]), (200, False, "sh"), doc)
        shell = self.open(ann)
        self.assertIsNone(shell["command"], "the shell")
        for body, words in (({"command": []}, "non-empty array"),
                            ({"command": "ls -l"}, "non-empty array"),
                            ({"command": ["ls", 3]}, "strings only"),
                            ({"command": ["/bin/echo", "a\u0000b"]}, "NUL"),
                            ({"command": ["x"] * 300}, "1-256 arguments"),
                            ({"shell": "/bin/zsh"}, "'shell'")):
            status, _, doc = self.node.call("POST", "/v1/terminals", ann, body)
            self.assertEqual(status, 400, (body, doc))
            self.assertIn(words, doc["detail"], body)
        status, _, doc = self.node.call("POST", "/v1/terminals", ann, {"command": ["no-such-program"]})
        self.assertEqual(status, 201, doc)  # it starts, and says so as it ends

        async def missing():
            t = await Term.attach(self.node, ann, doc["id"])
            await t.until_closed()
            return t
        t = run(missing())
        self.assertIn(b"no-such-program", t.out)
        self.assertEqual(t.exit["code"], 127)

    def test_a_user_has_at_most_so_many_connections_attached(self):
        self.node.stop()
        self.node = Kiln(*self.ARGS, "--sandbox-terminal-connections-per-user", "2")
        ann, bob = self.token("ann"), self.token("bob")
        s = self.open(ann)

        async def go():
            one = await Term.attach(self.node, ann, s["id"])
            two = await Term.attach(self.node, ann, s["id"])
            self.assertEqual((one.attached["t"], two.attached["t"]), ("attached", "attached"))
            code, reason = await closed_with(self.node, [json.dumps(
                {"t": "attach", "token": ann, "session": s["id"], "offset": 0})])
            self.assertEqual(code, 4029, reason)
            self.assertIn("close one", reason)
            theirs = self.open(bob)  # another user's count is their own
            b = await Term.attach(self.node, bob, theirs["id"])
            self.assertEqual(b.attached["t"], "attached")
            await one.ws.close()
            # A closed one frees its place (once the server has seen it go: asked again).
            deadline = time.monotonic() + WAIT
            again = None
            while again is None and time.monotonic() < deadline:
                try:
                    again = await Term.attach(self.node, ann, s["id"])
                except websockets.ConnectionClosed as e:  # 4029 while the close is on its way
                    self.assertEqual(e.code, 4029)
            self.assertEqual(again.attached["t"], "attached")
            for t in (two, b, again):
                await t.ws.close()
        run(go())

    def test_only_the_owner_reaches_a_session(self):
        ann, bob = self.token("ann"), self.token("bob")
        s = self.open(ann)
        for method in ("GET", "DELETE"):
            status, _, doc = self.node.call(method, "/v1/terminals/" + s["id"], bob)
            self.assertEqual((status, doc["type"]), (404, "https://kiln.dev/problems/not-found"))
        self.assertEqual(self.node.call("GET", "/v1/terminals", bob)[2], {"items": []})
        status, _, doc = self.node.call("POST", "/v1/terminals", self.node.service_key())
        self.assertEqual(status, 403, doc)
        code, _ = run(closed_with(self.node, [json.dumps(
            {"t": "attach", "token": bob, "session": s["id"], "offset": 0})]))
        self.assertEqual(code, 4004)
        status, _, doc = self.node.call("GET", "/v1/terminals/" + s["id"], ann)
        self.assertEqual((status, doc["running"]), (200, True))
        self.assertEqual(self.node.call("GET", "/v1/terminals")[0], 401)

    def test_revoked_tokens_end_the_connection_not_the_session(self):
        ann = self.token("ann")
        s = self.open(ann)

        async def go():
            t = await Term.attach(self.node, ann, s["id"])
            self.assertEqual(t.attached["t"], "attached")
            status, _, doc = self.node.call("POST", "/v1/users/ann/revoke", self.node.service_key())
            self.assertEqual(status, 200, doc)
            self.assertEqual(await t.until_closed(), 4001)
            code, _ = await closed_with(self.node, [json.dumps(
                {"t": "attach", "token": ann, "session": s["id"], "offset": 0})])
            self.assertEqual(code, 4001, "the old token attaches no more")
            fresh = await Term.attach(self.node, self.token("ann"), s["id"])
            self.assertEqual(fresh.attached["t"], "attached", "the session went on")
            await fresh.ws.close()
        run(go())
        self.assertEqual(self.node.call("GET", "/v1/terminals", ann)[0], 401)

    def test_a_full_work_directory_is_no_space_not_a_kill(self):
        ann = self.token("ann")
        s = self.open(ann)

        async def go():
            t = await Term.attach(self.node, ann, s["id"])
            # /work is 64 MiB here (memory 128 MiB): a 200 MB file fills it, the shell lives.
            await t.send("head -c 200000000 /dev/zero > /work/big; echo after-$((40+2))\r")
            await t.read_until("after-42\r\n", timeout=60)
            self.assertIn(b"No space left on device", t.out)
            self.assertIsNone(t.exit)
            await t.ws.close()
        run(go())
        self.assertTrue(self.node.call("GET", "/v1/terminals/" + s["id"], ann)[2]["running"])

    def test_the_service_key_and_frames_that_are_not_json_are_told_why(self):
        ann = self.token("ann")
        s = self.open(ann)
        code, reason = run(closed_with(self.node, [json.dumps(
            {"t": "attach", "token": self.node.service_key(), "session": s["id"]})]))
        self.assertEqual(code, 4001)
        self.assertIn("user's token", reason)
        attach = json.dumps({"t": "attach", "token": ann, "session": s["id"], "offset": 0})
        code, reason = run(closed_with(self.node, [attach, '{"t":"in","data":"echo \\ud800\\r"}']))
        self.assertEqual(code, 4000)
        self.assertIn("not valid JSON", reason)

    def test_stopping_the_server_ends_sessions_and_tells_attached_clients(self):
        ann = self.token("ann")
        s = self.open(ann)

        async def go():
            t = await Term.attach(self.node, ann, s["id"])
            await t.send("echo up\r")
            await t.read_until("up\r\n")
            self.node.signal(signal.SIGTERM)
            self.assertEqual(await t.until_closed(), 1000)
            self.assertEqual((t.exit["reason"], t.exit["message"]), ("destroyed", "ended: the server stopped"))
        run(go())
        self.assertEqual(self.node.wait_exit(), 0)

    def test_a_user_quota_and_closing_a_session(self):
        ann = self.token("ann")
        first, _ = self.open(ann), self.open(ann)
        status, _, doc = self.node.call("POST", "/v1/terminals", ann)
        self.assertEqual((status, doc["type"]), (409, "https://kiln.dev/problems/too-many-sessions"))
        self.assertIn("at most 2", doc["detail"])
        self.assertEqual(self.node.call("DELETE", "/v1/terminals/" + first["id"], ann)[0], 204)
        self.assertEqual(self.node.call("GET", "/v1/terminals/" + first["id"], ann)[0], 404)
        self.open(ann)
        status, _, doc = self.node.call("POST", "/v1/terminals", ann, {"rows": 0})
        self.assertEqual(status, 400, doc)

    def test_the_shells_exit_is_told_and_stays_readable(self):
        ann = self.token("ann")
        s = self.open(ann)

        async def go():
            t = await Term.attach(self.node, ann, s["id"])
            await t.send("echo bye; exit 3\r")
            code = await t.until_closed()
            self.assertEqual(code, 1000)
            self.assertEqual((t.exit["code"], t.exit["reason"], t.exit["message"]),
                             (3, "exited", "exited with 3"))
            late = await Term.attach(self.node, ann, s["id"])
            self.assertEqual(await late.until_closed(), 1000)
            self.assertIn(b"bye\r\n", late.out)
            self.assertEqual(late.exit["code"], 3)
        run(go())
        doc = self.node.call("GET", "/v1/terminals/" + s["id"], ann)[2]
        self.assertEqual((doc["running"], doc["exit"]["code"]), (False, 3))

    def test_bad_frames_close_with_the_reason(self):
        ann = self.token("ann")
        s = self.open(ann)
        attach = json.dumps({"t": "attach", "token": ann, "session": s["id"], "offset": 0})
        cases = [
            (["not json"], 4000),
            ([json.dumps({"t": "in", "data": "x"})], 4001),
            ([json.dumps({"t": "attach", "token": "a.b.c", "session": s["id"]})], 4001),
            ([json.dumps({"t": "attach", "token": ann, "session": s["id"], "offset": 10 ** 12})], 4400),
            ([json.dumps({"t": "attach", "token": ann, "session": s["id"], "offset": -1})], 4000),
            ([attach, json.dumps({"t": "resize", "rows": 0, "cols": 80})], 4000),
            ([attach, json.dumps({"t": "in", "data": 5})], 4000),
            ([attach, json.dumps({"t": "launch"})], 4000),
            ([attach, attach], 4000),
        ]
        for frames, want in cases:
            code, reason = run(closed_with(self.node, frames))
            self.assertEqual(code, want, (frames, reason))
            self.assertTrue(reason, frames)
        doc = self.node.call("GET", "/v1/terminals/" + s["id"], ann)[2]
        self.assertTrue(doc["running"], "the session outlives every bad connection")

    def test_a_flood_drops_the_slow_reader_not_the_session_or_its_neighbour(self):
        self.node.stop()
        self.node = Kiln(*self.ARGS, "--sandbox-terminal-max-queue-bytes", str(256 << 10))
        ann, bob = self.token("ann"), self.token("bob")
        flood, quiet = self.open(ann), self.open(bob)

        async def go():
            t = await Term.attach(self.node, ann, flood["id"], small_buffer=True)
            await t.send("yes kiln-flood-line\r")
            # This client reads nothing more: the server queues for it up to its limit, then
            # closes it (1008, cut after a grace period); the session goes on and a reattach
            # says what the ring dropped.
            neighbour = await Term.attach(self.node, bob, quiet["id"])
            for i in range(20):
                await neighbour.send(f"echo n-$(({i}+1000))\r")
                await neighbour.read_until(f"n-{i + 1000}\r\n")
            # The server drops it: its session shows no client attached (this client, which
            # reads nothing, would notice only by its own ping timeout).
            deadline = time.monotonic() + 60
            attached = 1
            while attached and time.monotonic() < deadline:
                attached = self.node.call("GET", "/v1/terminals/" + flood["id"], ann)[2]["attached"]
                await asyncio.sleep(0.1)  # polled: the queue fills at the flood's pace
            self.assertEqual(attached, 0, "the slow reader is dropped")
            t.ws.transport.abort()
            # Reattach from the offset read, and end the flood with Ctrl-C. A reader slower
            # than the flood (a loaded machine, a sanitizer build) may be dropped again until
            # the Ctrl-C lands: it reattaches from where it got to, as any client does.
            offset, first, seen = t.next, True, b""
            deadline = time.monotonic() + WAIT
            while b"stopped-9" not in seen and time.monotonic() < deadline:
                back = await Term.attach(self.node, ann, flood["id"], offset)
                self.assertEqual(back.attached["t"], "attached")
                if first:
                    self.assertGreater(back.attached["lost"], 0, "the ring dropped some")
                    first = False
                await back.send("\x03")  # Ctrl-C ends the flood
                await back.send("echo stopped-$((3*3))\r")
                try:
                    await back.read_until("stopped-9", timeout=5)
                except (websockets.ConnectionClosed, asyncio.TimeoutError):
                    pass
                seen += back.out
                offset = back.next
                await back.ws.close()
            self.assertIn(b"stopped-9", seen)
            await neighbour.ws.close()
        run(go())
        doc = self.node.call("GET", "/v1/terminals/" + flood["id"], ann)[2]
        self.assertTrue(doc["running"])

    def test_an_idle_session_is_ended_with_the_reason(self):
        self.node.stop()
        self.node = Kiln(*self.ARGS, "--sandbox-session-idle-ms", "1000")
        ann = self.token("ann")
        s = self.open(ann)
        deadline = time.monotonic() + WAIT
        doc = {}
        while time.monotonic() < deadline:
            doc = self.node.call("GET", "/v1/terminals/" + s["id"], ann)[2]
            if not doc["running"]:
                break
            time.sleep(0.1)  # polled: the sweep runs every second
        self.assertFalse(doc["running"], doc)
        self.assertEqual(doc["exit"]["reason"], "destroyed")
        self.assertIn("no client was attached for 1 s", doc["exit"]["message"])

    def test_a_killed_server_leaves_nothing_running_after_its_restart(self):
        state_dir = tempfile.mkdtemp(prefix="kiln-e2e-sandbox-")
        os.chmod(state_dir, 0o711)  # sandboxes' roots pass through to their bundles
        self.addCleanup(shutil.rmtree, state_dir, True)
        self.node.stop()
        args = [*self.ARGS, "--sandbox-state-dir", state_dir]
        self.node = Kiln(*args)
        ann = self.token("ann")
        self.open(ann)
        self.open(self.token("bob"))
        data = self.node.data_dir
        state = os.path.join(state_dir, "runc")
        listed = lambda: subprocess.run([RUNC, "--root", state, "list", "-q"], capture_output=True,
                                        text=True, check=True).stdout.split()
        # Two sessions, and the warm pool's two prepared sandboxes (sandbox.warm_pool).
        deadline = time.monotonic() + WAIT
        while len(listed()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)  # (polling a condition: the pool refills in the background)
        before = set(listed())
        self.assertEqual(len(before), 4)
        self.node.signal(signal.SIGKILL)
        self.node.proc.wait(WAIT)
        self.node.stop()
        self.node = Kiln(*args, data_dir=data)
        # (The new run's pool may have prepared sandboxes of its own by now.)
        self.assertEqual(before & set(listed()), set(),
                         "the previous run's sandboxes were removed at start")
        self.assertEqual(before & set(os.listdir(os.path.join(state_dir, "bundles"))), set())
        self.assertEqual(self.node.call("GET", "/v1/terminals", self.token("ann"))[2], {"items": []})


@needs(RUNC and os.geteuid() == 0, "missing: runc and root (scripts/packages-test.txt)")
class TerminalsOnASandboxHost(unittest.TestCase):
    """`kiln sandboxd` owns the sessions; a `kiln serve` named to it in sandbox.daemon serves
    /v1/terminals by calling it and relays /v1/term to it. The gateway is only a view: it
    can die and come back without a session or a byte lost."""
    KEY = "e2e-sandbox-host-key-" + os.urandom(12).hex()
    HOST_ARGS = ["--sandbox-memory-bytes", str(128 << 20), "--sandbox-disk-bytes", str(64 << 20),
                 "--sandbox-sessions-per-user", "2", "--sandbox-shell", "/bin/sh"]

    def setUp(self):
        self.env = {"KILN_API_SERVICE_KEY": self.KEY}
        self.host = Kiln(*self.HOST_ARGS, role="sandboxd", env=self.env)
        self.addCleanup(self.host.stop)
        self.gw_data = tempfile.mkdtemp(prefix="kiln-e2e-gw-")
        self.addCleanup(shutil.rmtree, self.gw_data, True)
        self.gw = self.gateway()

    def tearDown(self):
        self.gw.stop()

    def gateway(self, key=None, daemon=None):
        return Kiln("--auth-dev-tokens", "true",
                    "--sandbox-daemon", daemon or f"{self.host.host}:{self.host.port}",
                    env={"KILN_API_SERVICE_KEY": key or self.KEY}, data_dir=self.gw_data)

    def token(self, user):
        status, _, doc = self.gw.call("POST", "/v1/dev/token", body={"user": {"id": user}})
        self.assertEqual(status, 201, doc)
        return doc["token"]

    def open(self, token):
        status, _, doc = self.gw.call("POST", "/v1/terminals", token)
        self.assertEqual(status, 201, doc)
        return doc

    def test_a_gateway_killed_and_restarted_loses_no_session_and_no_byte(self):
        ann = self.token("ann")
        s = self.open(ann)
        self.assertEqual(s["owner"], "ann")
        self.assertIn("on the sandbox host", "".join(self.gw.banner))

        async def before():
            t = await Term.attach(self.gw, ann, s["id"])
            self.assertEqual(t.attached["t"], "attached", t.attached)
            await t.send("echo $((6*7))\r")
            await t.read_until("42\r\n")
            read_to = t.next
            # Typed (the shell has echoed the keys), and the gateway killed before the output
            # came back through it (or while it did: the reattach shows it either way).
            await t.send("sleep 0.5; echo after-$((1+1))\r")
            await t.read_until("after-$((1+1))")
            self.gw.signal(signal.SIGKILL)
            self.gw.proc.wait(WAIT)
            return read_to
        read_to = run(before())
        self.gw.stop()
        self.gw = self.gateway()  # the same data directory: the same token secret

        async def after():
            back = await Term.attach(self.gw, ann, s["id"], read_to)
            self.assertEqual(back.attached["t"], "attached", back.attached)
            self.assertEqual((back.attached["from"], back.attached["lost"]), (read_to, 0))
            await back.read_until("after-2\r\n")
            self.assertNotIn(b"42\r\n", back.out, "nothing before the offset again")
            await back.send("exit 3\r")
            self.assertEqual(await back.until_closed(), 1000)
            self.assertEqual((back.exit["reason"], back.exit["code"]), ("exited", 3))
        run(after())
        status, _, doc = self.gw.call("GET", "/v1/terminals/" + s["id"], ann)
        self.assertEqual(status, 200, doc)
        self.assertEqual((doc["running"], doc["exit"]["code"]), (False, 3))

    def test_api_and_gateway_nodes_apart_and_a_client_moving_between_gateways(self):
        env = {"KILN_API_SERVICE_KEY": self.KEY, "KILN_AUTH_JWT_SECRET": "e2e-" + os.urandom(24).hex()}
        daemon = ["--sandbox-daemon", f"{self.host.host}:{self.host.port}"]
        api = Kiln("--auth-dev-tokens", "true", *daemon, role="api", env=env)
        self.addCleanup(api.stop)
        self.assertIn("/v1/term is a gateway's", "".join(api.banner), "kiln api serves no /v1/term")
        one = Kiln(*daemon, role="gateway", env=env)
        self.addCleanup(one.stop)
        two = Kiln(*daemon, role="gateway", env=env)
        self.addCleanup(two.stop)
        ann = api.call("POST", "/v1/dev/token", body={"user": {"id": "ann"}})[2]["token"]
        status, _, s = api.call("POST", "/v1/terminals", ann)
        self.assertEqual(status, 201, s)

        async def go():
            t = await Term.attach(one, ann, s["id"])
            await t.send("echo one-$((2+3))\r")
            await t.read_until("one-5\r\n")
            # The first gateway drains (SIGTERM): its clients are told to reattach (1012)...
            one.signal(signal.SIGTERM)
            self.assertEqual(await t.until_closed(), 1012)
            # ...and do, through the other, from the offset they read up to.
            back = await Term.attach(two, ann, s["id"], t.next)
            self.assertEqual((back.attached["from"], back.attached["lost"]), (t.next, 0))
            await back.send("echo two-$((3+4))\r")
            await back.read_until("two-7\r\n")
            self.assertNotIn(b"one-5\r\n", back.out)
            await back.ws.close()
        run(go())
        self.assertEqual(one.wait_exit(), 0)
        status, _, doc = api.call("GET", "/v1/terminals/" + s["id"], ann)
        self.assertEqual((status, doc["running"]), (200, True), doc)

    def test_a_command_through_the_host(self):
        ann = self.token("ann")
        status, _, s = self.gw.call("POST", "/v1/terminals", ann, {"command": ["echo", "via-host"]})
        self.assertEqual(status, 201, s)
        self.assertEqual(s["command"], ["echo", "via-host"])

        async def go():
            t = await Term.attach(self.gw, ann, s["id"])
            self.assertEqual(await t.until_closed(), 1000)
            return t
        t = run(go())
        self.assertIn(b"via-host", t.out)
        self.assertEqual(t.exit["code"], 0)
        status, _, doc = self.gw.call("POST", "/v1/terminals", ann, {"command": ["a\u0000"]})
        self.assertEqual(status, 400, doc)
        self.assertIn("NUL", doc["detail"])

    def test_sessions_spread_over_hosts_and_one_host_down_spares_the_others(self):
        other = Kiln(*self.HOST_ARGS, role="sandboxd", env=self.env)
        self.addCleanup(other.stop)
        hosts = [f"{h.host}:{h.port}" for h in (self.host, other)]
        self.gw.stop()
        self.gw = self.gateway(daemon=",".join(hosts))
        self.assertIn("on the sandbox hosts", "".join(self.gw.banner))
        users = [f"user{i}" for i in range(8)]
        opened = {}
        for u in users:
            tok = self.token(u)
            opened[u] = (tok, self.open(tok))
        on_host = []
        for h in (self.host, other):
            mine = [u for u in users
                    if h.call("GET", f"/internal/v1/users/{u}/terminals", self.KEY)[2]["items"]]
            on_host.append(mine)
        self.assertEqual(sorted(on_host[0] + on_host[1]), users, "each session on one host")
        self.assertTrue(on_host[0] and on_host[1], f"spread: {on_host}")
        # A user's second session goes to the same host as the first.
        u = on_host[1][0]
        second = self.open(opened[u][0])
        self.assertEqual(second["id"][:8], opened[u][1]["id"][:8])

        other.signal(signal.SIGKILL)  # its sessions are gone with it
        other.proc.wait(WAIT)
        survivor = on_host[0][0]
        tok, s = opened[survivor]

        async def go():
            t = await Term.attach(self.gw, tok, s["id"])
            await t.send("echo alive-$((1+1))\r")
            await t.read_until("alive-2\r\n")
            await t.ws.close()
        run(go())
        lost_tok, lost = opened[on_host[1][0]]
        status, _, doc = self.gw.call("GET", "/v1/terminals/" + lost["id"], lost_tok)
        self.assertEqual(status, 503, doc)
        self.assertIn("did not answer", doc["detail"])
        # Its user opens again: the host that answers takes it.
        status, _, again = self.gw.call("POST", "/v1/terminals", lost_tok)
        self.assertEqual(status, 201, again)
        self.assertEqual(again["id"][:8], s["id"][:8])
        status, _, listed = self.gw.call("GET", "/v1/terminals", lost_tok)
        self.assertEqual([x["id"] for x in listed["items"]], [again["id"]], "what answered")
        code, reason = run(closed_with(self.gw, [json.dumps(
            {"t": "attach", "token": lost_tok, "session": lost["id"], "offset": 0})]))
        self.assertEqual(code, 1013, reason)
        code, _ = run(closed_with(self.gw, [json.dumps(
            {"t": "attach", "token": lost_tok, "session": "00000000-tnothere", "offset": 0})]))
        self.assertEqual(code, 4004, "a host nobody names")

    def test_a_revoked_user_is_cut_from_a_relayed_terminal(self):
        ann = self.token("ann")
        s = self.open(ann)

        async def go():
            t = await Term.attach(self.gw, ann, s["id"])
            self.assertEqual(t.attached["t"], "attached", t.attached)
            self.assertEqual(t.attached["session"], s["id"], "the id the client knows")
            status, _, doc = self.gw.call("POST", "/v1/users/ann/revoke", self.KEY)
            self.assertEqual(status, 200, doc)
            return await t.until_closed()
        self.assertEqual(run(go()), 4001)
        status, _, doc = self.gw.call("GET", "/v1/terminals/" + s["id"], self.token("ann"))
        self.assertEqual((status, doc["running"]), (200, True), "the session goes on")

    def test_a_second_host_on_the_same_data_directory_is_refused_and_harms_nothing(self):
        ann = self.token("ann")
        s = self.open(ann)
        r = run_kiln("sandboxd", "--data-dir", self.host.data_dir, "--http-listen", "127.0.0.1:0",
                     env=self.env)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("in use by another kiln serve or kiln sandboxd", r.stderr)

        async def go():
            t = await Term.attach(self.gw, ann, s["id"])
            await t.send("echo still-$((2*2))\r")
            await t.read_until("still-4\r\n")
            await t.ws.close()
        run(go())

    def test_opens_and_closes_survive_a_host_restart_on_the_same_address(self):
        ann = self.token("ann")
        first = self.open(ann)
        self.assertEqual(self.gw.call("GET", "/v1/terminals", ann)[0], 200)  # a kept connection
        address, data = f"{self.host.host}:{self.host.port}", self.host.data_dir
        self.host.stop()
        self.host = Kiln(*self.HOST_ARGS, role="sandboxd", env=self.env, data_dir=data,
                         http_listen=address)
        # The kept connections are dead: an open or a close must not use one.
        again = self.open(ann)
        self.assertEqual(self.gw.call("DELETE", "/v1/terminals/" + first["id"], ann)[0], 404,
                         "the restart ended it")
        self.assertEqual(self.gw.call("DELETE", "/v1/terminals/" + again["id"], ann)[0], 204)
        self.assertEqual(self.gw.call("GET", "/v1/terminals", ann)[2], {"items": []})

    def test_a_host_that_never_answers_is_said_and_held_off(self):
        hung = socket.socket()
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # accepts (the kernel does), never answers
        self.addCleanup(hung.close)
        self.gw.stop()
        self.gw = Kiln("--auth-dev-tokens", "true", "--sandbox-daemon-timeout-ms", "500",
                       "--sandbox-daemon", f"127.0.0.1:{hung.getsockname()[1]}",
                       env={"KILN_API_SERVICE_KEY": self.KEY}, data_dir=self.gw_data)
        ann = self.token("ann")
        status, _, doc = self.gw.call("POST", "/v1/terminals", ann)
        self.assertEqual(status, 503, doc)
        self.assertIn("did not answer", doc["detail"])
        status, _, doc = self.gw.call("GET", "/v1/terminals", ann)
        self.assertEqual(status, 503, doc)
        self.assertIn("not a moment ago", doc["detail"], "held off, not waited for again")
        status, _, doc = self.gw.call("POST", "/v1/projects", ann, {"id": "p1", "name": "P"})
        self.assertEqual(status, 201, doc)  # the rest of the API is not held up

    def test_the_host_refuses_what_is_not_a_user_id(self):
        for user in ("a%20b", "a%2Fb", "%22", "x" * 129):
            status, _, doc = self.host.call("POST", f"/internal/v1/users/{user}/terminals", self.KEY)
            self.assertEqual((status, doc["error"]), (400, "invalid"), user)
        status, _, doc = self.gw.call("POST", "/v1/terminals", self.token(".."))
        self.assertEqual(status, 201, doc)  # a dot-segment user travels percent-encoded
        self.assertEqual(doc["owner"], "..")

    def test_bad_frames_through_the_relay_close_in_order_with_the_reason(self):
        ann = self.token("ann")
        s = self.open(ann)
        attach = json.dumps({"t": "attach", "token": ann, "session": s["id"], "offset": 0})
        for frames, want in (
                (["not json"], 4000),
                ([json.dumps({"t": "in", "data": "x"})], 4001),
                ([json.dumps({"t": "attach", "token": ann, "session": s["id"], "offset": 10 ** 12})], 4400),
                ([attach, json.dumps({"t": "resize", "rows": 0, "cols": 80})], 4000),
                ([attach, json.dumps({"t": "in", "data": 5})], 4000),
                ([attach, json.dumps({"t": "launch"})], 4000),
                ([attach, "not json"], 4000),
                ([attach, attach], 4000)):
            code, reason = run(closed_with(self.gw, frames))
            self.assertEqual(code, want, (frames, reason))
            self.assertTrue(reason, frames)

        async def in_order():  # the attach is answered before a bad frame after it closes
            ws = await websockets.connect(f"ws://{self.gw.host}:{self.gw.port}/v1/term",
                                          subprotocols=["kiln.term.v1"])
            await ws.send(attach)
            await ws.send(json.dumps({"t": "launch"}))
            first = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT)
            except websockets.ConnectionClosed as e:
                return first, e.code
        first, code = run(in_order())
        self.assertEqual((first["t"], code), ("attached", 4000))
        self.assertTrue(self.gw.call("GET", "/v1/terminals/" + s["id"], ann)[2]["running"])

    def test_owners_stay_apart_through_the_relay(self):
        ann, bob = self.token("ann"), self.token("bob")
        s = self.open(ann)
        self.assertEqual(self.gw.call("GET", "/v1/terminals/" + s["id"], bob)[0], 404)
        self.assertEqual(self.gw.call("GET", "/v1/terminals", bob)[2], {"items": []})
        self.assertEqual(self.gw.call("DELETE", "/v1/terminals/" + s["id"], bob)[0], 404)

        code, _ = run(closed_with(self.gw, [json.dumps(
            {"t": "attach", "token": bob, "session": s["id"], "offset": 0})]))
        self.assertEqual(code, 4004)
        self.open(ann)
        status, _, doc = self.gw.call("POST", "/v1/terminals", ann)  # the host's per-user quota
        self.assertEqual((status, doc["type"].rsplit("/", 1)[-1]), (409, "too-many-sessions"), doc)
        self.assertEqual(self.gw.call("DELETE", "/v1/terminals/" + s["id"], ann)[0], 204)
        self.assertEqual(self.gw.call("GET", "/v1/terminals/" + s["id"], ann)[0], 404)

    def test_the_host_takes_the_service_key_only(self):
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": "Bearer " + self.token("ann")}):
            status, _, doc = self.host.call("GET", "/internal/v1/users/ann/terminals",
                                            headers=headers)
            self.assertEqual(status, 401, doc)
        status, _, doc = self.host.call("GET", "/internal/v1/users/ann/terminals", self.KEY)
        self.assertEqual((status, doc), (200, {"items": []}))
        status, _, doc = self.host.call("POST", "/internal/v1/users/ann/terminals", self.KEY,
                                        body={"rows": 0})
        self.assertEqual((status, doc["error"]), (400, "invalid"), doc)

        async def upgrade(headers):
            try:
                ws = await websockets.connect(f"ws://{self.host.host}:{self.host.port}/internal/v1/term",
                                              subprotocols=["kiln.term.v1"], extra_headers=headers)
                await ws.close()
                return 101
            except websockets.InvalidStatusCode as e:
                return e.status_code
        self.assertEqual(run(upgrade({})), 401)
        self.assertEqual(run(upgrade({"Authorization": "Bearer wrong"})), 401)
        self.assertEqual(run(upgrade({"Authorization": "Bearer " + self.KEY})), 101)

        # A gateway with another key is told so, in words, and its clients are not left waiting.
        self.gw.stop()
        self.gw = self.gateway(key="another-key-that-the-host-does-not-know-at-all")
        status, _, doc = self.gw.call("POST", "/v1/terminals", self.token("ann"))
        self.assertEqual(status, 503, doc)
        self.assertIn("service key", doc["detail"])

    def test_an_unreachable_host_is_said_and_a_client_told_to_come_back(self):
        ann = self.token("ann")
        s = self.open(ann)
        self.host.signal(signal.SIGKILL)  # the host goes (and its sessions with it)
        self.host.proc.wait(WAIT)
        status, _, doc = self.gw.call("POST", "/v1/terminals", ann)
        self.assertEqual(status, 503, doc)
        self.assertIn("did not answer", doc["detail"])
        code, reason = run(closed_with(self.gw, [json.dumps(
            {"t": "attach", "token": ann, "session": s["id"], "offset": 0})]))
        self.assertEqual(code, 1013, reason)
        self.assertIn("sandbox host did not answer", reason)


IMAGE = os.environ.get("KILN_MICROVM_IMAGE") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "microvm-image")
QEMU = shutil.which("qemu-system-x86_64")


@needs(QEMU and os.path.exists(os.path.join(IMAGE, "vmlinuz")) and os.geteuid() == 0,
       "missing: qemu-system-x86 and the guest image (bash scripts/microvm-image.sh)")
class TerminalsInMicroVms(unittest.TestCase):
    """sandbox.driver microvm: each session a QEMU machine of its own (emulated here: seconds
    to boot, so the warm pool holds one booted ahead), on a sandbox host behind a gateway."""
    KEY = "e2e-sandbox-host-key-" + os.urandom(12).hex()

    def test_a_session_in_its_own_machine_through_a_gateway(self):
        env = {"KILN_API_SERVICE_KEY": self.KEY}
        host = Kiln("--sandbox-driver", "microvm", "--sandbox-microvm-image", os.path.abspath(IMAGE),
                    "--sandbox-warm-pool", "1", "--sandbox-memory-bytes", str(64 << 20),
                    "--sandbox-disk-bytes", str(16 << 20), "--sandbox-shell", "/bin/sh",
                    role="sandboxd", env=env)
        self.addCleanup(host.stop)
        self.assertIn("QEMU emulator version", "".join(host.banner))
        gw = Kiln("--auth-dev-tokens", "true", "--sandbox-daemon", f"{host.host}:{host.port}", env=env)
        self.addCleanup(gw.stop)
        ann = gw.call("POST", "/v1/dev/token", body={"user": {"id": "ann"}})[2]["token"]
        # The pool's machine boots (seconds, emulated); the open then takes it, booted.
        deadline = time.monotonic() + 120
        while metrics(host)["kiln_sandbox_warm_pool_ready"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)  # polling a condition, with a deadline
        self.assertEqual(metrics(host)["kiln_sandbox_warm_pool_ready"], 1)
        opened = time.monotonic()
        status, _, s = gw.call("POST", "/v1/terminals", ann, {"rows": 30, "cols": 100})
        self.assertEqual(status, 201, s)
        m = metrics(host)
        self.assertEqual((m["kiln_terminal_warm_starts_total"], m["kiln_terminal_cold_starts_total"]), (1, 0))
        self.assertLess(time.monotonic() - opened, 5, "a booted machine starts without a boot")

        async def go():
            t = await Term.attach(gw, ann, s["id"])
            self.assertEqual(t.attached["t"], "attached", t.attached)
            # Its own kernel (not the host's), its size, its user, its limits.
            await t.send("uname -r; stty size; id -un; cat /proc/meminfo | head -1; echo $((6*7))\r")
            await t.read_until("42\r\n", timeout=120)
            with open(os.path.join(IMAGE, "VERSION")) as f:  # "linux-image-<release> <hash>"
                guest = f.read().split()[0].removeprefix("linux-image-")
            self.assertIn(f" {guest}\r\n".encode(), t.out)  # after the prompt
            self.assertNotIn(os.uname().release.encode(), t.out)
            self.assertIn(b"30 100\r\n", t.out)
            self.assertIn(b"kiln\r\n", t.out)
            await t.ws.send(json.dumps({"t": "resize", "rows": 40, "cols": 120}))
            seen = b""
            deadline = time.monotonic() + WAIT
            while b"40 120" not in seen and time.monotonic() < deadline:
                await t.send("stty size\r")
                try:
                    await t.read_until("40 120", timeout=1)
                except asyncio.TimeoutError:
                    pass
                seen = t.out
            self.assertIn(b"40 120", seen)
            # A memory hog is killed in the machine; the shell goes on.
            await t.send("tail /dev/zero; echo hog-ended-$?\r")
            await t.read_until("hog-ended-137", timeout=180)  # 64 MiB filled, emulated
            await t.send("exit 3\r")
            self.assertEqual(await t.until_closed(), 1000)
            self.assertEqual((t.exit["reason"], t.exit["code"]), ("exited", 3))
        run(go())


class TerminalsOff(unittest.TestCase):
    def test_a_node_without_terminals_says_why(self):
        node = Kiln("--sandbox-enabled", "off", "--auth-dev-tokens", "true")
        self.addCleanup(node.stop)
        tok = node.call("POST", "/v1/dev/token", body={"user": {"id": "ann"}})[2]["token"]
        status, _, doc = node.call("POST", "/v1/terminals", tok)
        self.assertEqual(status, 503, doc)

        async def go():
            try:
                await websockets.connect(f"ws://{node.host}:{node.port}/v1/term", subprotocols=["kiln.term.v1"])
            except websockets.InvalidStatusCode as e:
                return e.status_code
        self.assertEqual(run(go()), 503)


if __name__ == "__main__":
    unittest.main()
