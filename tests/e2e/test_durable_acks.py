"""Durable acks in `kiln serve` (the journal), with the real binary and kill -9:

- acks given, then kill -9 at once: after a restart every acknowledged batch is there, in
  the same epoch, and a client resumes with `recovered: true`;
- kill -9 in the middle of a burst of 1,000 pipelined batches: every acknowledged batch is
  there, the ones that are there are a prefix of what was sent, and none is half there;
- a journal whose last record was cut (a torn write): the whole records before it are
  replayed, the cut one is dropped;
- a full disk (a small tmpfs): batches are refused with a clear `nack`, counted, and
  nothing acknowledged is lost; once space is back, editing goes on.
"""
import asyncio
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import websockets

from collab_client import SECRET, Client, Directory, attach, run, token
from harness import WAIT, Kiln, run_kiln

ROLES = {"proj": "editor"}
CI = os.environ.get("CI") == "true"


def ws_url(k):
    return f"ws://{k.host}:{k.port}/v1/collab"


def metric(k, name):
    _, _, body = k.request("GET", "/metrics")
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if m else None


async def state(url, room, since=None):
    c = await Client.connect(url, user="reader", roles=ROLES)
    j = await c.join(room, since)
    await c.close()
    return j


def batch(i):
    """Batch i creates e<i> and sets its `n`: two ops, so a half-applied batch would show
    as an entity without `n`."""
    return [{"op": "create", "entity": f"e{i}", "parent": "root"},
            {"op": "set", "entity": f"e{i}", "key": "n", "value": i}]


# The error a damaged journal is reported with (the tests that damage one expect it).
DAMAGE = r"^journal: a damaged segment"


