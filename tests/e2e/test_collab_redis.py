"""The protocol conformance suite on the Redis room engine: two `kiln gateway` nodes
sharing a real Redis (standalone, then a 6-node Cluster), clients spread across the nodes.
The servers come from the `redis` CTest fixture (tests/servers/redis.sh)."""
import os
import unittest
import uuid

from collab_client import SECRET
from harness import Kiln, shared_sqlite, with_api, needs
from test_collab import CollabSuite

STANDALONE, CLUSTER = (os.environ.get("KILN_TEST_REDIS", "") + " ").split(" ")[:2]


def gateways(*args, mode, address, count=2):
    prefix = "e2e-" + uuid.uuid4().hex[:8]  # each test's nodes get a keyspace of their own
    common = ["--auth-jwt-secret", SECRET, "--http-access-log", "false", "--room-engine", "redis",
              "--redis-mode", mode, "--redis-addresses", address, "--redis-prefix", prefix,
              "--database-url", shared_sqlite()]
    gws = [Kiln(*common, *args, role="gateway") for _ in range(count)]
    with_api(gws, *common)
    return gws


@needs(STANDALONE, "KILN_TEST_REDIS not set (run through ctest)")
class RedisStandaloneEngine(CollabSuite, unittest.TestCase):
    @staticmethod
    def start(*args):
        return gateways(*args, mode="standalone", address=STANDALONE)


@needs(CLUSTER, "KILN_TEST_REDIS not set (run through ctest)")
class RedisClusterEngine(CollabSuite, unittest.TestCase):
    @staticmethod
    def start(*args):
        return gateways(*args, mode="cluster", address=CLUSTER)


if __name__ == "__main__":
    unittest.main()
