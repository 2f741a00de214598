"""One room under contention on the Redis engine (real processes, real Redis):

- 60 editors on 3 gateways, each sending a batch `set board.c<i> = n` (n counting up) and a
  cursor every 100 ms for 12 s: nothing is refused, every editor's last acknowledged value
  is the one a newcomer reads, and every client sees every seq once, in order;
- the same with one gateway killed (SIGKILL) in the middle: its editors resume on another
  node and the same holds;
- a join burst on two gateways logs no "history went backwards" warning (none happened).

Redis durability (a private redis-server, restarted with kill -9):
- AOF `appendfsync always`: nothing acknowledged is lost, the epoch is kept;
- AOF `everysec`: the same, or (a second lost) a new epoch that the clients are told of;
- no persistence: the room comes back from the database with a new epoch and every client
  is told (resync), never silently diverging.
"""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import uuid

import websockets

from collab_client import SECRET, token
from harness import WAIT, Kiln, helper_ports, module_access, needs

STANDALONE = (os.environ.get("KILN_TEST_REDIS", "") + " ").split(" ")[0]
EDITORS, SECONDS, PERIOD = 60, 12.0, 0.1
DRAIN_S = 180
ROOM = "p/board"


def gateway(address, prefix, *extra):
    return Kiln("--auth-jwt-secret", SECRET, "--http-access-log", "false", "--room-engine", "redis",
                "--redis-addresses", address, "--redis-prefix", prefix,
                "--room-presence-ttl-ms", "2000", *module_access().args(), *extra, role="gateway")


def url(node):
    return f"ws://{node.host}:{node.port}/v1/collab"


class Editor:
    """Sends `set board.c<idx> = n` every PERIOD without waiting for acks; checks the seqs it
    sees (its acks and its peers' ops) run one by one; resumes elsewhere if its node dies."""

    def __init__(self, idx, nodes):
        self.idx, self.nodes = idx, nodes
        self.node = idx % len(nodes)
        self.epoch, self.seq = None, 0
        self.sent = {}         # request id -> n
        self.unanswered = set()  # ids sent on the current connection, not yet answered
        self.acked = {}        # n -> seq
        self.applied = {}      # n -> seq, its own batches seen applied (acks, or on resume)
        self.errors = []
        self.nacks = []
        self.resumes = 0

    def see(self, seq):
        if seq != self.seq + 1:
            self.errors.append(f"seq {seq} after {self.seq}")
        self.seq = max(self.seq, seq)

    async def connect(self):
        for attempt in range(100):
            node = self.nodes[(self.node + attempt) % len(self.nodes)]
            if node.proc.poll() is not None:
                continue
            try:
                ws = await websockets.connect(url(node), subprotocols=["kiln.v1"], open_timeout=5)
                await ws.send(json.dumps({"t": "hello", "id": 1, "token": token(f"u{self.idx}", {"p": "editor"})}))
                msg = {"t": "join", "id": 2, "room": ROOM}
                if self.epoch:
                    msg["since"] = {"epoch": self.epoch, "seq": self.seq}
                await ws.send(json.dumps(msg))
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                    if m["t"] == "joined":
                        break
                if self.epoch:
                    if not m["recovered"] or m["epoch"] != self.epoch:
                        self.errors.append(f"resume not recovered: {m.get('epoch')} {m.get('seq')}")
                    for f in m.get("ops", []):
                        self.see(f["seq"])
                        if f["author"] == f"u{self.idx}":
                            for op in f["ops"]:
                                self.applied[op["value"]] = f["seq"]
                else:
                    self.seq = m["seq"]
                self.epoch = m["epoch"]
                self.ws = ws
                self.unanswered = set()  # what went to a dead node: in recovery, or gone
                self.node = self.nodes.index(node)
                return
            # A node killed during the handshake resets it (InvalidMessage, a subclass of
            # InvalidHandshake, as InvalidStatusCode is): try the next one.
            except (OSError, websockets.ConnectionClosed, asyncio.TimeoutError,
                    websockets.InvalidHandshake):
                await asyncio.sleep(0.05)
        raise AssertionError(f"editor {self.idx} could not connect")

    async def reader(self):
        while True:
            try:
                m = json.loads(await self.ws.recv())
            except websockets.ConnectionClosed:
                return
            if m["t"] in ("ack", "nack"):
                self.unanswered.discard(m.get("id"))
            if m["t"] == "ack":
                self.see(m["seq"])
                n = self.sent[m["id"]]
                self.acked[n] = m["seq"]
                self.applied[n] = m["seq"]
            elif m["t"] == "ops":
                self.see(m["seq"])
            elif m["t"] == "nack":
                self.nacks.append(m)

    async def run(self, stop_at):
        await self.connect()
        n = 0
        read = asyncio.create_task(self.reader())
        await asyncio.sleep(PERIOD * (self.idx % 10) / 10)  # spread the editors over the period
        while time.monotonic() < stop_at:
            n += 1
            self.sent[1000 + n] = n
            self.unanswered.add(1000 + n)
            try:
                await self.ws.send(json.dumps({"t": "eph", "room": ROOM, "kind": "cursor", "data": {"x": n}}))
                await self.ws.send(json.dumps({"t": "op", "id": 1000 + n, "room": ROOM, "ops": [
                    {"op": "set", "entity": "board", "key": f"c{self.idx}", "value": n}]}))
            except websockets.ConnectionClosed:
                await read
                self.resumes += 1
                await self.connect()
                read = asyncio.create_task(self.reader())
            await asyncio.sleep(PERIOD)
        # Wait for the answer to everything this connection sent: generous, because a slow
        # build (the sanitizers) takes far longer than the sending did to work off a backlog.
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and self.unanswered:
            await asyncio.sleep(0.05)
        await self.ws.close()
        await read


