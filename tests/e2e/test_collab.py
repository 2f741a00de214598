"""Protocol conformance for /v1/collab (kiln.v1) against the real `kiln serve`.

`CollabSuite` holds the tests; a subclass says where the gateways are. `MemoryEngine` runs
them on one `kiln serve`; the Redis engine will run the same suite against several
gateways, with clients spread across nodes (`self.url(i)` picks node i mod N).
"""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import websockets
from prometheus_client.parser import text_string_to_metric_families

from collab_client import (SECRET, Client, Directory, RawWebSocket, attach, b64url, directory_for, run,
                           token)
from harness import WAIT, Kiln

ROLES = {"p": "editor", "other": "editor"}


def metric_samples(node, family):
    """{labels-tuple or None: value} of one counter family on a node's /metrics."""
    _, _, body = node.request("GET", "/metrics")
    out = {}
    for f in text_string_to_metric_families(body.decode()):
        if f.name == family:
            for smp in f.samples:
                if smp.name.endswith("_total"):
                    out[tuple(sorted(smp.labels.values())) or None] = smp.value
    return out


def trips(node):
    return {k[0]: v for k, v in metric_samples(node, "kiln_gateway_limit_trips").items()}


def delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
            if after.get(k, 0) != before.get(k, 0)}


def wait_for_metric(node, name, value):
    """Waits until an unlabelled gauge or counter on /metrics reads `value`."""
    deadline = time.monotonic() + WAIT
    while True:
        body = node.request("GET", "/metrics")[2].decode()
        m = re.search(r"^" + re.escape(name) + r" (\S+)$", body, re.M)
        if m and float(m.group(1)) == value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never reached {value} (last: {m and m.group(1)})")
        time.sleep(0.05)


def read_frames(sock, deadline):
    """Reads WebSocket frames (server to client: unmasked) until the TCP connection ends or
    a close frame; returns (opcodes seen in order, close code or None, when it ended)."""
    buf, seen = b"", []
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    while True:
        while True:
            if len(buf) >= 2:
                n, off = buf[1] & 0x7F, 2
                if n == 126 and len(buf) >= 4:
                    n, off = struct.unpack("!H", buf[2:4])[0], 4
                elif n == 127 and len(buf) >= 10:
                    n, off = struct.unpack("!Q", buf[2:10])[0], 10
                if n < 126 and len(buf) >= off + n:
                    opcode, payload, buf = buf[0] & 0x0F, buf[off:off + n], buf[off + n:]
                    seen.append(opcode)
                    if opcode == 0x8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        return seen, code, time.monotonic()
                    continue
            break
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            chunk = b""
        if not chunk:
            return seen, None, time.monotonic()
        buf += chunk


