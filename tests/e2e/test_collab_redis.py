"""The protocol conformance suite on the Redis room engine: two `kiln gateway` nodes
sharing a real Redis (standalone, then a 6-node Cluster), clients spread across the nodes.
The servers come from the `redis` CTest fixture (tests/servers/redis.sh)."""
import os
import unittest
import uuid

import asyncio
import json

from collab_client import SECRET, Client, run
from harness import Kiln, shared_sqlite, with_api, needs
from test_collab import ROLES, CollabSuite, delta, metric_samples, trips

STANDALONE, CLUSTER = (os.environ.get("KILN_TEST_REDIS", "") + " ").split(" ")[:2]


def gateways(*args, mode, address, count=2):
    prefix = "e2e-" + uuid.uuid4().hex[:8]  # each test's nodes get a keyspace of their own
    common = ["--auth-jwt-secret", SECRET, "--http-access-log", "false", "--room-engine", "redis",
              "--redis-mode", mode, "--redis-addresses", address, "--redis-prefix", prefix,
              "--database-url", shared_sqlite()]
    gws = [Kiln(*common, *args, role="gateway") for _ in range(count)]
    with_api(gws, *common)
    return gws


class RedisOnly:
    """Tests of what only the Redis engine has."""

    def test_a_full_room_queue_is_nacked_unavailable_and_counted(self):
        # One batch may wait per room on this node: a client pipelining 200 batches finds
        # the queue full for some of them while an append is in flight at Redis.
        nodes = self.fresh("--room-max-queued", "1", "--gateway-ops-per-second", "100000",
                           "--gateway-messages-per-second", "100000")
        room = self.room()
        node = nodes[0]

        async def go():
            c = await Client.connect(self.url(0, nodes), "ann", ROLES)
            self.assertEqual((await c.join(room))["t"], "joined")
            self.assertEqual((await c.op(room, {"op": "create", "entity": "board", "parent": "root"}))["t"], "ack")
            before = trips(node)
            busy_before = metric_samples(node, "kiln_room_busy_refusals").get(None, 0)
            for i in range(200):
                await c.ws.send(json.dumps({"t": "op", "id": 1000 + i, "room": room, "ops": [
                    {"op": "set", "entity": "board", "key": "k", "value": i}]}))
            replies = {}
            while len(replies) < 200:
                m = json.loads(await asyncio.wait_for(c.ws.recv(), 20))
                if m["t"] in ("ack", "nack"):
                    replies[m["id"]] = m
            nacks = [m for m in replies.values() if m["t"] == "nack"]
            self.assertTrue(nacks, "the queue never filled: nothing was tested")
            for m in nacks:
                self.assertEqual(m["code"], "unavailable", m)
                self.assertGreater(m["after_ms"], 0, m)
            acks = [replies[i]["seq"] for i in sorted(replies) if replies[i]["t"] == "ack"]
            self.assertEqual(acks, sorted(acks), "acked batches kept the order sent")
            self.assertEqual(delta(before, trips(node)), {"room_queue": len(nacks)})
            busy = metric_samples(node, "kiln_room_busy_refusals").get(None, 0) - busy_before
            self.assertEqual(busy, len(nacks))
        run(go())


@needs(STANDALONE, "KILN_TEST_REDIS not set (run through ctest)")
class RedisStandaloneEngine(RedisOnly, CollabSuite, unittest.TestCase):
    @staticmethod
    def start(*args):
        return gateways(*args, mode="standalone", address=STANDALONE)


@needs(CLUSTER, "KILN_TEST_REDIS not set (run through ctest)")
class RedisClusterEngine(RedisOnly, CollabSuite, unittest.TestCase):
    @staticmethod
    def start(*args):
        return gateways(*args, mode="cluster", address=CLUSTER)


if __name__ == "__main__":
    unittest.main()
