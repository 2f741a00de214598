// The Redis engine's Lua scripts, one per atomic step on a room's keys (all of one room's
// keys share the hash tag {<room>}, so each script runs on one Cluster node). The keys and
// the messages they read and write: docs/redis-keyspace.md.
#pragma once

#include "clients/redis/client.hpp"

namespace kiln::engines::scripts {

// KEYS meta snap log; ARGV new_epoch retention has_loader. The state to start a node's
// copy from; {'absent'} when the room is not in Redis and the node can load it from the
// database (has_loader '1'): then it seeds the room (kSeed) and loads again.
inline const redis::Script kLoad(R"lua(
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return {'absent'} end
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'snap_seq')
local seq = tonumber(m[2] or '0')
local snap_seq = tonumber(m[3] or '0')
local from = math.min(snap_seq, math.max(seq - tonumber(ARGV[2]), 0)) + 1
local snap = redis.call('GET', KEYS[2]) or ''
local log = redis.call('XRANGE', KEYS[3], from .. '-0', '+')
return {m[1], seq, snap_seq, snap, log}
)lua");

// KEYS meta snap log; ARGV epoch seq snapshot. Starts a room from its stored snapshot,
// unless another node did first. A log left without its meta is stale: dropped.
inline const redis::Script kSeed(R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', ARGV[2], 'snap_seq', ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3]) end
return 1
)lua");

// KEYS meta snap log. The room's state for the persister, or {} when Redis does not hold it.
inline const redis::Script kRead(R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'snap_seq')
local snap_seq = tonumber(m[3] or '0')
local snap = redis.call('GET', KEYS[2]) or ''
local log = redis.call('XRANGE', KEYS[3], (snap_seq + 1) .. '-0', '+')
return {m[1], tonumber(m[2] or '0'), snap_seq, snap, log}
)lua");

// KEYS dirty; ARGV room seq. Clears the room's dirty mark unless a later batch marked it.
inline const redis::Script kMarkStored(R"lua(
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0
)lua");

// KEYS meta log; ARGV expected_seq epoch channel message... Appends the messages (a group,
// seqs expected_seq+1...) and publishes each iff the room is at expected_seq of the same
// epoch: {1, seq} appended; {0, seq} another node appended first; {-1, 0} the epoch
// changed or the keys are gone.
inline const redis::Script kAppend(R"lua(
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch or epoch ~= ARGV[2] then return {-1, 0} end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq ~= tonumber(ARGV[1]) then return {0, seq} end
for i = 4, #ARGV do
  seq = seq + 1
  redis.call('XADD', KEYS[2], seq .. '-0', 'm', ARGV[i])
  redis.call('SPUBLISH', ARGV[3], ARGV[i])
end
redis.call('HSET', KEYS[1], 'seq', seq)
return {1, seq}
)lua");

// KEYS meta; ARGV observed_seq new_epoch observed_epoch. Redis is behind what this node saw
// (a failover or restart lost acknowledged batches): start a new epoch, once for all nodes.
// 1: this call started it; 2: another node already did (the epoch is not the observed one)
// or the room's keys are gone (the node reloads it from the database); 0: Redis is not
// behind after all.
inline const redis::Script kHistoryLost(R"lua(
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if not m[1] or m[1] ~= ARGV[3] then return 2 end
if tonumber(m[2] or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
  return 1
end
return 0
)lua");

// KEYS meta snap log; ARGV snap_seq snapshot retention. Stores a newer snapshot and trims
// the log to what loading and resuming still need.
inline const redis::Script kSnapshot(R"lua(
local cur = tonumber(redis.call('HGET', KEYS[1], 'snap_seq') or '0')
local s = tonumber(ARGV[1])
if s <= cur then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'snap_seq', s)
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local keep_from = math.min(s, seq - tonumber(ARGV[3])) + 1
if keep_from > 1 then redis.call('XTRIM', KEYS[3], 'MINID', keep_from .. '-0') end
return 1
)lua");

// KEYS members presence eph; ARGV session member_json expiry_ms max_members channel message.
inline const redis::Script kJoin(R"lua(
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return {0}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local members = redis.call('HGETALL', KEYS[1])
local eph = redis.call('HGETALL', KEYS[3])
redis.call('SPUBLISH', ARGV[5], ARGV[6])
return {1, members, eph}
)lua");

// KEYS members presence eph; ARGV channel now_ms session... Removes the sessions named (or,
// with now_ms set, every session whose presence expired) and tells the room who left.
inline const redis::Script kLeave(R"lua(
local list = {}
if ARGV[2] ~= '' then
  list = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
else
  for i = 3, #ARGV do list[#list + 1] = ARGV[i] end
end
local gone = {}
for _, s in ipairs(list) do
  if redis.call('HDEL', KEYS[1], s) == 1 then gone[#gone + 1] = s end
  redis.call('ZREM', KEYS[2], s)
  for _, f in ipairs(redis.call('HKEYS', KEYS[3])) do
    if string.sub(f, 1, #s + 1) == s .. ':' then redis.call('HDEL', KEYS[3], f) end
  end
end
if #gone > 0 then redis.call('SPUBLISH', ARGV[1], 'p\n' .. cjson.encode({l = gone})) end
return #gone
)lua");

// KEYS members eph; ARGV channel message (field data)... Stores latest eph of members only.
inline const redis::Script kEph(R"lua(
local any = false
for i = 3, #ARGV, 2 do
  local session = string.match(ARGV[i], '^([^:]*):')
  if session and redis.call('HEXISTS', KEYS[1], session) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    any = true
  end
end
if any then redis.call('SPUBLISH', ARGV[1], ARGV[2]) end
return 1
)lua");

}  // namespace kiln::engines::scripts