class CollabSuite:
    # Subclasses provide: start(*args) -> list of Kiln nodes sharing one room engine.

    @classmethod
    def setUpClass(cls):
        cls.nodes = cls.start()

    @classmethod
    def tearDownClass(cls):
        for n in cls.nodes:
            n.stop()

    def url(self, i=0, nodes=None):
        n = (nodes or self.nodes)[i % len(nodes or self.nodes)]
        return f"ws://{n.host}:{n.port}/v1/collab"

    def fresh(self, *args):
        nodes = self.start(*args)
        self.addCleanup(lambda: [n.stop() for n in nodes])
        return nodes

    room_counter = 0

    def room(self):
        """A new room whose scene exists."""
        type(self).room_counter += 1
        room = f"p/s{self.room_counter}-{int(time.time() * 1000) % 100000}"
        directory_for(self.url()).scene(room)
        return room

    # --- hello and identity -------------------------------------------------------------

    def test_hello_gets_welcome(self):
        async def go():
            c = await Client.connect(self.url(), "ann", ROLES, name="Ann")
            w = c.welcome
            self.assertEqual(w["user"], {"id": "ann", "name": "Ann"})
            self.assertRegex(w["session"], r"^[0-9a-f]{16}$")
            self.assertTrue(w["node"])
            self.assertGreater(w["heartbeat_ms"], 0)
            await c.close()
        run(go())

    def test_first_frame_must_be_hello(self):
        async def go():
            c = await Client.connect(self.url())
            await c.send({"t": "ping", "id": 1})
            self.assertEqual((await c.closed())[0], 4001)
        run(go())

    def test_bad_tokens_close_4001(self):
        bad = {
            "wrong secret": token("u", ROLES, secret="not-the-secret-0123456789abcdef012345"),
            "expired": token("u", ROLES, exp_in=-3600),
            "alg none": token("u", ROLES, alg="none"),
            "alg RS256 header": token("u", ROLES, header={"alg": "RS256"}),
            "garbage": "not.a.token",
        }

        async def go():
            for why, tok in bad.items():
                c = await Client.connect(self.url())
                await c.send({"t": "hello", "id": 1, "token": tok})
                code, reason = await c.closed()
                self.assertEqual(code, 4001, why)
                self.assertTrue(reason, why)
        run(go())

    def test_hello_timeout_closes_4001(self):
        nodes = self.fresh("--gateway-hello-timeout-ms", "300")

        async def go():
            c = await Client.connect(self.url(0, nodes))
            self.assertEqual((await c.closed())[0], 4001)
        run(go())

    def test_ping_pong(self):
        async def go():
            c = await Client.connect(self.url(), "ann", ROLES)
            r = await c.request({"t": "ping"})
            self.assertEqual(r["t"], "pong")
            await c.close()
        run(go())

    # --- join, permissions -----------------------------------------------------------------

    def test_join_a_project_without_a_role_is_forbidden(self):
        async def go():
            c = await Client.connect(self.url(), "ann", {"p": "editor"})
            r = await c.join("secret/scene")  # the project and scene exist; ann is no member
            self.assertEqual((r["t"], r["code"], r["room"]), ("nack", "forbidden", "secret/scene"))
            r = await c.join("no-slash", create=False)
            self.assertEqual((r["t"], r["code"]), ("nack", "invalid"))
            await c.close()
        run(go())

    def test_the_tokens_roles_claim_grants_nothing(self):
        # A token signed with the right secret that claims a role the database does not
        # give: the claim is ignored (tokens prove identity; access is live membership).
        async def go():
            directory_for(self.url()).scene("secret/scene")
            c = await Client.connect(self.url())
            w = await c.request({"t": "hello", "token": token("mallory", {"secret": "owner"})})
            self.assertEqual(w["t"], "welcome")
            r = await c.join("secret/scene", create=False)
            self.assertEqual((r["t"], r["code"]), ("nack", "forbidden"))
        run(go())

    def test_a_room_is_a_scene_of_its_project(self):
        async def go():
            c = await Client.connect(self.url(), "ann", {"p": "editor"})
            r = await c.join("p/no-such-scene", create=False)
            self.assertEqual((r["t"], r["code"]), ("nack", "not_found"), r)
            self.assertIn("POST /v1/projects/p/scenes", r["message"])
            # Created now: the same connection joins it at once.
            await asyncio.to_thread(directory_for(self.url()).scene, "p/no-such-scene")
            self.assertEqual((await c.join("p/no-such-scene", create=False))["t"], "joined")
        run(go())

    def test_viewers_may_watch_but_not_edit(self):
        room = self.room()

        async def go():
            v = await Client.connect(self.url(0), "vic", {"p": "viewer"})
            self.assertEqual((await v.join(room))["t"], "joined")
            r = await v.op(room, {"op": "create", "entity": "a", "parent": "root"})
            self.assertEqual((r["t"], r["code"]), ("nack", "forbidden"))
            e = await Client.connect(self.url(1), "ed", ROLES)
            await e.join(room)
            await v.send({"t": "eph", "room": room, "kind": "cursor", "data": {"x": 1}})
            got = await e.next("eph")
            self.assertEqual(got["batch"][0]["user"], "vic")
            await v.close()
            await e.close()
        run(go())

    def test_first_join_is_an_empty_snapshot(self):
        async def go():
            c = await Client.connect(self.url(), "ann", ROLES)
            r = await c.join(self.room())
            self.assertEqual(r["seq"], 0)
            self.assertFalse(r["recovered"])
            self.assertEqual(r["snapshot"], {"entities": {}})
            self.assertEqual(r["presence"], [])
            self.assertTrue(r["epoch"])
            await c.close()
        run(go())

    def test_pipelined_frames_are_taken_in_the_order_sent(self):
        # The README's browser snippet: hello, join and op sent back to back without waiting,
        # on a fresh room (still loading when the op arrives), from a plain client.
        async def go():
            room = self.room()
            await asyncio.to_thread(directory_for(self.url()).grant, "ann", ROLES)
            ws = await websockets.connect(self.url(), subprotocols=["kiln.v1"])
            Client(ws)  # closed by run()
            await ws.send(json.dumps({"t": "hello", "id": 1, "token": token("ann", ROLES)}))
            await ws.send(json.dumps({"t": "join", "id": 2, "room": room}))
            for i in range(5):
                await ws.send(json.dumps({"t": "op", "id": 3 + i, "room": room, "ops": [
                    {"op": "create", "entity": f"cube{i}", "parent": "root"}]}))
            await ws.send(json.dumps({"t": "ping", "id": 9}))
            got = []
            while sum(m["t"] in ("ack", "nack") for m in got) < 5 or "pong" not in [m["t"] for m in got]:
                m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if m["t"] != "presence":
                    got.append(m)
            # The pong may overtake acks (an ack waits until its batch is durable); nothing
            # overtakes the join's answer, and the acks keep the order sent.
            types = [m["t"] for m in got]
            self.assertEqual(types[:2], ["welcome", "joined"], got)
            acks = [m for m in got if m["t"] in ("ack", "nack")]
            self.assertEqual([(m["t"], m["id"], m.get("seq")) for m in acks],
                             [("ack", 3 + i, 1 + i) for i in range(5)], got)
        run(go())

    def test_op_before_join_and_after_leave_is_refused(self):
        room = self.room()

        async def go():
            c = await Client.connect(self.url(), "ann", ROLES)
            r = await c.op(room, {"op": "create", "entity": "a", "parent": "root"})
            self.assertEqual((r["t"], r["code"]), ("nack", "forbidden"))
            await c.join(room)
            r = await c.request({"t": "leave", "room": room})
            self.assertEqual((r["t"], r["room"]), ("left", room))
            r = await c.op(room, {"op": "create", "entity": "a", "parent": "root"})
            self.assertEqual(r["code"], "forbidden")
            r = await c.request({"t": "leave", "room": room})
            self.assertEqual((r["t"], r["code"]), ("nack", "invalid"))
            await c.close()
        run(go())

    # --- durable ops -------------------------------------------------------------------------

    def test_ack_to_author_ops_to_peers(self):
        room = self.room()

        async def go():
            a = await Client.connect(self.url(0), "ann", ROLES)
            b = await Client.connect(self.url(1), "bob", ROLES)
            await a.join(room)
            await b.join(room)
            r = await a.op(room, {"op": "create", "entity": "cube", "parent": "root",
                                  "props": {"color": "red"}})
            self.assertEqual((r["t"], r["seq"], r["room"]), ("ack", 1, room))
            got = await b.next("ops")
            self.assertEqual((got["seq"], got["author"], got["room"]), (1, "ann", room))
            self.assertEqual(got["ops"][0]["entity"], "cube")
            self.assertEqual(got["ops"][0]["props"], {"color": "red"})
            await a.close()
            await b.close()
        run(go())

    def test_concurrent_editors_see_one_order_without_gaps_or_duplicates(self):
        room = self.room()
        per_client, clients = 25, 4

        async def go():
            cs = [await Client.connect(self.url(i), f"u{i}", ROLES) for i in range(clients)]
            for c in cs:
                await c.join(room)

            async def edit(i, c):
                seqs = []
                for k in range(per_client):
                    r = await c.op(room, {"op": "create", "entity": f"e{i}-{k}", "parent": "root"})
                    self.assertEqual(r["t"], "ack", r)
                    seqs.append(r["seq"])
                return seqs

            acked = await asyncio.gather(*(edit(i, c) for i, c in enumerate(cs)))
            total = per_client * clients
            all_seqs = sorted(s for seqs in acked for s in seqs)
            self.assertEqual(all_seqs, list(range(1, total + 1)))
            # Each client: its acks plus the ops frames it received cover 1..total exactly
            # once, and the ops frames arrive in increasing seq order.
            for i, c in enumerate(cs):
                seen = list(acked[i])
                ops_seqs = []
                while len(seen) + len(ops_seqs) < total:
                    m = await c.next("ops")
                    ops_seqs.append(m["seq"])
                self.assertEqual(ops_seqs, sorted(ops_seqs))
                self.assertEqual(sorted(seen + ops_seqs), list(range(1, total + 1)))
            for c in cs:
                await c.close()
        run(go())

    def test_every_nack_code(self):
        room = self.room()

        async def go():
            c = await Client.connect(self.url(), "ann", ROLES)
            await c.join(room)
            await c.op(room, {"op": "create", "entity": "a", "parent": "root"},
                       {"op": "create", "entity": "b", "parent": "a"})
            cases = {
                "exists": {"op": "create", "entity": "a", "parent": "root"},
                "not_found": {"op": "set", "entity": "ghost", "key": "k", "value": 1},
                "cycle": {"op": "move", "entity": "a", "parent": "b"},
                "invalid": {"op": "create", "entity": "bad id!", "parent": "root"},
            }
            for code, op in cases.items():
                r = await c.op(room, op)
                self.assertEqual((r["t"], r["code"]), ("nack", code), op)
                self.assertTrue(r["message"])
            r = await c.request({"t": "op", "room": room, "ops": "nope"})
            self.assertEqual(r["code"], "invalid")
            r = await c.op(room, *[{"op": "delete", "entity": "x"}] * 1001)
            self.assertEqual(r["code"], "too_large")
            await c.close()
        run(go())

    def test_rate_limited_batches_are_nacked(self):
        nodes = self.fresh("--gateway-ops-per-second", "1")
        room = self.room()

        async def go():
            c = await Client.connect(self.url(0, nodes), "ann", ROLES)
            await c.join(room)
            codes = []
            for k in range(4):  # burst is 2: at least the later ones are refused
                r = await c.op(room, {"op": "create", "entity": f"e{k}", "parent": "root"})
                codes.append(r.get("code", "ack"))
            self.assertIn("rate_limited", codes)
            self.assertEqual(codes[:2], ["ack", "ack"], "the burst is twice the rate")
            await c.close()
        run(go())

    def test_a_refused_batch_leaves_no_trace(self):
        room = self.room()

        async def go():
            a = await Client.connect(self.url(), "ann", ROLES)
            await a.join(room)
            await a.op(room, {"op": "create", "entity": "a", "parent": "root", "props": {"k": 1}})
            r = await a.op(room, {"op": "set", "entity": "a", "key": "k", "value": 2},
                           {"op": "create", "entity": "new", "parent": "root"},
                           {"op": "delete", "entity": "ghost"})
            self.assertEqual(r["code"], "not_found")
            b = await Client.connect(self.url(1), "bob", ROLES)
            j = await b.join(room)
            self.assertEqual(j["seq"], 1)
            self.assertEqual(j["snapshot"]["entities"],
                             {"a": {"parent": "root", "index": "", "props": {"k": 1}}})
            await a.close()
            await b.close()
        run(go())

    # --- resume --------------------------------------------------------------------------------

    def test_resume_recovers_exactly_the_missed_ops(self):
        room = self.room()

        async def go():
            a = await Client.connect(self.url(0), "ann", ROLES)
            j = await a.join(room)
            for k in range(5):
                await a.op(room, {"op": "create", "entity": f"e{k}", "parent": "root"})
            b = await Client.connect(self.url(1), "bob", ROLES)
            r = await b.join(room, since={"epoch": j["epoch"], "seq": 2})
            self.assertTrue(r["recovered"])
            self.assertEqual(r["seq"], 5)
            self.assertNotIn("snapshot", r)
            self.assertEqual([o["seq"] for o in r["ops"]], [3, 4, 5])
            self.assertEqual([o["ops"][0]["entity"] for o in r["ops"]], ["e2", "e3", "e4"])
            # Live ops continue right after the recovered ones.
            await a.op(room, {"op": "create", "entity": "e5", "parent": "root"})
            self.assertEqual((await b.next("ops"))["seq"], 6)
            for since in ({"epoch": "another-epoch", "seq": 2}, {"epoch": j["epoch"], "seq": 99}):
                c = await Client.connect(self.url(2), "cy", ROLES)
                r = await c.join(room, since=since)
                self.assertFalse(r["recovered"], since)
                self.assertEqual(len(r["snapshot"]["entities"]), 6)
                self.assertEqual(r["seq"], 6)
                await c.close()
            r = await (await Client.connect(self.url(), "dee", ROLES)).join(room, since={"epoch": 5})
            self.assertEqual((r["t"], r["code"]), ("nack", "invalid"))
            await a.close()
            await b.close()
        run(go())

    def test_resume_past_the_retention_window_gets_a_snapshot(self):
        nodes = self.fresh("--room-log-retention", "3")
        room = self.room()

        async def go():
            a = await Client.connect(self.url(0, nodes), "ann", ROLES)
            j = await a.join(room)
            for k in range(6):
                await a.op(room, {"op": "create", "entity": f"e{k}", "parent": "root"})
            b = await Client.connect(self.url(1, nodes), "bob", ROLES)
            r = await b.join(room, since={"epoch": j["epoch"], "seq": 1})
            self.assertFalse(r["recovered"])
            self.assertEqual(len(r["snapshot"]["entities"]), 6)
            r2 = await (await Client.connect(self.url(0, nodes), "cy", ROLES)).join(
                room, since={"epoch": j["epoch"], "seq": 3})
            self.assertTrue(r2["recovered"])
            self.assertEqual([o["seq"] for o in r2["ops"]], [4, 5, 6])
        run(go())

    # --- presence and ephemeral --------------------------------------------------------------

    def test_presence_joined_and_left(self):
        room = self.room()

        async def go():
            a = await Client.connect(self.url(0), "ann", ROLES, name="Ann")
            await a.join(room)
            b = await Client.connect(self.url(1), "bob", ROLES, name="Bob")
            r = await b.join(room)
            self.assertEqual([(p["user"], p["name"]) for p in r["presence"]], [("ann", "Ann")])
            p = await a.next("presence")
            self.assertEqual(p["joined"], [{"user": "bob", "session": b.welcome["session"], "name": "Bob"}])
            await b.close()
            p = await a.next("presence", lambda m: m["left"])
            self.assertEqual(p["left"], [b.welcome["session"]])
            await a.close()
        run(go())

    def test_ephemeral_updates_are_coalesced_per_tick(self):
        nodes = self.fresh("--gateway-tick-ms", "1000")
        room = self.room()

        async def go():
            a = await Client.connect(self.url(0, nodes), "ann", ROLES)
            b = await Client.connect(self.url(1, nodes), "bob", ROLES)
            # A witness on the sender's own node: the tick that sends it the batch would send
            # an echo to the sender too.
            w = await Client.connect(self.url(0, nodes), "wes", ROLES)
            await a.join(room)
            await b.join(room)
            await w.join(room)
            for x in range(30):  # sent well within one 1 s tick
                await a.send({"t": "eph", "room": room, "kind": "cursor", "data": {"x": x}})
            await a.send({"t": "eph", "room": room, "kind": "selection", "data": {"ids": ["q"]}})
            batches, latest = 0, {}
            while latest.get("cursor") != {"x": 29} or "selection" not in latest:
                m = await b.next("eph")
                batches += 1
                keys = [(e["session"], e["kind"]) for e in m["batch"]]
                self.assertEqual(len(keys), len(set(keys)), "one entry per (session, kind)")
                for e in m["batch"]:
                    self.assertEqual(e["user"], "ann")
                    latest[e["kind"]] = e["data"]
            self.assertLessEqual(batches, 2, "31 updates in under a tick: at most two batches")
            # Not echoed to the sender: once the witness on a's node has the last update, a
            # round trip of a's (its ack queued after any batch of that tick) reads a's socket
            # past where an echo would be.
            seen = {}
            while seen.get("cursor") != {"x": 29} or "selection" not in seen:
                for e in (await w.next("eph"))["batch"]:
                    seen[e["kind"]] = e["data"]
            ack = await a.op(room, {"op": "create", "entity": "after-eph", "parent": "root"})
            self.assertEqual(ack["t"], "ack", ack)
            self.assertFalse([m for m in a.inbox if m["t"] == "eph"], "no eph echoed to its sender")
            c = await Client.connect(self.url(0, nodes), "cy", ROLES)
            r = await c.join(room)
            ann = [p for p in r["presence"] if p["user"] == "ann"][0]
            self.assertEqual(ann["eph"], {"cursor": {"x": 29}, "selection": {"ids": ["q"]}})
        run(go())

    def test_eph_limits(self):
        room = self.room()

        async def go():
            a = await Client.connect(self.url(), "ann", ROLES)
            await a.send({"t": "eph", "room": room, "kind": "cursor", "data": {}})
            self.assertEqual((await a.next("error"))["code"], "forbidden")
            await a.join(room)
            await a.send({"t": "eph", "room": room, "kind": "k" * 33, "data": {}})
            self.assertEqual((await a.next("error"))["code"], "invalid")
            await a.send({"t": "eph", "room": room, "kind": "cursor", "data": {"s": "x" * 5000}})
            self.assertEqual((await a.next("error"))["code"], "too_large")
            await a.close()
        run(go())

    def test_a_silent_peer_is_dropped_after_two_heartbeats(self):
        nodes = self.fresh("--gateway-heartbeat-ms", "2000")
        n = nodes[0]

        async def go():
            # A well-behaved client (the library answers pings) connected at the same time.
            alive = await Client.connect(self.url(0, nodes), "ann", ROLES)
            self.assertEqual(alive.welcome["heartbeat_ms"], 2000)
            raw = RawWebSocket(n.host, n.port)
            self.assertEqual(raw.status, 101)
            raw.send_frame(0x1, json.dumps({"t": "hello", "id": 1, "token": token("mute", ROLES)}).encode())
            silent_from = time.monotonic()  # the last frame the mute peer ever sends
            seen, code, ended = await asyncio.to_thread(read_frames, raw.sock, silent_from + WAIT)
            raw.close()
            silent_for = ended - silent_from
            self.assertIn(0x9, seen, "the server pinged the silent peer")
            self.assertEqual(seen[0], 0x1, "the welcome came first")
            # Two heartbeats are 4 s; the bounds leave a busy machine room, not a third beat.
            self.assertGreaterEqual(silent_for, 3.0, "dropped before two heartbeats of silence")
            self.assertLess(silent_for, 6.0, "not dropped after two heartbeats of silence")
            # The client that answers pings was not dropped: it was silent as long, but ponged.
            self.assertEqual((await alive.request({"t": "ping"}))["t"], "pong")
        run(go())

    def test_eph_over_the_rate_is_dropped_and_counted(self):
        nodes = self.fresh("--gateway-eph-per-second", "5")  # burst 10
        room = self.room()

        async def go():
            a = await Client.connect(self.url(0, nodes), "ann", ROLES)
            b = await Client.connect(self.url(0, nodes), "bob", ROLES)
            await a.join(room)
            await b.join(room)
            before = trips(nodes[0])
            dropped_before = metric_samples(nodes[0], "kiln_gateway_eph_dropped").get(None, 0)
            t0 = time.monotonic()
            for x in range(50):
                await a.send({"t": "eph", "room": room, "kind": "cursor", "data": {"x": x}})
            await a.request({"t": "ping"})  # frames are taken in order: the flood was handled
            elapsed = time.monotonic() - t0
            d = delta(before, trips(nodes[0]))
            dropped = metric_samples(nodes[0], "kiln_gateway_eph_dropped").get(None, 0) - dropped_before
            self.assertEqual(d.get("eph_per_second", 0), dropped, "each drop is a trip")
            allowed = 10 + 5 * elapsed + 1  # the burst plus what refilled while sending
            self.assertGreaterEqual(dropped, 50 - allowed)
            self.assertLessEqual(dropped, 50 - 10)
            # The peer sees accepted updates only, then (once the bucket refilled) a marker.
            k = 0
            while True:
                await a.send({"t": "eph", "room": room, "kind": "cursor", "data": {"x": f"end{k}"}})
                k += 1
                try:
                    await asyncio.wait_for(b.next("eph", lambda m: any(
                        str(e["data"]["x"]).startswith("end") for e in m["batch"])), 0.3)
                    break
                except asyncio.TimeoutError:
                    self.assertLess(k, 100, "no eph got through after the flood")
            xs = [e["data"]["x"] for f in b.inbox if f["t"] == "eph" for e in f["batch"]
                  if isinstance(e["data"]["x"], int)]
            self.assertTrue(xs, "some of the flood got through")
            # Which updates were accepted depends on when tokens refilled; how many does not:
            # the peer cannot have seen more distinct updates than were accepted.
            self.assertLessEqual(len(set(xs)), 50 - dropped, "a dropped update reached the peer")
        run(go())

    def test_joining_a_room_twice_is_invalid(self):
        room = self.room()

        async def go():
            c = await Client.connect(self.url(), "ann", ROLES)
            self.assertEqual((await c.join(room))["t"], "joined")
            r = await c.join(room)
            self.assertEqual((r["t"], r["code"]), ("nack", "invalid"), r)
            # Still a member once: an op is acked, a leave leaves, a second leave is refused.
            self.assertEqual((await c.op(room, {"op": "create", "entity": "a", "parent": "root"}))["t"], "ack")
            self.assertEqual((await c.request({"t": "leave", "room": room}))["t"], "left")
            r = await c.op(room, {"op": "create", "entity": "b", "parent": "root"})
            self.assertEqual((r["t"], r["code"]), ("nack", "forbidden"))
        run(go())

    def test_a_new_role_takes_effect_on_an_open_session(self):
        room = self.room()
        user = f"riser{self.room_counter}"
        new_project = f"later{self.room_counter}-{int(time.time() * 1000) % 100000}"

        async def go():
            c = await Client.connect(self.url(), user, {"p": "viewer"})
            self.assertEqual((await c.join(room))["t"], "joined")
            r = await c.op(room, {"op": "create", "entity": "a", "parent": "root"})
            self.assertEqual((r["t"], r["code"]), ("nack", "forbidden"))
            # Upgraded while connected: told, and the same session may edit.
            await asyncio.to_thread(c.directory.grant, user, {"p": "editor"})
            n = await asyncio.wait_for(c.next("notify", lambda m: m.get("project") == "p"), WAIT)
            self.assertEqual((n["kind"], n["project"], n["role"]), ("access", "p", "editor"))
            self.assertEqual((await c.op(room, {"op": "create", "entity": "a", "parent": "root"}))["t"], "ack")
            # A project created (and the user added) after the session opened: joined at once.
            await asyncio.to_thread(c.directory.grant, user, {new_project: "editor"})
            await asyncio.to_thread(c.directory.scene, f"{new_project}/main")
            self.assertEqual((await c.join(f"{new_project}/main", create=False))["t"], "joined")
        run(go())

    def test_limits_that_nack_are_counted(self):
        nodes = self.fresh("--gateway-max-rooms-per-connection", "2", "--room-max-members", "1",
                           "--room-max-entities", "2", "--gateway-max-ops-per-batch", "3",
                           "--gateway-ops-per-second", "1")
        rooms = [self.room() for _ in range(3)]
        create = lambda e: {"op": "create", "entity": e, "parent": "root"}

        async def go():
            node = nodes[0]
            c = await Client.connect(self.url(0, nodes), "ann", ROLES)
            before = trips(node)
            for r in rooms[:2]:
                self.assertEqual((await c.join(r))["t"], "joined")
            r = await c.join(rooms[2])
            self.assertEqual((r["t"], r["code"]), ("nack", "too_large"), r)
            self.assertEqual(delta(before, trips(node)), {"rooms_per_connection": 1})

            before = trips(node)
            bob = await Client.connect(self.url(0, nodes), "bob", ROLES)
            r = await bob.join(rooms[0])
            self.assertEqual((r["t"], r["code"]), ("nack", "too_large"), r)
            self.assertEqual(delta(before, trips(node)), {"members_per_room": 1})

            before = trips(node)  # 1 batch per second, burst 2
            r = await c.op(rooms[0], create("a"), create("b"), create("c"), create("d"))
            self.assertEqual((r["t"], r["code"]), ("nack", "too_large"), r)
            self.assertEqual(delta(before, trips(node)), {"ops_per_batch": 1})
            before = trips(node)
            r = await c.op(rooms[0], create("a"), create("b"), create("c"))
            self.assertEqual((r["t"], r["code"]), ("nack", "too_large"), r)
            self.assertIn("entities", r["message"])
            self.assertEqual(delta(before, trips(node)), {"entities_per_scene": 1})
            before = trips(node)
            limited = 0
            for _ in range(5):
                r = await c.op(rooms[0], create("z"))
                limited += r["t"] == "nack" and r["code"] == "rate_limited"
            self.assertGreaterEqual(limited, 1)
            self.assertEqual(delta(before, trips(node)), {"ops_per_second": limited})

            before = trips(node)
            await c.send({"t": "eph", "room": rooms[0], "kind": "cursor", "data": {"s": "x" * 5000}})
            self.assertEqual((await c.next("error"))["code"], "too_large")
            self.assertEqual(delta(before, trips(node)), {"eph_data": 1})
        run(go())

    def test_limits_that_close_are_counted(self):
        nodes = self.fresh("--gateway-messages-per-second", "5", "--gateway-hello-timeout-ms", "300",
                           "--gateway-max-frame-bytes", "1024", "--gateway-max-sessions", "2")
        node = nodes[0]

        def closes_with(code, *frames, hello=True):
            before = trips(node)
            self.assertCloses(code, *frames, nodes=nodes, hello=hello)
            return delta(before, trips(node))

        self.assertEqual(closes_with(4001, hello=False), {"hello_timeout": 1})
        self.assertEqual(closes_with(4001, {"t": "hello", "id": 1, "token": "not.a.token"}, hello=False),
                         {"bad_token": 1})
        self.assertEqual(closes_with(4009, "x" * 2000), {"frame_bytes": 1})
        self.assertEqual(closes_with(4029, *[{"t": "ping", "id": i} for i in range(40)]),
                         {"messages_per_second": 1})

        async def full():
            # Two sessions held; the third upgrade is answered 503 before any WebSocket.
            await asyncio.to_thread(wait_for_metric, node, "kiln_gateway_sessions", 0)
            held = [await Client.connect(self.url(0, nodes), "ann", ROLES) for _ in range(2)]
            before = trips(node)
            raw = await asyncio.to_thread(RawWebSocket, node.host, node.port)
            self.assertEqual(raw.status, 503)
            raw.close()
            self.assertEqual(delta(before, trips(node)), {"sessions": 1})
            self.assertEqual((await held[0].request({"t": "ping"}))["t"], "pong")
        run(full())

    # --- close codes and hostile input ------------------------------------------------------

    def assertCloses(self, code, *frames, nodes=None, hello=True):
        async def go():
            c = await Client.connect(self.url(0, nodes), "ann" if hello else None, ROLES)
            for f in frames:
                try:
                    await (c.ws.send(f) if isinstance(f, (str, bytes)) else c.send(f))
                except websockets.ConnectionClosed:
                    break
            got = await c.closed()
            self.assertEqual(got[0], code, (frames[:1], got))
        run(go())

    def test_protocol_errors_close_4000(self):
        self.assertCloses(4000, "not json")
        self.assertCloses(4000, '{"t":"dance","id":1}')
        self.assertCloses(4000, '{"t":"op","id":1,"room":"p/s"}')
        self.assertCloses(4000, '{"id":1}')
        self.assertCloses(4000, b"\x00\x01binary")
        self.assertCloses(4000, "[" * 100000)
        self.assertCloses(4000, '{"t":"ping","id":1e400}')
        self.assertCloses(4000, '{"t":"ping","id":' + "9" * 5000 + "}")

    def test_oversized_frames_close_4009(self):
        self.assertCloses(4009, json.dumps({"t": "ping", "id": 1, "pad": "x" * (300 * 1024)}))
        # 10 MB: refused without the server buffering it.
        self.assertCloses(4009, "x" * (10 * 1024 * 1024))

    def test_message_flood_closes_4029(self):
        nodes = self.fresh("--gateway-messages-per-second", "5")
        self.assertCloses(4029, *[{"t": "ping", "id": i} for i in range(40)], nodes=nodes)

    def test_invalid_utf8_is_refused(self):
        n = self.nodes[0]
        raw = RawWebSocket(n.host, n.port)
        self.assertEqual(raw.status, 101)
        raw.send_frame(0x1, b'{"t":"hello","id":1,"token":"\xff\xfe"}')
        self.assertEqual(raw.read_close_code(), 1007)  # RFC 6455: invalid frame payload data
        raw.close()

    def test_ten_megabyte_frame_from_a_raw_client(self):
        n = self.nodes[0]
        raw = RawWebSocket(n.host, n.port)
        raw.send_frame(0x1, b"{" + b" " * (10 * 1024 * 1024) + b"}")
        self.assertEqual(raw.read_close_code(), 4009)
        raw.close()

    def test_upgrade_needs_the_subprotocol_and_plain_get_is_426(self):
        n = self.nodes[0]
        raw = RawWebSocket(n.host, n.port, protocol=None)
        self.assertEqual(raw.status, 400)
        raw.close()
        status, headers, _ = n.request("GET", "/v1/collab")
        self.assertEqual(status, 426)
        self.assertEqual(headers["upgrade"], "websocket")

    def test_slow_consumer_closes_4008(self):
        nodes = self.fresh("--gateway-max-queue-bytes", "65536", "--gateway-ops-per-second", "100000",
                           "--gateway-messages-per-second", "100000")
        room = self.room()

        async def go():
            # The slow client stops reading once 1 frame is buffered: the server's queue
            # for it grows once the kernel's socket buffers are full.
            slow = await Client.connect(self.url(0, nodes), "slow", ROLES, max_queue=1, read_limit=2 ** 12)
            await slow.join(room)
            before = trips(nodes[0])
            fast = await Client.connect(self.url(0, nodes), "fast", ROLES)
            await fast.join(room)
            blob = "x" * (100 * 1024)
            for k in range(300):  # 30 MB of fan-out for the slow client
                r = await fast.op(room, {"op": "create", "entity": f"e{k}", "parent": "root",
                                         "props": {"blob": blob}})
                self.assertEqual(r["t"], "ack")
                if slow.ws.closed:
                    break
            self.assertEqual((await slow.closed())[0], 4008)
            self.assertEqual(delta(before, trips(nodes[0])), {"queue_bytes": 1})
            # The fast client is unaffected.
            self.assertEqual((await fast.request({"t": "ping"}))["t"], "pong")
        run(go())

    def test_a_scene_larger_than_the_send_queue_can_still_be_joined(self):
        # The queue limit bounds what piles up for a slow reader, not one reply: a joiner
        # of a big scene gets its snapshot (here 300 KB against a 64 KiB queue).
        nodes = self.fresh("--gateway-max-queue-bytes", "65536", "--gateway-ops-per-second", "100000",
                           "--gateway-messages-per-second", "100000")
        room = self.room()

        async def go():
            author = await Client.connect(self.url(0, nodes), "author", ROLES)
            await author.join(room)
            blob = "y" * (30 * 1024)
            for k in range(10):
                r = await author.op(room, {"op": "create", "entity": f"b{k}", "parent": "root",
                                           "props": {"blob": blob}})
                self.assertEqual(r["t"], "ack")
            reader = await Client.connect(self.url(0, nodes), "reader", ROLES)
            j = await reader.join(room)
            self.assertEqual(j["t"], "joined")
            self.assertEqual(len(j["snapshot"]["entities"]), 10)
        run(go())

    def test_drain_sends_reconnect_then_1012(self):
        nodes = self.fresh("--shutdown-drain-ms", "2000")

        async def go():
            c = await Client.connect(self.url(0, nodes), "ann", ROLES)
            await c.join(self.room())
            nodes[0].signal(signal.SIGTERM)
            m = await c.next("reconnect")
            self.assertGreaterEqual(m["after_ms"], 0)
            self.assertLessEqual(m["after_ms"], 1000)
            self.assertEqual((await c.closed())[0], 1012)
        run(go())
        self.assertEqual(nodes[0].wait_exit(), 0)

    def test_limit_trips_are_counted(self):
        self.assertCloses(4009, "x" * (300 * 1024))
        _, _, body = self.nodes[0].request("GET", "/metrics")
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        trips = {s.labels["limit"]: s.value for s in fams["kiln_gateway_limit_trips"].samples}
        self.assertGreaterEqual(trips.get("frame_bytes", 0), 1)
        closes = {s.labels["code"]: s.value for s in fams["kiln_gateway_closes"].samples}
        self.assertGreaterEqual(closes.get("4009", 0), 1)
        # Upgrades are labelled by the route's name, like every request, not the raw path.
        routes = {s.labels["route"] for s in fams["kiln_http_requests"].samples
                  if s.labels.get("status") == "101"}
        self.assertEqual(routes, {"collab"})