class DurableAcks(unittest.TestCase):
    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="kiln-e2e-journal-")
        self.addCleanup(shutil.rmtree, self.data, True)

    def serve(self, *args, data=None, persist_ms="3600000", expect_errors=()):
        # No persister pass during the test (by default): only the journal can bring the
        # batches back.
        k = Kiln("--auth-jwt-secret", SECRET, "--http-access-log", "false",
                 "--persist-interval-ms", persist_ms, "--gateway-ops-per-second", "100000",
                 "--gateway-messages-per-second", "100000", *args, data_dir=data or self.data,
                 expect_errors=expect_errors)
        self.addCleanup(k.stop)
        attach([k], Directory(k, k.service_key()))
        return k

    def serve_once(self):
        """A second `kiln serve` on this test's data directory, expected not to start."""
        return run_kiln("serve", "--data-dir", self.data, "--http-listen", "127.0.0.1:0",
                        "--objects-listen", "127.0.0.1:0", "--auth-jwt-secret", SECRET)

    def kill9(self, k):
        k.signal(signal.SIGKILL)
        self.assertEqual(k.wait_exit(), -signal.SIGKILL)

    def check_prefix(self, snapshot, acked_upto):
        """Every batch up to acked_upto is there whole; what is there is a prefix of what
        was sent and no batch is half there. Returns how many are there."""
        ents = snapshot["entities"]
        present = sorted(int(e[1:]) for e in ents)
        self.assertEqual(present, list(range(len(present))), "a prefix of the batches sent")
        self.assertGreaterEqual(len(present), acked_upto, "every acknowledged batch is there")
        for e, v in ents.items():
            self.assertEqual(v["props"].get("n"), int(e[1:]), f"{e} is whole")
        return len(present)

    def test_kill_9_right_after_the_acks_loses_none_and_keeps_the_epoch(self):
        k = self.serve()

        async def edit():
            c = await Client.connect(ws_url(k), user="ann", roles=ROLES)
            j = await c.join("proj/crash")
            for i in range(50):
                a = await c.op("proj/crash", *batch(i))
                self.assertEqual(a["t"], "ack", a)
            return j["epoch"], a["seq"]
        epoch, last = run(edit())
        self.assertEqual(last, 50)
        self.kill9(k)

        k2 = self.serve()
        j = run(state(ws_url(k2), "proj/crash", {"epoch": epoch, "seq": 20}))
        self.assertEqual(j["epoch"], epoch, "the epoch survives the crash")
        self.assertTrue(j["recovered"], "a client resumes: nothing to refetch")
        self.assertEqual(j["seq"], 50)
        self.assertEqual([f["seq"] for f in j["ops"]], list(range(21, 51)))
        whole = run(state(ws_url(k2), "proj/crash"))
        self.assertEqual(self.check_prefix(whole["snapshot"], 50), 50)
        # Editing continues after the recovered seq.
        async def more():
            c = await Client.connect(ws_url(k2), user="ann", roles=ROLES)
            await c.join("proj/crash")
            return await c.op("proj/crash", *batch(50))
        self.assertEqual(run(more())["seq"], 51)
        self.assertEqual(metric(k2, "kiln_journal_records_total"), 1, "this run wrote one")
        self.assertGreaterEqual(metric(k2, "kiln_journal_syncs_total"), 1)

    def test_kill_9_during_a_burst_of_a_thousand_batches(self):
        k = self.serve()
        total = 1000

        d = Directory(k, k.service_key())
        d.grant("ann", ROLES)
        d.scene("proj/burst")

        async def burst():
            ws = await websockets.connect(ws_url(k), subprotocols=["kiln.v1"], max_size=None)
            await ws.send(json.dumps({"t": "hello", "id": 1, "token": token("ann", ROLES)}))
            await ws.send(json.dumps({"t": "join", "id": 2, "room": "proj/burst"}))
            for i in range(total):  # pipelined: nothing waits for an ack
                await ws.send(json.dumps({"t": "op", "id": 1000 + i, "room": "proj/burst",
                                          "ops": batch(i)}))
            acked = -1
            try:
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                    if m["t"] == "nack":
                        raise AssertionError(f"refused: {m}")
                    if m["t"] == "ack":
                        self.assertEqual(m["id"], 1000 + acked + 1, "acks in the order sent")
                        acked = m["id"] - 1000
                        if acked == total // 2:
                            k.signal(signal.SIGKILL)  # mid-burst
            except (websockets.ConnectionClosed, asyncio.TimeoutError):
                pass
            return acked
        acked = run(burst())
        self.assertGreaterEqual(acked, total // 2)
        self.assertEqual(k.wait_exit(), -signal.SIGKILL)

        k2 = self.serve()
        j = run(state(ws_url(k2), "proj/burst"))
        there = self.check_prefix(j["snapshot"], acked + 1)
        self.assertEqual(j["seq"], there, "one seq per batch there")
        print(f"\nburst: {acked + 1} acked before kill -9, {there} there after the restart",
              flush=True)

    def test_a_torn_last_record_is_dropped_and_the_rest_replayed(self):
        k = self.serve()

        async def edit():
            c = await Client.connect(ws_url(k), user="ann", roles=ROLES)
            await c.join("proj/torn")
            for i in range(10):
                self.assertEqual((await c.op("proj/torn", *batch(i)))["t"], "ack")
        run(edit())
        self.kill9(k)
        # Cut the newest segment in the middle of its last record, as a crash during that
        # write would (its ack was never sent then; here it was, so the client is told by
        # the seq going back that it must take the snapshot).
        seg = sorted(glob.glob(os.path.join(self.data, "journal", "*.kjl")))[-1]
        with open(seg, "rb") as f:
            data = f.read()
        end = len(data.rstrip(b"\0"))
        with open(seg, "r+b") as f:
            f.truncate(end - 7)

        k2 = self.serve()
        k2.wait_for_log(lambda r: "torn record" in r.get("msg", ""), "the torn tail reported")
        j = run(state(ws_url(k2), "proj/torn"))
        self.assertEqual(j["seq"], 9)
        self.assertEqual(self.check_prefix(j["snapshot"], 9), 9)

    def edit(self, k, room, start, count):
        async def go():
            c = await Client.connect(ws_url(k), user="ann", roles=ROLES)
            j = await c.join(room)
            for i in range(start, start + count):
                a = await c.op(room, *batch(i))
                self.assertEqual(a["t"], "ack", a)
            return j
        return run(go())

    def test_interval_mode_after_a_machine_restart_keeps_the_state_through_the_new_epoch(self):
        k = self.serve("--journal-fsync", "interval")
        first = self.edit(k, "proj/boot", 0, 10)
        self.kill9(k)
        # As if the machine had restarted: interval mode cannot vouch for every ack then.
        with open(os.path.join(self.data, "journal", "boot_id"), "w") as f:
            f.write("00000000-0000-0000-0000-000000000000")
        k2 = self.serve("--journal-fsync", "interval")
        second = self.edit(k2, "proj/boot", 10, 5)
        self.assertNotEqual(second["epoch"], first["epoch"], "a new epoch: clients resync")
        self.assertEqual(second["seq"], 10, "the state is kept")
        self.kill9(k2)  # before any snapshot is stored
        # Still uncertain (the journal says so until an operator clears it): another new
        # epoch, every batch kept through both.
        k3 = self.serve("--journal-fsync", "interval")
        third = run(state(ws_url(k3), "proj/boot", {"epoch": second["epoch"], "seq": 12}))
        self.assertNotEqual(third["epoch"], second["epoch"])
        self.assertFalse(third["recovered"])
        self.assertEqual(third["seq"], 15)
        self.assertEqual(self.check_prefix(third["snapshot"], 15), 15)
        self.kill9(k3)
        os.remove(os.path.join(self.data, "journal", "uncertain"))
        k4 = self.serve("--journal-fsync", "interval")
        # A client of the third run joined its epoch at seq 15.
        j = run(state(ws_url(k4), "proj/boot", {"epoch": third["epoch"], "seq": 15}))
        self.assertEqual(j["epoch"], third["epoch"], "cleared: epochs are kept again")
        self.assertTrue(j["recovered"])
        self.assertEqual((j["seq"], j["ops"]), (15, []))

    def test_acknowledged_records_missing_from_a_segment_start_a_new_epoch(self):
        k = self.serve()
        before = self.edit(k, "proj/damage", 0, 45)
        self.kill9(k)
        seg = sorted(glob.glob(os.path.join(self.data, "journal", "*.kjl")))[-1]
        with open(seg, "r+b") as f:
            f.truncate(4000)  # well inside what was acknowledged
        k2 = self.serve(expect_errors=[DAMAGE])
        k2.wait_for_log(lambda r: "damaged segment" in r.get("msg", ""), "the damage reported")
        self.assertTrue(os.path.exists(seg + ".damaged"), "a copy kept for inspection")
        self.assertEqual(metric(k2, "kiln_journal_damaged_segments"), 1)
        j = run(state(ws_url(k2), "proj/damage", {"epoch": before["epoch"], "seq": 45}))
        self.assertNotEqual(j["epoch"], before["epoch"], "clients are told: resync")
        self.assertFalse(j["recovered"])
        readable = self.check_prefix(j["snapshot"], 0)
        self.assertEqual(j["seq"], readable, "what was readable is kept")
        self.assertGreater(readable, 0)

    def test_after_a_lost_segment_the_new_epoch_keeps_its_acks_across_the_next_crash(self):
        # A gap at start-up starts a new epoch; what is acked in it must survive the next
        # kill -9, though the old epoch's history still has its gap in the journal.
        k = self.serve("--journal-segment-bytes", "65536")
        async def big(start, count):
            c = await Client.connect(ws_url(k2 if start else k), user="ann", roles=ROLES)
            j = await c.join("proj/gap")
            for i in range(start, start + count):
                a = await c.op("proj/gap", {"op": "create", "entity": f"e{i}", "parent": "root",
                                            "props": {"n": i, "pad": "z" * (30 << 10)}})
                self.assertEqual(a["t"], "ack", a)
            return j, a
        k2 = None
        first, _ = run(big(0, 10))
        self.kill9(k)
        segs = sorted(glob.glob(os.path.join(self.data, "journal", "*.kjl")))
        os.remove(segs[2])
        k2 = self.serve("--journal-segment-bytes", "65536", expect_errors=[DAMAGE])
        second, last = run(big(1000, 2))
        self.assertNotEqual(second["epoch"], first["epoch"])
        self.kill9(k2)
        k3 = self.serve("--journal-segment-bytes", "65536")
        j = run(state(ws_url(k3), "proj/gap"))
        self.assertEqual(j["seq"], last["seq"], "the new epoch's acks are kept")
        self.assertIn("e1001", j["snapshot"]["entities"])

    def test_a_segment_with_a_garbage_header_is_damage_not_an_empty_file(self):
        k = self.serve()
        before = self.edit(k, "proj/header", 0, 5)
        self.kill9(k)
        seg = sorted(glob.glob(os.path.join(self.data, "journal", "*.kjl")))[-1]
        with open(seg, "r+b") as f:
            f.write(b"XXXXXXXX")
        k2 = self.serve(expect_errors=[DAMAGE])
        j = run(state(ws_url(k2), "proj/header", {"epoch": before["epoch"], "seq": 5}))
        self.assertNotEqual(j["epoch"], before["epoch"])
        self.assertFalse(j["recovered"])
        self.assertTrue(os.path.exists(seg + ".damaged"))

    def test_a_non_file_named_like_a_segment_stops_start_up_with_its_path(self):
        os.makedirs(os.path.join(self.data, "journal", "00000000000000000050.kjl"))
        proc = self.serve_once()
        self.assertEqual(proc.returncode, 1)
        self.assertIn("00000000000000000050.kjl is not a regular file", proc.stderr)

    def test_one_serve_per_data_directory(self):
        k = self.serve()
        proc = self.serve_once()
        self.assertEqual(proc.returncode, 1)
        self.assertIn("is in use by another kiln serve", proc.stderr)
        self.assertEqual(self.edit(k, "proj/one", 0, 1)["t"], "joined", "the first one is unharmed")

    def test_after_kill_9_the_restarted_serve_persists_at_once(self):
        # The persister's leases name the node; a restarted serve is the same node, so it
        # does not wait for the dead process's leases to expire (persist.lease_ms, 90 s).
        k = self.serve("--journal-enabled", "false", persist_ms="200")
        self.edit(k, "proj/lease", 0, 3)
        deadline = time.monotonic() + WAIT
        while (metric(k, 'kiln_persist_rooms_total{result="stored"}') or 0) < 1:
            self.assertLess(time.monotonic(), deadline, "the room was stored")
            time.sleep(0.05)
        self.kill9(k)
        k2 = self.serve("--journal-enabled", "false", persist_ms="200")
        self.edit(k2, "proj/lease", 3, 3)
        k2.signal(signal.SIGTERM)
        self.assertEqual(k2.wait_exit(), 0)
        k3 = self.serve("--journal-enabled", "false", persist_ms="200")
        j = run(state(ws_url(k3), "proj/lease"))
        self.assertEqual(self.check_prefix(j["snapshot"], 6), 6)

    @unittest.skipUnless(os.geteuid() == 0 or CI, "mounting a tmpfs needs root")
    def test_a_full_disk_refuses_batches_and_loses_nothing_acked(self):
        mnt = tempfile.mkdtemp(prefix="kiln-e2e-full-")
        self.addCleanup(os.rmdir, mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt], check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", mnt])
        k = self.serve("--journal-segment-bytes", str(1 << 20), data=mnt)
        filler = os.path.join(mnt, "filler")
        # Leave less than one more segment free.
        free = shutil.disk_usage(mnt).free
        with open(filler, "wb") as f:
            f.write(b"\1" * (free - (512 << 10)))

        big = "x" * (60 << 10)

        async def fill():
            c = await Client.connect(ws_url(k), user="ann", roles=ROLES)
            await c.join("proj/full")
            acked, refusal = [], None
            for i in range(200):
                a = await c.op("proj/full", {"op": "create", "entity": f"e{i}", "parent": "root",
                                             "props": {"n": i, "pad": big}})
                if a["t"] == "ack":
                    acked.append(i)
                    continue
                refusal = a
                break
            # Space comes back: the next batch is taken.
            os.remove(filler)
            again = await c.op("proj/full", {"op": "create", "entity": "after", "parent": "root"})
            return acked, refusal, again
        acked, refusal, again = run(fill())
        self.assertIsNotNone(refusal, "the disk filled up")
        self.assertEqual(refusal["code"], "unavailable", refusal)
        self.assertIn("disk is full", refusal["message"])
        self.assertGreater(refusal.get("after_ms", 0), 0, "a time to retry")
        self.assertGreater(len(acked), 0)
        self.assertGreaterEqual(metric(k, "kiln_journal_refusals_total"), 1)
        self.assertEqual(again["t"], "ack", again)
        self.kill9(k)

        k2 = self.serve(data=mnt)
        j = run(state(ws_url(k2), "proj/full"))
        ents = j["snapshot"]["entities"]
        for i in acked:
            self.assertEqual(ents[f"e{i}"]["props"]["n"], i)
        self.assertIn("after", ents)
        self.assertNotIn(f"e{len(acked)}", ents, "the refused batch is not there")
        k2.stop()


if __name__ == "__main__":
    unittest.main()