@needs(STANDALONE, "KILN_TEST_REDIS not set (run through ctest)")
class OneRoomUnderContention(unittest.TestCase):
    def scenario(self, chaos=None):
        prefix = "ct-" + uuid.uuid4().hex[:8]
        nodes = [gateway(STANDALONE, prefix, "--gateway-ops-per-second", "100") for _ in range(3)]
        for n in nodes:
            self.addCleanup(n.stop)
        module_access().grant(["setup"] + [f"u{i}" for i in range(EDITORS)], {"p": "editor"}, [ROOM])
        module_access().grant(["newcomer"], {"p": "viewer"})

        async def go():
            ws = await websockets.connect(url(nodes[0]), subprotocols=["kiln.v1"])
            await ws.send(json.dumps({"t": "hello", "id": 1, "token": token("setup", {"p": "editor"})}))
            await ws.send(json.dumps({"t": "join", "id": 2, "room": ROOM}))
            await ws.send(json.dumps({"t": "op", "id": 3, "room": ROOM, "ops": [
                {"op": "create", "entity": "board", "parent": "root"}]}))
            while json.loads(await asyncio.wait_for(ws.recv(), WAIT))["t"] != "ack":
                pass
            await ws.close()
            editors = [Editor(i, nodes) for i in range(EDITORS)]
            stop_at = time.monotonic() + SECONDS
            tasks = [asyncio.create_task(e.run(stop_at)) for e in editors]
            if chaos:
                await asyncio.sleep(SECONDS / 2)
                await chaos(nodes)
            await asyncio.wait_for(asyncio.gather(*tasks), SECONDS + DRAIN_S + 3 * WAIT)
            # A newcomer reads the snapshot on a surviving node.
            alive = next(n for n in nodes if n.proc.poll() is None)
            ws = await websockets.connect(url(alive), subprotocols=["kiln.v1"], max_size=None)
            await ws.send(json.dumps({"t": "hello", "id": 1, "token": token("newcomer", {"p": "viewer"})}))
            await ws.send(json.dumps({"t": "join", "id": 2, "room": ROOM}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if m["t"] == "joined":
                    break
            await ws.close()
            return editors, m
        editors, joined = asyncio.run(go())
        props = joined["snapshot"]["entities"]["board"]["props"]
        sent = sum(len(e.sent) for e in editors)
        acked = sum(len(e.acked) for e in editors)
        print(f"\n{sent} batches sent, {acked} acked, final seq {joined['seq']}, "
              f"{sum(e.resumes for e in editors)} resumes", flush=True)
        self.assertEqual([(e.idx, x) for e in editors for x in e.errors], [],
                         "every client sees every seq once, in order")
        for e in editors:
            self.assertTrue(e.acked, f"editor {e.idx} got acks")
            last_n = max(e.applied)
            self.assertEqual(props.get(f"c{e.idx}"), last_n,
                             f"editor {e.idx}: its last applied batch is what everyone reads")
            if not chaos:
                self.assertEqual(len(e.acked), len(e.sent), f"editor {e.idx}: every batch acked")
        if not chaos:
            self.assertEqual([m for e in editors for m in e.nacks], [], "nothing refused")
        return nodes

    def test_sixty_editors_on_three_gateways(self):
        nodes = self.scenario()
        for n in nodes:
            self.assertFalse([l for l in n.lines if "went backwards" in l])

    def test_sixty_editors_with_one_gateway_killed(self):
        async def kill(nodes):
            nodes[1].signal(signal.SIGKILL)
        self.scenario(kill)

    def test_a_join_burst_logs_no_epoch_reset(self):
        prefix = "jb-" + uuid.uuid4().hex[:8]
        nodes = [gateway(STANDALONE, prefix) for _ in range(2)]
        for n in nodes:
            self.addCleanup(n.stop)
        module_access().grant([f"u{i}" for i in range(1000)], {"p": "editor"},
                              [f"p/r{i}" for i in range(50)])

        async def client(i):
            room = f"p/r{i % 50}"
            ws = await websockets.connect(url(nodes[i % 2]), subprotocols=["kiln.v1"])
            await ws.send(json.dumps({"t": "hello", "id": 1, "token": token(f"u{i}", {"p": "editor"})}))
            await ws.send(json.dumps({"t": "join", "id": 2, "room": room}))
            await ws.send(json.dumps({"t": "op", "id": 3, "room": room, "ops": [
                {"op": "create", "entity": f"e{i}", "parent": "root"}]}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if m["t"] in ("ack", "nack") and m["id"] == 3:
                    break
            await ws.close()
            return m["t"]

        async def go():
            return await asyncio.gather(*(client(i) for i in range(1000)))
        answers = asyncio.run(go())
        self.assertEqual(answers.count("ack"), 1000)
        for n in nodes:
            self.assertEqual([l for l in n.lines if "went backwards" in l], [],
                             "no epoch reset is logged when none happened")
            _, _, body = n.request("GET", "/metrics")
            self.assertRegex(body.decode(), r"(?m)^kiln_room_epoch_resets_total 0$")


class PrivateRedis:
    """A redis-server of this test's own, restartable with kill -9 on the same directory."""

    def __init__(self, *config):
        self.dir = tempfile.mkdtemp(prefix="kiln-e2e-redis-")
        self.config = config
        for port in helper_ports():
            self.port = port
            if self._start():
                return
        raise AssertionError("redis-server found no free port")

    def _start(self):
        """Starts on self.port: True once ready, False if it could not listen there."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--protected-mode", "no", *self.config],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = []
        for line in self.proc.stdout:
            if "Ready to accept connections" in line:
                return True
            output.append(line)
        self.proc.wait(WAIT)
        self.proc.stdout.close()
        if any("Address already in use" in l for l in output):
            return False
        raise AssertionError("redis-server did not start:\n" + "".join(output))

    def start(self):
        """Starts again on the same port (the gateways know it)."""
        if not self._start():
            raise AssertionError(f"redis-server could not listen on {self.port} again")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)
        self.proc.stdout.close()

    def stop(self):
        if self.proc.poll() is None:
            self.kill9()
        shutil.rmtree(self.dir, ignore_errors=True)


@needs(shutil.which("redis-server"), "redis-server not installed")
class RedisRestart(unittest.TestCase):
    def edit_then_restart_redis(self, *config):
        redis = PrivateRedis(*config)
        self.addCleanup(redis.stop)
        g = gateway(f"127.0.0.1:{redis.port}", "rr", "--redis-command-timeout-ms", "500",
                    "--gateway-ops-per-second", "1000")
        self.addCleanup(g.stop)
        module_access().grant(["ann"], {"p": "editor"}, [ROOM])

        async def go():
            ws = await websockets.connect(url(g), subprotocols=["kiln.v1"])
            await ws.send(json.dumps({"t": "hello", "id": 1, "token": token("ann", {"p": "editor"})}))
            await ws.send(json.dumps({"t": "join", "id": 2, "room": ROOM}))
            joined = None
            last = 0
            for i in range(50):
                await ws.send(json.dumps({"t": "op", "id": 10 + i, "room": ROOM, "ops": [
                    {"op": "create", "entity": f"e{i}", "parent": "root"}]}))
            while last < 50:
                m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if m["t"] == "joined":
                    joined = m
                elif m["t"] == "ack":
                    last = m["seq"]
                elif m["t"] == "nack":
                    raise AssertionError(m)
            redis.kill9()  # right after the acks
            redis.start()
            # The session learns what happened: it is told to resynchronise (the room's
            # history may be gone), or, if nothing was lost, it simply goes on.
            told = False
            await ws.send(json.dumps({"t": "op", "id": 100, "room": ROOM, "ops": [
                {"op": "create", "entity": "after", "parent": "root"}]}))
            try:
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                    if m["t"] == "reconnect":
                        told = True
                    if m["t"] == "nack" and m["id"] == 100:
                        await asyncio.sleep(m.get("after_ms", 100) / 1000)
                        await ws.send(json.dumps({"t": "op", "id": 100, "room": ROOM, "ops": [
                            {"op": "create", "entity": "after", "parent": "root"}]}))
                    if m["t"] == "ack" and m["id"] == 100:
                        break
            except websockets.ConnectionClosed as e:
                # protocol.md: a room whose history may be gone tells its members `reconnect`
                # and closes with 1012; any other close is not being told. (A send can meet
                # the close first: frames received before it are still queued; read them.)
                self.assertEqual(e.code, 1012, f"closed with {e.code} {e.reason!r}")
                try:
                    while not told:
                        told = json.loads(await asyncio.wait_for(ws.recv(), WAIT))["t"] == "reconnect"
                except websockets.ConnectionClosed:
                    pass
                self.assertTrue(told, "closed 1012 without a reconnect frame first")
            await ws.close()
            ws = await websockets.connect(url(g), subprotocols=["kiln.v1"], max_size=None)
            await ws.send(json.dumps({"t": "hello", "id": 1, "token": token("ann", {"p": "editor"})}))
            await ws.send(json.dumps({"t": "join", "id": 2, "room": ROOM,
                                      "since": {"epoch": joined["epoch"], "seq": 50}}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if m["t"] == "joined":
                    break
            await ws.close()
            return joined, told, m
        return asyncio.run(go())

    def test_aof_always_loses_nothing_acknowledged(self):
        before, told, after = self.edit_then_restart_redis("--appendonly", "yes",
                                                           "--appendfsync", "always")
        self.assertEqual(after["epoch"], before["epoch"], "nothing lost: the same history")
        self.assertTrue(after["recovered"])
        self.assertGreaterEqual(after["seq"], 50)

    def test_aof_everysec_keeps_the_history_or_tells_the_clients(self):
        # Up to a second of acknowledged batches may go with Redis: then a new epoch and the
        # clients resynchronise; never the same epoch with fewer batches.
        before, told, after = self.edit_then_restart_redis("--appendonly", "yes",
                                                           "--appendfsync", "everysec")
        if after["epoch"] == before["epoch"]:
            self.assertTrue(after["recovered"])
            self.assertGreaterEqual(after["seq"], 50)
        else:
            self.assertTrue(told)
            self.assertFalse(after["recovered"])

    def test_no_persistence_starts_a_new_epoch_and_tells_the_clients(self):
        before, told, after = self.edit_then_restart_redis("--appendonly", "no")
        self.assertTrue(told, "the connected client was told to resynchronise")
        self.assertNotEqual(after["epoch"], before["epoch"], "a new epoch: clients resync")
        self.assertFalse(after["recovered"])


if __name__ == "__main__":
    unittest.main()