class MemoryEngine(CollabSuite, unittest.TestCase):
    """The suite on one `kiln serve` (in-memory room engine)."""

    @staticmethod
    def start(*args):
        k = Kiln("--auth-jwt-secret", SECRET, "--http-access-log", "false", *args)
        attach([k], Directory(k, k.service_key()))
        return [k]

    def test_rs256_tokens_end_to_end(self):
        # An identity provider's key pair, made by OpenSSL (an independent signer): Kiln holds
        # only the public key, accepts what the private key signed on both the WebSocket and
        # the REST API, and refuses HS256 tokens (even ones signed with the old secret).
        keys = tempfile.mkdtemp(prefix="kiln-rs256-")
        self.addCleanup(shutil.rmtree, keys, True)
        private, public = os.path.join(keys, "idp.pem"), os.path.join(keys, "idp.pub.pem")
        subprocess.run(["openssl", "genrsa", "-out", private, "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", private, "-pubout", "-out", public], check=True,
                       capture_output=True)

        def rs256(sub, exp_in=3600):
            head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
            body = b64url(json.dumps({"sub": sub, "name": sub.title(), "exp": int(time.time()) + exp_in}).encode())
            sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", private],
                                 input=f"{head}.{body}".encode(), check=True, capture_output=True).stdout
            return f"{head}.{body}.{b64url(sig)}"

        k = Kiln("--auth-jwt-public-key-file", public, "--http-access-log", "false")
        self.addCleanup(k.stop)
        directory = attach([k], Directory(k, k.service_key()))
        directory.grant("ann", {"p": "editor"})
        directory.scene("p/rs")
        url = f"ws://{k.host}:{k.port}/v1/collab"

        status, _, doc = k.call("GET", "/v1/projects", rs256("ann"))
        self.assertEqual(status, 200, doc)
        self.assertEqual([p["id"] for p in doc["items"]], ["p"])
        status, _, _ = k.call("GET", "/v1/projects", token("ann", {}))
        self.assertEqual(status, 401)
        status, _, _ = k.call("GET", "/v1/projects", rs256("ann", exp_in=-3600))
        self.assertEqual(status, 401)

        async def go():
            c = await Client.connect(url)
            w = await c.request({"t": "hello", "token": rs256("ann")})
            self.assertEqual((w["t"], w["user"]["id"], w["user"]["name"]), ("welcome", "ann", "Ann"))
            self.assertEqual((await c.join("p/rs", create=False))["t"], "joined")
            self.assertEqual((await c.op("p/rs", {"op": "create", "entity": "a", "parent": "root"}))["t"], "ack")
            hs = await Client.connect(url)
            await hs.send({"t": "hello", "id": 1, "token": token("ann", {})})
            self.assertEqual((await hs.closed())[0], 4001)
        run(go())


if __name__ == "__main__":
    unittest.main()
