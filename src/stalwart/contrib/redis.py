"""Breaker state shared across processes and hosts through Redis.

.. code-block:: python

    from stalwart import BreakerRegistry, CircuitBreaker
    from stalwart.contrib.redis import AsyncRedisStorage, RedisStorage

    storage = RedisStorage("redis://cache:6379/0")
    jira = CircuitBreaker("jira", failure_threshold=5, storage=storage)
    breakers = BreakerRegistry(storage=storage)           # or one storage per registry

    async_breaker = CircuitBreaker("jira", storage=AsyncRedisStorage("redis://cache:6379/0"))

Every breaker with the same name and prefix, in any process on any host, shares one
state: when one of them opens, all of them reject. `RedisStorage` is for code that
blocks (a sync `redis.Redis` client); `AsyncRedisStorage` for asyncio code (a
`redis.asyncio.Redis` client).

Redis 5 or later (or a Redis Cluster) is needed.

**How it decides.** The rules of `stalwart.breaker.machine` run inside Redis, in one
Lua script loaded once and called by its SHA (reloaded after ``SCRIPT FLUSH`` or a
failover). Every admission and every recorded outcome is one atomic round trip, so a
call costs at most two. A breaker last seen closed is admitted by a plain ``HMGET`` of
its state and generation (for a closed breaker the script would read the same and
write nothing); if that shows it is no longer closed, the script decides, in one more
round trip. A success of a breaker last seen closed, with no rate and no slow-call
limit configured, is counted with a plain ``HINCRBY`` of an ``ok:<generation>`` field
of its state hash; the script folds those fields into the counts before anything else
it does (a generation never changes state, so the counts come out exactly as the
memory storage's). Time is Redis server time (``TIME``), so hosts with skewed clocks
agree on windows and recovery timeouts. The breaker's configuration travels with every
call to the script: all processes must configure one breaker name alike (a mismatch is
not detected; each call applies its own).

**Keys.** A breaker named ``jira`` under the prefix ``stalwart`` keeps:

- ``stalwart:{jira}:state``: a hash of plain fields (``state``, ``generation``,
  ``successes``, ``failures``, ``rejected``, ``opened_at``, ...), numbers as decimal
  strings;
- ``stalwart:{jira}:buckets``: the time window, a hash of ``<epoch>:calls``,
  ``<epoch>:failures``, ``<epoch>:slow`` counters, one set per bucket (1/20 of the
  window), pruned as the window slides;
- ``stalwart:{jira}:calls``: the count window of rates, a list of the last
  `window_calls` outcomes (``0`` success, ``1`` failure, ``+2`` when slow).

The state hash also holds ``ok:<generation>`` counters: successes counted without
the script, which the next call to the script adds to ``successes`` and deletes; and,
while half-open, ``probes``: when each probe's slot expires (`recovery_timeout` after
its admission), oldest first, space-separated.

The braces make the name a hash tag: one breaker's keys share a Redis Cluster slot.
The TTL is twice the longer of `window` and `recovery_timeout`, plus an hour (30 days
while forced open or disabled). A success the script records for a closed breaker
with no rate and no slow-call limit sets it on the state hash only, the one key it
writes; every other write by the script (failures, rejections, transitions, operators,
successes that are windowed) sets it on all three. A plain ``HINCRBY`` success sets
no TTL: each process sends a success through the script at least every
`PLAIN_SUCCESS_REFRESH` seconds, so the keys live at least the TTL less that long
after the last outcome. Admitting a closed breaker writes nothing. A breaker with no
outcome, rejection or operator action for that long loses its keys and starts again
fresh and closed, with totals at zero. (If the state hash is deleted from outside
stalwart, or evicted, while a process is counting plain successes, the hash that
``HINCRBY`` makes has no TTL until that process's next call to the script, at most
`PLAIN_SUCCESS_REFRESH` seconds later if it makes calls.)

**Local cache.** With `max_staleness`, a breaker that was closed (or disabled) when
Redis last answered admits calls without asking, for at most that many seconds since
the answer; outcomes are still recorded, one round trip each, and each answer about the
state refreshes the cache (a plain ``HINCRBY`` success carries none, so the state is
read again once the cache is `max_staleness` old). A closed breaker then costs about
one round trip per call instead of two, and another process's decision to open
reaches this one within `max_staleness`.

**When Redis fails.** If Redis errors, does not answer within `socket_timeout`, or
answers with what the script did not write (a key of the wrong type, any field it
reads that is not as it writes it: the script refuses it; a reply stalwart cannot
read), the
breaker carries on with a local, in-memory state (the same rules, starting closed),
logs one WARNING per outage on the ``stalwart.redis`` logger saying which of these it
was, and reports ``storage_degraded=True`` in `stats()`. None of it raises into the
protected call. Redis is tried again at most every `retry_interval` seconds, with a
request that reads and checks the whole state and writes it back (so a Redis that
answers reads but refuses writes, or a key still corrupt, keeps the breaker local
rather than flapping); when that succeeds, the breaker adopts the shared state again
(logged at INFO) and forgets the local one. Outcomes recorded locally stay local, and
calls admitted locally are counted in the shared totals, never acted on, when they end
after the recovery.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .. import _validate
from ..breaker.machine import DEFAULT_MINIMUM_CALLS, REJECTED, BreakerConfig, State, Transition
from ..breaker.storage import Counts, MemoryState
from ..breaker.window import DEFAULT_BUCKETS

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_RETRY_INTERVAL",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_URL",
    "HELD_TTL",
    "IDLE_MARGIN",
    "LOCAL_GENERATIONS",
    "PLAIN_SUCCESS_REFRESH",
    "AsyncRedisState",
    "AsyncRedisStorage",
    "RedisState",
    "RedisStorage",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
"""The Redis a storage built without a client talks to."""
DEFAULT_PREFIX = "stalwart"
"""The first part of every key."""
DEFAULT_SOCKET_TIMEOUT = 0.25
"""Seconds to wait for Redis (connecting, or answering) before going local."""
DEFAULT_RETRY_INTERVAL = 1.0
"""Seconds between attempts to reach Redis again while it is down."""

IDLE_MARGIN = 3600.0
"""Seconds an idle breaker's keys outlive its window and recovery timeout."""
HELD_TTL = 30 * 86400.0
"""Seconds an idle breaker's keys live while forced open or disabled by an operator."""
_MAX_TTL = 10 * 365 * 86400.0

PLAIN_SUCCESS_REFRESH = 60.0
"""Seconds a process records a closed breaker's successes with a plain ``HINCRBY``
after the last one it sent through the script, which also refreshes the state hash's
TTL (a plain one does not)."""

LOCAL_GENERATIONS = 1 << 48
"""Where the generations of the local fallback state start, so that a token it issued
never matches a shared generation, nor the reverse."""

T = TypeVar("T")

logger = logging.getLogger("stalwart.redis")

_UNREADABLE: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    ArithmeticError,
)
"""What reading a reply raises when it is not one of the script's."""
_FAILURES: tuple[type[Exception], ...] = (RedisError, OSError, *_UNREADABLE)
"""What makes a breaker carry on locally: Redis unavailable (refused connections,
timeouts, including asyncio's, which are OSErrors), an error reply (a key of the wrong
type, a read-only replica, a value the script refuses), or a reply that cannot be
read. None of them reaches the protected call."""

_OPERATIONS = frozenset({"reset", "force_open", "disable"})
_MAX_DIGITS = 15
"""The longest generation read without the script, which checks the same (its EXACT)."""
_CLOSED_REPLIES = frozenset({b"closed", "closed"})  # from clients that decode, or not

# The state machine of `stalwart.breaker.machine`, in Lua, over three keys. Keep the two
# equal: tests/test_contrib_redis.py drives both with the same events and compares them.
#
# KEYS: the state hash, the time window's buckets (a hash), the count window (a list).
# The state hash may also hold "ok:<generation>" counters, successes Python counted
# with HINCRBY alone (`_plain_success`); the full path below folds them in first, and
# the short path for a closed breaker's success leaves them for it.
# ARGV: 1 one "|"-separated string (each argument costs redis-py time to encode): the
# operation (admit, success, record, release, change, counts, check); the generation
# of the call (the operator's operation for "change"), or ""; the configuration (see
# `_config_arg`); and the time, or "" for Redis server time. Then, for "record" only:
# 2 "1" if the call failed, 3 its duration or "", 4 "=" and the failure's type or "".
#
# Reply: for a closed breaker's admission, release or counted success, the generation
# alone (an integer). Else {state, generation, now, admitted generation or REJECTED,
# retry_after, transition's old state, reason code, reason numbers a and b}, and for
# "counts" the counters after those. `false` stands for None; floats travel as "%.17g"
# strings (the shortest exact form would be nicer, but Lua 5.1 has none) and integers
# as integers. A key holding what the script did not write gets an error reply.
_SCRIPT = """
local state_key = KEYS[1]
local op, call_arg, ttl = string.match(ARGV[1], '^([^|]*)|([^|]*)|([^|]*)|')

local function num(x) return string.format('%.17g', x) end

local function server_time()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Fast paths, before anything else, for what most calls do: a closed breaker admitting,
-- releasing, or counting a success that only needs counting (Python asks for "success"
-- only when no rate and no slow-call limit is configured; else it sends "record"), and
-- an open breaker rejecting. Three fields read, at most three commands written, and
-- only what they need of the configuration.
if op == 'admit' or op == 'success' or op == 'release' then
  local third = 'consecutive_failures'
  if op == 'admit' then third = 'opened_at' end
  local head = redis.call('HMGET', state_key, 'state', 'generation', third)
  local state, generation = head[1], nil
  -- Only a generation the script could have written; anything else: the full path,
  -- which checks every field (and refuses what it did not write).
  if head[2] and #head[2] <= 15 and string.find(head[2], '^%d+$') then
    generation = tonumber(head[2])
  end
  if state == 'closed' and generation then
    if op ~= 'success' then return generation end
    if call_arg == head[2] and (head[3] == '0' or string.find(head[3] or '0', '^%d+$')) then
      redis.call('HINCRBY', state_key, 'successes', 1)
      if head[3] ~= '0' then redis.call('HSET', state_key, 'consecutive_failures', '0') end
      redis.call('PEXPIRE', state_key, ttl)
      return generation
    end
  elseif op == 'admit' and generation and (state == 'open' or state == 'forced_open') then
    -- A rejection, unless the recovery timeout has passed (then the full path below
    -- moves to half-open). The held TTL and the recovery timeout follow the TTL.
    local held, recovery = string.match(ARGV[1], '^[^|]*|[^|]*|[^|]*|([^|]*)|([^|]*)|')
    local now = tonumber(string.match(ARGV[1], '([^|]*)$')) or server_time()
    local opened = head[3] and tonumber(head[3])
    recovery = tonumber(recovery)
    -- Only a time the script could have written (finite, in its own format, not later
    -- than now + recovery); anything else: the full path, which refuses it.
    if opened and not (opened > -math.huge and opened <= now + recovery
        and string.find(head[3], '^%-?[%d.]+e?[-+]?%d*$')) then
      opened = nil
    end
    if state == 'forced_open' or (opened and now < opened + recovery) then
      redis.call('HINCRBY', state_key, 'rejected', 1)
      local wait, expiry = false, held
      if state == 'open' then
        wait, expiry = num(math.max(opened + recovery - now, 0.0)), ttl
      end
      redis.call('PEXPIRE', state_key, expiry)
      return {state, generation, num(now), -1, wait, false, false, false, false}
    end
  end
end

local buckets_key, calls_key = KEYS[2], KEYS[3]

-- ARGV[1] unpacked: the operation, its argument, the configuration as `_config_arg`
-- lists it (from the TTL read above), and the time last.
local cfg = {}
do
  local packed, from = ARGV[1], 1
  while true do
    local bar = string.find(packed, '|', from, true)
    if not bar then
      cfg[#cfg + 1] = string.sub(packed, from)
      break
    end
    cfg[#cfg + 1] = string.sub(packed, from, bar - 1)
    from = bar + 1
  end
end

local function opt(value)
  if value == nil or value == '' then return nil end
  return tonumber(value)
end

local held_ttl = cfg[4]
local recovery = tonumber(cfg[5])
local threshold = opt(cfg[6])
local window = opt(cfg[7])
local failure_rate = opt(cfg[8])
local minimum_calls = tonumber(cfg[9])
local count_size = opt(cfg[10])
local slow_limit = opt(cfg[11])
local slow_rate = opt(cfg[12])
local half_open_max = tonumber(cfg[13])
local success_threshold = tonumber(cfg[14])
local buckets = tonumber(cfg[15])
local now = opt(cfg[16]) or server_time()
local uses_rates = failure_rate ~= nil or slow_rate ~= nil
local needs_time = uses_rates or slow_limit ~= nil
local width = nil
if window ~= nil then width = window / buckets end

local function int(x) return string.format('%d', x) end

local FIELDS = {'state', 'generation', 'consecutive_failures', 'probes',
  'half_open_successes', 'opened_at', 'successes', 'failures', 'rejected', 'slow_calls',
  'last_failure_at', 'last_failure_type', 'window_head', 'window_calls',
  'window_failures', 'window_slow', 'count_calls', 'count_failures', 'count_slow'}
-- How each field is checked and written: text, a finite float, the probes' deadlines
-- (floats, oldest first, space-separated), an integer (window_head: an epoch, maybe
-- negative), or else a count (a non-negative integer).
local TEXT = {state = true, last_failure_type = true}
local FLOAT = {opened_at = true, last_failure_at = true}
local LIST = {probes = true}
local INTEGER = {window_head = true}
local FRESH = {state = 'closed', window_head = -1}
local STATES = {closed = true, open = true, half_open = true, forced_open = true,
  disabled = true}
local EXACT = 2 ^ 53  -- integers up to this are exact in a double, and in '%d'

local function refuse_key(key, field, what, value)
  -- Not written by stalwart: refuse, rather than guess (the breaker goes local).
  if value == nil then value = 'nothing' end
  return redis.error_reply('ERR stalwart: field ' .. field .. ' of ' .. key ..
    ' is not ' .. what .. ': ' .. string.sub(value, 1, 40))
end

local function refuse(field, what, value) return refuse_key(state_key, field, what, value) end

-- Readers of numbers as the script writes them ('%d', '%.17g'): the number, or nil
-- for anything else (what tonumber also takes: hexadecimal, spaces, NaN, infinities).
local function finite(value)
  if not (string.find(value, '^%-?%d+%.?%d*$') or string.find(value, '^%-?%d+%.?%d*e[-+]%d+$'))
  then
    return nil
  end
  local x = tonumber(value)
  if x == nil or not (x > -math.huge and x < math.huge) then return nil end
  return x
end

local function integer(value)
  if not string.find(value, '^%-?%d+$') then return nil end
  local x = tonumber(value)
  if x == nil or math.abs(x) >= EXACT then return nil end
  return x
end

local function count(value)
  if not string.find(value, '^%d+$') then return nil end
  local x = tonumber(value)
  if x == nil or x >= EXACT then return nil end
  return x
end

-- The whole hash: the fields above, and the successes Python recorded without this
-- script (HINCRBY ok:<generation> 1, for a generation it saw closed), gathered below.
local found, plain = {}, {}
do
  local all = redis.call('HGETALL', state_key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 3) == 'ok:' then
      plain[#plain + 1] = all[i]
      plain[#plain + 1] = all[i + 1]
    else
      found[all[i]] = all[i + 1]
    end
  end
end

local s = {}
local dirty = false
local fresh = found.state == nil
if fresh then
  -- Never used, or idle until its keys expired: a fresh, closed breaker, written at
  -- once so that the next admission finds it closed with a plain HMGET.
  redis.call('DEL', buckets_key, calls_key)
  dirty = true
end
for _, field in ipairs(FIELDS) do
  local value = found[field]
  if fresh then value = FRESH[field] end
  if LIST[field] then
    local times = {}
    for word in string.gmatch(value or '', '%S+') do
      local t = finite(word)
      if t == nil or (#times > 0 and t < times[#times]) then
        return refuse(field, 'a list of times, oldest first', value)
      end
      times[#times + 1] = t
    end
    value = times
  elseif value == nil then
    if not (TEXT[field] or FLOAT[field]) then value = 0 end
  elseif FLOAT[field] then
    local number = tonumber(value)
    if number == nil then return refuse(field, 'a number', value) end
    if finite(value) == nil then return refuse(field, 'a finite number', value) end
    value = number
  elseif not TEXT[field] then
    local number = tonumber(value)
    if number == nil then return refuse(field, 'a number', value) end
    if INTEGER[field] then
      if integer(value) == nil then return refuse(field, 'an integer', value) end
    elseif count(value) == nil then
      return refuse(field, 'a count', value)
    end
    value = number
  end
  s[field] = value
end
if not STATES[s.state] then return refuse('state', 'a breaker state', s.state) end
if s.state == 'open' and s.opened_at == nil then
  return refuse('opened_at', 'a time the breaker opened at', nil)
end
if (s.state == 'closed' or s.state == 'disabled') and s.opened_at ~= nil then
  return refuse('opened_at', 'absent, as the breaker is ' .. s.state, found.opened_at)
end
-- The script writes opened_at as now, and a probe's deadline as now + recovery; one
-- recovery timeout more allows for the server's clock stepping back. A later time
-- would hold the breaker open, or a probe's slot, until then: refused.
if s.opened_at ~= nil and s.opened_at > now + recovery then
  return refuse('opened_at', 'a time before now + recovery', found.opened_at)
end
for _, t in ipairs(s.probes) do
  if t > now + 2 * recovery then
    return refuse('probes', 'a list of times before now + 2 x recovery', found.probes)
  end
end

-- The plain successes: all counted; those of the current (closed) generation end its
-- run of consecutive failures. Every failure goes through this script, which gathers
-- them first, so they all came after the last failure it recorded: the same order as
-- the memory storage's. Late ones (of a generation since left) are counted only.
if #plain > 0 then
  local names = {}
  for i = 1, #plain, 2 do
    local field, n = plain[i], tonumber(plain[i + 1])
    if n == nil then return refuse(field, 'a number', plain[i + 1]) end
    if count(plain[i + 1]) == nil then return refuse(field, 'a count', plain[i + 1]) end
    s.successes = s.successes + n
    if s.state == 'closed' and string.sub(field, 4) == int(s.generation) and n > 0 then
      s.consecutive_failures = 0
    end
    names[#names + 1] = field
  end
  redis.call('HDEL', state_key, unpack(names))
  dirty = true
end

-- Python's float floor division (CPython's float_floor_div), for y > 0: the bucket
-- of a time must be int(now // width) exactly, which floor(x / y) is not always.
local function floor_div(x, y)
  local mod = math.fmod(x, y)
  local div = (x - mod) / y
  if mod < 0 then div = div - 1 end
  if div == 0 then return 0 end
  local floored = math.floor(div)
  if div - floored > 0.5 then floored = floored + 1 end
  return floored
end

-- The time window (stalwart.breaker.window.TimeWindow): buckets by epoch, the newest
-- at window_head, totals kept in the state hash.
local function bucket_fields(epoch)
  local k = int(epoch)
  return k .. ':calls', k .. ':failures', k .. ':slow'
end

local function advance(epoch)
  local head = s.window_head
  if epoch <= head then return end
  if epoch - head >= buckets then
    redis.call('DEL', buckets_key)
    s.window_calls, s.window_failures, s.window_slow = 0, 0, 0
  else
    for e = math.max(head - buckets + 1, -1), epoch - buckets do
      local c, f, sl = bucket_fields(e)
      local old = redis.call('HMGET', buckets_key, c, f, sl)
      if old[1] then
        local n = {}
        for i = 1, 3 do
          n[i] = count(old[i] or '0')
          if n[i] == nil then
            error(refuse_key(buckets_key, ({c, f, sl})[i], 'a count', old[i]))
          end
        end
        s.window_calls = s.window_calls - n[1]
        s.window_failures = s.window_failures - n[2]
        s.window_slow = s.window_slow - n[3]
        redis.call('HDEL', buckets_key, c, f, sl)
      end
    end
  end
  s.window_head = epoch
  dirty = true
end

local function time_counts()
  advance(floor_div(now, width))
  return s.window_calls, s.window_failures, s.window_slow
end

local function time_record(failed, slow)
  local epoch = floor_div(now, width)
  advance(epoch)
  -- Older than the window, or in a bucket never opened (before the first, after a
  -- clear): not counted, as TimeWindow.record.
  if epoch <= s.window_head - buckets or epoch < -1 then return end
  local c, f, sl = bucket_fields(epoch)
  redis.call('HINCRBY', buckets_key, c, 1)
  s.window_calls = s.window_calls + 1
  if failed then
    redis.call('HINCRBY', buckets_key, f, 1)
    s.window_failures = s.window_failures + 1
  end
  if slow then
    redis.call('HINCRBY', buckets_key, sl, 1)
    s.window_slow = s.window_slow + 1
  end
  dirty = true
end

-- The count window (stalwart.breaker.window.CountWindow): newest first.
local function count_record(failed, slow)
  local bits = 0
  if failed then bits = bits + 1 end
  if slow then bits = bits + 2 end
  redis.call('LPUSH', calls_key, int(bits))
  s.count_calls = s.count_calls + 1
  if failed then s.count_failures = s.count_failures + 1 end
  if slow then s.count_slow = s.count_slow + 1 end
  if s.count_calls > count_size then
    local popped = redis.call('RPOP', calls_key)
    local old = popped and count(popped)
    if popped and (old == nil or old > 3) then
      error(refuse_key(calls_key, 'its last item', 'an outcome (0 to 3)', popped))
    end
    old = old or 0
    s.count_calls = s.count_calls - 1
    if old % 2 == 1 then s.count_failures = s.count_failures - 1 end
    if old >= 2 then s.count_slow = s.count_slow - 1 end
  end
  dirty = true
end

local function clear_windows()
  redis.call('DEL', buckets_key, calls_key)
  s.window_head = -1
  s.window_calls, s.window_failures, s.window_slow = 0, 0, 0
  s.count_calls, s.count_failures, s.count_slow = 0, 0, 0
end

-- Transitions (Machine._move). The reason goes back as a code and numbers; Python
-- writes the text, so it reads exactly as the memory storage's.
local transition = nil

local function move(new, code, a, b)
  transition = {s.state, code, a or false, b or false}
  s.state = new
  s.generation = s.generation + 1
  s.probes = {}
  s.half_open_successes = 0
  if new == 'open' then
    s.opened_at = now
  elseif new == 'closed' or new == 'disabled' then
    s.opened_at = nil
    s.consecutive_failures = 0
    clear_windows()
  end
  dirty = true
end

local function retry_after()
  if s.state == 'open' and s.opened_at ~= nil then
    return num(math.max(s.opened_at + recovery - now, 0.0))
  end
  if s.state == 'forced_open' then return false end
  return num(0.0)
end

local function rate_counts()
  if count_size ~= nil then return s.count_calls, s.count_failures, s.count_slow end
  return time_counts()
end

local function check_rates()
  local calls, failures, slow = rate_counts()
  if calls < minimum_calls then return end
  if failure_rate ~= nil and failures / calls >= failure_rate then
    move('open', 'failure_rate', failures, calls)
  elseif slow_rate ~= nil and slow / calls >= slow_rate then
    move('open', 'slow_rate', slow, calls)
  end
end

local function record_closed(failed, slow)
  if width ~= nil then time_record(failed, slow) end
  if count_size ~= nil then count_record(failed, slow) end
  if failed then
    s.consecutive_failures = s.consecutive_failures + 1
  else
    s.consecutive_failures = 0
  end
  if failed and threshold ~= nil then
    if width == nil then
      if s.consecutive_failures >= threshold then
        move('open', 'consecutive', threshold)
        return
      end
    else
      local _, failures = time_counts()
      if failures >= threshold then
        move('open', 'within', threshold)
        return
      end
    end
  end
  if uses_rates then check_rates() end
end

local function record(generation, failed, duration, failure_type)
  local slow = slow_limit ~= nil and duration ~= nil and duration >= slow_limit
  if failed then
    s.failures = s.failures + 1
    s.last_failure_at = now
    s.last_failure_type = failure_type
  else
    s.successes = s.successes + 1
  end
  if slow then s.slow_calls = s.slow_calls + 1 end
  dirty = true
  if generation ~= s.generation then return end -- admitted before a change: counted only
  if s.state == 'closed' then
    record_closed(failed, slow)
  elseif s.state == 'half_open' then
    if #s.probes > 0 then table.remove(s.probes, 1) end
    if failed or (slow and slow_rate ~= nil) then
      move('open', 'probe failed')
      return
    end
    s.half_open_successes = s.half_open_successes + 1
    if s.half_open_successes >= success_threshold then move('closed', 'probes succeeded') end
  end
end

local token = false
local wait = false
local extra = nil

if op == 'admit' then
  local state = s.state
  if state == 'closed' or state == 'disabled' then
    token = s.generation
  else
    token = -1
    local go = true
    if state == 'open' then
      if now < s.opened_at + recovery then
        go = false
      else
        move('half_open', 'recovery timeout elapsed')
        state = 'half_open'
      end
    end
    if go and state == 'half_open' then
      -- Probe slots (Machine.admission): the expired ones freed, oldest first.
      local probes = s.probes
      while #probes > 0 and probes[1] <= now do table.remove(probes, 1) end
      if #probes < half_open_max then
        local deadline, at = now + recovery, #probes + 1
        while at > 1 and probes[at - 1] > deadline do at = at - 1 end
        table.insert(probes, at, deadline)
        token = s.generation
      end
    end
    if token == -1 then
      s.rejected = s.rejected + 1
      wait = retry_after()
    end
    dirty = true
  end
elseif op == 'record' then
  local failure_type = nil
  if (ARGV[4] or '') ~= '' then failure_type = string.sub(ARGV[4], 2) end
  record(tonumber(call_arg), ARGV[2] == '1', opt(ARGV[3]), failure_type)
elseif op == 'success' then
  -- Not the fast path's case (a closed breaker, the current generation): a probe's
  -- success, or a late one.
  record(tonumber(call_arg), false, nil, nil)
elseif op == 'release' then
  local generation = tonumber(call_arg)
  if generation == s.generation and s.state == 'half_open' and #s.probes > 0 then
    table.remove(s.probes, 1)
    dirty = true
  end
elseif op == 'change' then
  local which = call_arg
  if which == 'reset' then
    move('closed', 'reset')
  elseif which == 'force_open' then
    move('forced_open', 'forced open')
  elseif which == 'disable' then
    move('disabled', 'disabled')
  else
    return redis.error_reply('ERR stalwart: unknown operation ' .. which)
  end
elseif op == 'counts' then
  local calls, failures, slow
  if width ~= nil then
    calls, failures, slow = time_counts()
  elseif count_size ~= nil then
    calls, failures, slow = s.count_calls, s.count_failures, s.count_slow
  else
    calls, failures, slow = false, s.consecutive_failures, 0
  end
  if not needs_time then calls = false end
  local wait_now = false
  if s.state == 'open' or s.state == 'forced_open' then wait_now = retry_after() end
  local opened_at, failed_at = false, false
  if s.opened_at ~= nil then opened_at = num(s.opened_at) end
  if s.last_failure_at ~= nil then failed_at = num(s.last_failure_at) end
  extra = {s.successes, s.failures, s.rejected, s.slow_calls, s.consecutive_failures,
    calls, failures, slow, opened_at, failed_at, s.last_failure_type or false, wait_now}
elseif op == 'check' then
  -- While a breaker carries on locally, Redis is tried again with this: the whole state
  -- read and checked (above), the types of the window keys in use checked, everything
  -- written back. So a Redis that only reads (a replica), or a key that only some
  -- paths read, keeps the breaker local rather than letting it flap.
  local used = {}
  if width ~= nil then used[buckets_key] = 'hash' end
  if count_size ~= nil then used[calls_key] = 'list' end
  for key, kind in pairs(used) do
    local found = redis.call('TYPE', key).ok
    if found ~= 'none' and found ~= kind then
      return redis.error_reply('ERR stalwart: ' .. key .. ' holds a ' .. found ..
        ', not a ' .. kind)
    end
  end
  dirty = true
else
  return redis.error_reply('ERR stalwart: unknown op ' .. tostring(op))
end

if dirty then
  local values, gone = {}, {}
  for _, field in ipairs(FIELDS) do
    local value = s[field]
    if LIST[field] then
      if #value == 0 then
        value = nil
      else
        local words = {}
        for i, t in ipairs(value) do words[i] = num(t) end
        value = table.concat(words, ' ')
      end
    end
    if value == nil then
      gone[#gone + 1] = field
    else
      values[#values + 1] = field
      if TEXT[field] or LIST[field] then
        values[#values + 1] = value
      elseif FLOAT[field] then
        values[#values + 1] = num(value)
      else
        values[#values + 1] = int(value)
      end
    end
  end
  redis.call('HSET', state_key, unpack(values))
  if #gone > 0 then redis.call('HDEL', state_key, unpack(gone)) end
  local expiry = ttl
  if s.state == 'forced_open' or s.state == 'disabled' then expiry = held_ttl end
  redis.call('PEXPIRE', state_key, expiry)
  redis.call('PEXPIRE', buckets_key, expiry)
  redis.call('PEXPIRE', calls_key, expiry)
end

local reply = {s.state, s.generation, num(now), token, wait, false, false, false, false}
if transition ~= nil then
  reply[6], reply[7], reply[8], reply[9] = transition[1], transition[2], transition[3],
    transition[4]
end
if extra ~= nil then
  for i = 1, 12 do reply[9 + i] = extra[i] end
end
return reply
"""


_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()  # noqa: S324 - how Redis names scripts


# --- arguments ----------------------------------------------------------------------


def _float_arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _int_arg(value: int | None) -> str:
    return "" if value is None else str(value)


def _ttl_ms(seconds: float) -> str:
    return str(math.ceil(min(seconds, _MAX_TTL) * 1000))


def _config_arg(config: BreakerConfig) -> str:
    """The configuration's part of the script's ARGV 1, "|" after each field.

    As exact decimal strings. The fast paths read the first three: the TTL, the TTL
    while held (forced open or disabled), the recovery timeout. The time follows in
    ARGV 1: nothing (Redis server time), or the test clock's reading.
    """
    idle = 2 * max(config.window or 0.0, config.recovery_timeout) + IDLE_MARGIN
    fields = (
        _ttl_ms(idle),
        _ttl_ms(max(idle, HELD_TTL)),
        repr(config.recovery_timeout),
        _int_arg(config.failure_threshold),
        _float_arg(config.window),
        _float_arg(config.failure_rate),
        str(config.minimum_calls or DEFAULT_MINIMUM_CALLS),
        _int_arg(config.rate_window_calls),
        _float_arg(config.slow_call_duration),
        _float_arg(config.slow_call_rate),
        str(config.half_open_max_calls),
        str(config.success_threshold),
        str(DEFAULT_BUCKETS),
    )
    return "".join(f"{field}|" for field in fields)


# --- replies ------------------------------------------------------------------------


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional_float(value: object) -> float | None:
    return None if value is None else float(_text(value))


class _Reply(NamedTuple):
    """The script's full answer, in Python's terms."""

    state: State
    generation: int
    now: float
    token: int
    retry_after: float | None
    transition: Transition | None
    counts: Counts | None


def _parse(raw: Any, config: BreakerConfig, *, counts: bool = False) -> _Reply:
    """Read a full reply of the script (with the counters, if `counts`).

    Raises:
        ValueError, TypeError, LookupError, AttributeError, ArithmeticError: `raw` is
            not such a reply (a value in Redis that the script did not write, say).
    """
    state = State(_text(raw[0]))
    generation = int(raw[1])
    now = float(_text(raw[2]))
    token = REJECTED if raw[3] is None else int(raw[3])
    transition = None
    if raw[5] is not None:
        a = None if raw[7] is None else int(raw[7])
        b = None if raw[8] is None else int(raw[8])
        reason = _reason(config, _text(raw[6]), a, b)
        transition = Transition(State(_text(raw[5])), state, reason, now, generation)
    return _Reply(
        state,
        generation,
        now,
        token,
        _optional_float(raw[4]),
        transition,
        _parse_counts(raw, state, generation, now) if counts else None,
    )


def _parse_counts(raw: Any, state: State, generation: int, now: float) -> Counts:
    return Counts(
        state=state,
        generation=generation,
        successes=int(raw[9]),
        failures=int(raw[10]),
        rejected=int(raw[11]),
        slow_calls=int(raw[12]),
        consecutive_failures=int(raw[13]),
        window_calls=None if raw[14] is None else int(raw[14]),
        window_failures=int(raw[15]),
        window_slow=int(raw[16]),
        opened_at=_optional_float(raw[17]),
        last_failure_at=_optional_float(raw[18]),
        last_failure_type=None if raw[19] is None else _text(raw[19]),
        retry_after=_optional_float(raw[20]),
        now=now,
    )


def _reason(config: BreakerConfig, code: str, a: int | None, b: int | None) -> str:
    """The text of a transition's reason, as `stalwart.breaker.machine` writes it."""
    if code == "consecutive":
        return f"{a} consecutive failures"
    if code == "within":
        return f"{a} failures within {config.window:g}s"
    if code in {"failure_rate", "slow_rate"}:
        if a is None or b is None:
            raise ValueError(f"reason {code!r} without its numbers")
        kind = "failure rate" if code == "failure_rate" else "slow call rate"
        return f"{kind} {a / b:.0%} over {b} calls"
    return code


def _trouble(exc: BaseException, name: str) -> str:
    """What went wrong for breaker `name`, for the warning's first words."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        return f"Redis is unavailable for breaker {name!r}"
    if isinstance(exc, ResponseError):  # WRONGTYPE, READONLY, the script refusing a value
        return f"Redis answered breaker {name!r} with an error"
    if isinstance(exc, RedisError):
        return f"Redis failed for breaker {name!r}"
    return f"Redis sent breaker {name!r} a reply that cannot be read"


# --- validation ---------------------------------------------------------------------


def _prefix(value: object) -> str:
    if not isinstance(value, str) or not value or "{" in value or "}" in value:
        raise ValueError(f"prefix must be a non-empty string without {{ or }}, got {value!r}")
    return value


def _clock(value: object) -> Callable[[], float] | None:
    if value is not None and not callable(value):
        raise TypeError(f"clock must be a callable returning seconds, got {value!r}")
    return value


class _Options:
    """The validated options both storages share."""

    __slots__ = (
        "clock",
        "max_staleness",
        "owns_client",
        "prefix",
        "retry_interval",
        "socket_timeout",
    )

    def __init__(
        self,
        *,
        client: object,
        prefix: object,
        max_staleness: float | timedelta | None,
        socket_timeout: float | timedelta,
        retry_interval: float | timedelta,
        clock: object,
    ) -> None:
        self.prefix = _prefix(prefix)
        self.max_staleness = (
            None
            if max_staleness is None
            else _validate.seconds("max_staleness", max_staleness, positive=True)
        )
        self.socket_timeout = _validate.seconds("socket_timeout", socket_timeout, positive=True)
        self.retry_interval = _validate.seconds("retry_interval", retry_interval)
        self.clock = _clock(clock)
        self.owns_client = client is None or isinstance(client, str)


# --- the state both colours share ---------------------------------------------------


class _RedisStateBase:
    """What `RedisState` and `AsyncRedisState` share, without I/O.

    The script's commands and replies, the local cache, and the local state that
    stands in while Redis is unavailable.
    """

    __slots__ = (
        "_admit_command",
        "_cached",
        "_clock",
        "_closed",
        "_config_arg",
        "_head",
        "_hook",
        "_keys",
        "_last",
        "_local",
        "_lock",
        "_max_staleness",
        "_next_try",
        "_outages",
        "_peek_command",
        "_plain_until",
        "_retry_interval",
        "_simple_success",
        "config",
        "fast_generation",
        "name",
        "prefix",
    )

    def __init__(
        self,
        options: _Options,
        encode: Callable[[str], bytes],
        name: str,
        config: BreakerConfig,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.prefix = options.prefix
        self.config = config
        self.fast_generation = REJECTED
        """Always `REJECTED`: every admission asks `admit` (which may answer from the
        local cache)."""
        base = f"{options.prefix}:{{{name}}}:"
        self._keys = (f"{base}state", f"{base}buckets", f"{base}calls")
        # Every command starts alike; its constant parts are encoded once, here, so
        # that redis-py has little left to do per call.
        self._head: tuple[str | bytes, ...] = (
            "EVALSHA",
            _SHA.encode(),
            b"3",
            *map(encode, self._keys),
        )
        self._config_arg = encode(_config_arg(config))
        self._admit_command = (*self._head, b"admit||" + self._config_arg)
        self._peek_command = ("HMGET", self._head[3], b"state", b"generation")
        self._closed = False
        """Whether the last answer said closed: the next admission then reads the state
        with `_peek_command` first (see `_closed_generation`)."""
        self._simple_success = not (config.uses_rates or config.slow_call_duration is not None)
        """Whether a success only needs counting (as `_plain_success`, or by the
        script's "success"), or must be recorded with the time, as the memory storage
        does ("record")."""
        self._plain_until = 0.0
        """Until when (monotonic) `_plain_success` may skip the script; see
        `PLAIN_SUCCESS_REFRESH`."""
        self._hook = options.clock
        self._clock = clock
        self._max_staleness = options.max_staleness
        self._retry_interval = options.retry_interval
        self._lock = threading.Lock()
        self._local: MemoryState | None = None
        self._next_try = 0.0
        self._outages = 0
        """Outages seen so far: a reply resynchronises only if its request was sent
        during the current outage, not before it began (a reply still in flight)."""
        self._cached: tuple[int, float] = (REJECTED, 0.0)
        """``(generation, monotonic time)`` of the last answer while calls flowed."""
        self._last: tuple[State, int] = (State.CLOSED, 0)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} prefix={self.prefix!r}>"

    @property
    def keys(self) -> tuple[str, str, str]:
        """The breaker's keys: its state hash, time-window buckets and count window."""
        return self._keys

    @property
    def degraded(self) -> bool:
        """Whether Redis is unavailable and a local state stands in for it."""
        return self._local is not None

    # -- commands -----------------------------------------------------------------

    def _command(self, op: bytes, arg: str = "", *extra: str) -> tuple[str | bytes, ...]:
        packed = b"%b|%b|%b" % (op, arg.encode(), self._config_arg)
        if self._hook is not None:
            packed += repr(float(self._hook())).encode()
        return (*self._head, packed, *extra)

    def _admit(self) -> tuple[str | bytes, ...]:
        return self._admit_command if self._hook is None else self._command(b"admit")

    def _plain_success(self, generation: int) -> tuple[str | bytes, ...] | None:
        """The command that counts a success without the script, or None: use it.

        ``HINCRBY <state> ok:<generation> 1``, when only counting is needed and the
        last answer from Redis said `generation` is closed (a generation never changes
        state: a transition starts a new one). The script gathers these fields before
        anything else it does, so the counts, and the run of failures that a success
        in the current generation ends, are exactly the memory storage's; a success of
        a generation since left is counted only, as there. Not while Redis is
        unavailable, nor once `PLAIN_SUCCESS_REFRESH` has passed since the last success
        sent through the script, which refreshes the TTL.
        """
        if (
            self._simple_success
            and self._last[1] == generation
            and self._last[0] is State.CLOSED
            and self._local is None
            and time.monotonic() < self._plain_until
        ):
            return ("HINCRBY", self._head[3], b"ok:%d" % generation, b"1")
        return None

    def _success(self, generation: int) -> tuple[str | bytes, ...]:
        if self._simple_success:
            self._plain_until = time.monotonic() + PLAIN_SUCCESS_REFRESH
            return self._command(b"success", str(generation))
        return self._command(b"record", str(generation), "0")

    def _record(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> tuple[str | bytes, ...]:
        return self._command(
            b"record",
            str(generation),
            "1" if failed else "0",
            _float_arg(duration),
            "" if failure_type is None else f"={failure_type}",
        )

    # -- replies ------------------------------------------------------------------

    def _read(self, raw: Any, *, fast: bool = False, counts: bool = False) -> int | _Reply:
        """The reply in Python's terms; raises one of `_UNREADABLE` if it has none.

        A bare generation means closed: a fast path answered (as admit, release and
        success may, if `fast`). Anything else must be a full reply.
        """
        if fast and type(raw) is int:
            return raw
        return _parse(raw, self.config, counts=counts)

    @staticmethod
    def _closed_generation(head: Any) -> int | None:
        """The generation, if `head` (the reply to `_peek_command`) says closed.

        A closed breaker admits every call in its generation and writes nothing (as
        the script's fast path does), so one HMGET, cheaper than the script, decides.
        Else None: the script decides (a closed breaker's key is never missing).
        """
        state, generation = head
        if (
            state in _CLOSED_REPLIES
            and generation is not None
            and generation.isascii()
            and generation.isdigit()
            and len(generation) <= _MAX_DIGITS
        ):
            return int(generation)
        return None

    def _cached_generation(self) -> int:
        """The generation to admit a call in without asking Redis, or `REJECTED`."""
        if self._max_staleness is None:
            return REJECTED
        generation, at = self._cached
        if generation >= 0 and time.monotonic() - at < self._max_staleness:
            return generation
        return REJECTED

    def _standing_in(self) -> MemoryState | None:
        """The local state to use instead of Redis now, or None to ask Redis."""
        local = self._local
        if local is None:
            return None
        with self._lock:
            now = time.monotonic()
            if now < self._next_try:
                return local
            self._next_try = now + self._retry_interval  # this caller tries Redis
            return None

    def _failed(self, exc: BaseException) -> MemoryState:
        """Redis failed, or its reply made no sense: carry on locally.

        And say so, once per outage.
        """
        with self._lock:
            self._next_try = time.monotonic() + self._retry_interval
            self._cached = (REJECTED, 0.0)
            self._closed = False
            local = self._local
            if local is None:
                local = self._local = _local_state(self.config, self._clock)
                self._outages += 1
                logger.warning(
                    "%s (%s: %s); carrying on with local state until Redis answers again",
                    _trouble(exc, self.name),
                    type(exc).__name__,
                    exc,
                    extra={"breaker": self.name, "prefix": self.prefix},
                )
            return local

    def _answered(self, reply: int | _Reply, outages: int) -> None:
        """Refresh the cache from a readable reply; leave local mode if in it.

        `outages` is what `_outages` was when the request was sent: a reply to a
        request sent before the current outage began says nothing about recovery.
        """
        if isinstance(reply, int):
            state, generation = State.CLOSED, reply
        else:
            state, generation = reply.state, reply.generation
        if self._local is not None:
            with self._lock:
                if self._local is not None:
                    if outages != self._outages:
                        return  # sent before the outage: no news of recovery
                    self._local = None
                    logger.info(
                        "Redis answers again for breaker %r; using the shared state",
                        self.name,
                        extra={"breaker": self.name, "prefix": self.prefix},
                    )
        if self._max_staleness is not None:
            flowing = state is State.CLOSED or state is State.DISABLED
            self._cached = (generation if flowing else REJECTED, time.monotonic())
        self._closed = state is State.CLOSED
        self._last = (state, generation)

    @staticmethod
    def _check_operation(operation: str) -> None:
        if operation not in _OPERATIONS:
            raise ValueError(f"operation must be reset, force_open or disable, got {operation!r}")


def _local_state(config: BreakerConfig, clock: Callable[[], float]) -> MemoryState:
    """A fresh local state whose generations never meet the shared ones."""
    local = MemoryState(config, clock)
    machine = local.machine
    machine.generation = machine.fast_generation = LOCAL_GENERATIONS
    if machine.simple_generation >= 0:
        machine.simple_generation = LOCAL_GENERATIONS
    local.fast_generation = LOCAL_GENERATIONS
    return local


def _degraded(counts: Counts) -> Counts:
    return replace(counts, degraded=True)


def _full(reply: int | _Reply) -> _Reply:
    """`reply`, which only a fast path answers with a bare generation."""
    assert not isinstance(reply, int)  # noqa: S101 - _read lets ints through only if fast
    return reply


# --- sync -----------------------------------------------------------------------------


class RedisState(_RedisStateBase):
    """One breaker's state in Redis, through a blocking client (see `RedisStorage`).

    Implements `stalwart.breaker.BreakerState`. The ``_async`` twins run the blocking
    call in a worker thread (a cached admission needs no thread).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_client",)

    io = True  # async code must use the twins, which keep the round trip off the loop

    def __init__(
        self,
        storage: RedisStorage,
        name: str,
        config: BreakerConfig,
        clock: Callable[[], float],
    ) -> None:
        client = storage.client
        super().__init__(storage._options, client.get_encoder().encode, name, config, clock)  # noqa: SLF001
        self._client = client

    def _execute(self, command: tuple[str | bytes, ...]) -> Any:
        """One EVALSHA (after loading the script, if Redis does not have it)."""
        client = self._client
        try:
            return client.execute_command(*command)  # type: ignore[no-untyped-call]
        except NoScriptError:
            client.script_load(_SCRIPT)
            return client.execute_command(*command)  # type: ignore[no-untyped-call]

    def _recheck(self) -> MemoryState | None:
        """While local: the local state, or None once Redis is back.

        Back means: it is time to try Redis again, and a "check" (the whole state read,
        checked and written back) was answered.
        """
        local = self._standing_in()
        if local is not None:
            return local
        outages = self._outages
        try:
            reply = self._read(self._execute(self._command(b"check")))
        except _FAILURES as exc:
            return self._failed(exc)
        self._answered(reply, outages)
        return self._local

    def _call(
        self, command: tuple[str | bytes, ...], *, fast: bool = False, counts: bool = False
    ) -> int | _Reply | MemoryState:
        if self._local is not None:
            local = self._recheck()
            if local is not None:
                return local
        outages = self._outages
        try:
            reply = self._read(self._execute(command), fast=fast, counts=counts)
        except _FAILURES as exc:
            return self._failed(exc)
        self._answered(reply, outages)
        return reply

    def _peek(self) -> int | MemoryState | None:
        """Read a closed breaker's generation (one HMGET); None: ask the script.

        While Redis is unavailable, the local state instead.
        """
        if self._local is not None:
            local = self._recheck()
            if local is not None:
                return local
        outages = self._outages
        try:
            generation = self._closed_generation(
                self._client.execute_command(*self._peek_command)  # type: ignore[no-untyped-call]
            )
        except _FAILURES as exc:
            return self._failed(exc)
        if generation is not None:
            self._answered(generation, outages)
        return generation

    def admit(self) -> tuple[int, float | None, Transition | None]:
        """See `stalwart.breaker.BreakerState.admit`."""
        generation = self._cached_generation()
        if generation >= 0:
            return generation, None, None
        if self._closed:
            peeked = self._peek()
            if isinstance(peeked, int):
                return peeked, None, None
            if isinstance(peeked, MemoryState):
                return peeked.admit()
        reply = self._call(self._admit(), fast=True)
        if isinstance(reply, int):
            return reply, None, None
        if isinstance(reply, MemoryState):
            return reply.admit()
        return reply.token, reply.retry_after, reply.transition

    def record(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """See `stalwart.breaker.BreakerState.record`."""
        reply = self._call(self._record(generation, failed, duration, failure_type))
        if isinstance(reply, MemoryState):
            return reply.record(generation, failed, duration, failure_type)
        return _full(reply).transition

    def record_success(self, generation: int) -> Transition | None:
        """See `stalwart.breaker.BreakerState.record_success`."""
        plain = self._plain_success(generation)
        if plain is not None:
            try:
                self._client.execute_command(*plain)  # type: ignore[no-untyped-call]
            except _FAILURES as exc:
                return self._failed(exc).record_success(generation)
            return None
        reply = self._call(self._success(generation), fast=True)
        if isinstance(reply, int):
            return None
        if isinstance(reply, MemoryState):
            return reply.record_success(generation)
        return reply.transition

    def release(self, generation: int) -> None:
        """See `stalwart.breaker.BreakerState.release`."""
        reply = self._call(self._command(b"release", str(generation)), fast=True)
        if isinstance(reply, MemoryState):
            reply.release(generation)

    def change(self, operation: str) -> Transition:
        """See `stalwart.breaker.BreakerState.change`."""
        self._check_operation(operation)
        reply = self._call(self._command(b"change", operation))
        if isinstance(reply, MemoryState):
            return reply.change(operation)
        transition = _full(reply).transition
        assert transition is not None  # noqa: S101 - every change is a transition
        return transition

    def counts(self) -> Counts:
        """See `stalwart.breaker.BreakerState.counts` (one round trip)."""
        reply = self._call(self._command(b"counts"), counts=True)
        if isinstance(reply, MemoryState):
            return _degraded(reply.counts())
        counts = _full(reply).counts
        assert counts is not None  # noqa: S101 - read with counts=True
        return counts

    async def admit_async(self) -> tuple[int, float | None, Transition | None]:
        """`admit` in a worker thread (or at once, from the cache)."""
        generation = self._cached_generation()
        if generation >= 0:
            return generation, None, None
        return await _in_thread(self.admit)

    async def record_async(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """`record` in a worker thread."""
        return await _in_thread(partial(self.record, generation, failed, duration, failure_type))

    async def record_success_async(self, generation: int) -> Transition | None:
        """`record_success` in a worker thread."""
        return await _in_thread(partial(self.record_success, generation))

    async def release_async(self, generation: int) -> None:
        """`release` in a worker thread, shielded from cancellation.

        The breaker releases a cancelled call's permit from inside the cancelled scope:
        unshielded, the hop to the thread would be cancelled and the permit lost.
        """
        from anyio import CancelScope  # noqa: PLC0415 - anyio only for async callers

        with CancelScope(shield=True):
            await _in_thread(partial(self.release, generation))

    async def change_async(self, operation: str) -> Transition:
        """`change` in a worker thread."""
        return await _in_thread(partial(self.change, operation))

    async def counts_async(self) -> Counts:
        """`counts` in a worker thread."""
        return await _in_thread(self.counts)


async def _in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a worker thread of the running event loop (asyncio or trio)."""
    from anyio import to_thread  # noqa: PLC0415 - anyio only for async callers

    return await to_thread.run_sync(fn)


def _client_retry(retry_class: type[Retry | redis.asyncio.retry.Retry]) -> Any:
    """The retry policy of a client made from a URL: once, at once, after a connection error.

    A connection error is retried (a stale pooled connection, a restarted server); a
    timeout is not: a Redis that hangs costs the call one `socket_timeout`, not two.
    """
    return retry_class(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class RedisStorage:
    """Breaker state in Redis, shared by every process that uses the same prefix.

    For code that blocks; async code uses `AsyncRedisStorage` (or this one, through
    worker threads). Pass it as a breaker's or a registry's ``storage=``.

    Args:
        client: A `redis.Redis` (or `redis.cluster.RedisCluster`) client, used as it
            is configured; or a URL such as ``"redis://host:6379/0"``, from which the
            storage makes a client with `socket_timeout` and one immediate retry after
            a connection error (none after a timeout); ``None`` for `DEFAULT_URL`.
        prefix: The first part of every key (no ``{`` or ``}``). Breakers share
            state when they have the same name and prefix; use a prefix per
            application or environment.
        max_staleness: Let a breaker that Redis last reported closed or disabled admit
            calls without asking, for at most this many seconds (a number or a
            `timedelta`) after that answer. ``None`` (the default) asks on every call.
        socket_timeout: How long a client made from a URL waits to connect or for an
            answer before the breaker goes local (seconds, default 0.25).
        retry_interval: While Redis is unavailable, try it again at most this often
            (seconds, default 1; 0 tries on every call).
        clock: For tests: the time the script uses, instead of Redis server time
            (seconds on any scale, the same for every process sharing the breaker).

    Raises:
        ValueError: `prefix` or a duration is invalid (named in the message, with the
            value).
        TypeError: `client` is not a sync Redis client nor a URL, or `clock` is not
            callable.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_options", "client")

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster | str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_staleness: float | timedelta | None = None,
        socket_timeout: float | timedelta = DEFAULT_SOCKET_TIMEOUT,
        retry_interval: float | timedelta = DEFAULT_RETRY_INTERVAL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        options = _Options(
            client=client,
            prefix=prefix,
            max_staleness=max_staleness,
            socket_timeout=socket_timeout,
            retry_interval=retry_interval,
            clock=clock,
        )
        if client is None or isinstance(client, str):
            client = redis.Redis.from_url(
                DEFAULT_URL if client is None else client,
                socket_timeout=options.socket_timeout,
                socket_connect_timeout=options.socket_timeout,
                retry=_client_retry(Retry),
            )
        elif not isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
            raise TypeError(
                f"client must be a redis.Redis client or a URL, got {client!r}"
                " (use AsyncRedisStorage for redis.asyncio clients)"
            )
        self._options = options
        self.client = client

    def __repr__(self) -> str:
        return f"<RedisStorage prefix={self.prefix!r}>"

    @property
    def prefix(self) -> str:
        """The first part of every key."""
        return self._options.prefix

    def bind(self, name: str, config: BreakerConfig, clock: Callable[[], float]) -> RedisState:
        """Return the state of breaker `name` (no I/O: the keys are made on first use).

        `clock` is the breaker's own clock: the local state that stands in while Redis
        is unavailable reads it.
        """
        return RedisState(self, name, config, clock)

    def close(self) -> None:
        """Close the client if the storage made it (from a URL); else leave it be."""
        if self._options.owns_client:
            self.client.close()


# --- async ----------------------------------------------------------------------------


class AsyncRedisState(_RedisStateBase):
    """One breaker's state in Redis, through an asyncio client (see `AsyncRedisStorage`).

    Implements `stalwart.breaker.BreakerState` for async code: the ``_async`` methods do
    the I/O. The sync methods do none: `counts` returns what the last answer said (or the
    local state while Redis is unavailable), and the others raise `RuntimeError`.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_client", "_known")

    io = True

    def __init__(
        self,
        storage: AsyncRedisStorage,
        name: str,
        config: BreakerConfig,
        clock: Callable[[], float],
    ) -> None:
        client = storage.client
        super().__init__(storage._options, client.get_encoder().encode, name, config, clock)  # noqa: SLF001
        self._client = client
        self._known = MemoryState(config, clock).counts()

    async def _execute(self, command: tuple[str | bytes, ...]) -> Any:
        """One EVALSHA (after loading the script, if Redis does not have it)."""
        client = self._client
        try:
            return await client.execute_command(*command)
        except NoScriptError:
            await client.script_load(_SCRIPT)
            return await client.execute_command(*command)

    async def _recheck(self) -> MemoryState | None:
        """While local: the local state, or None once Redis is back.

        Back means: it is time to try Redis again, and a "check" (the whole state read,
        checked and written back) was answered.
        """
        local = self._standing_in()
        if local is not None:
            return local
        outages = self._outages
        try:
            reply = self._read(await self._execute(self._command(b"check")))
        except _FAILURES as exc:
            return self._failed(exc)
        self._answered(reply, outages)
        return self._local

    async def _call(
        self, command: tuple[str | bytes, ...], *, fast: bool = False, counts: bool = False
    ) -> int | _Reply | MemoryState:
        if self._local is not None:
            local = await self._recheck()
            if local is not None:
                return local
        outages = self._outages
        try:
            reply = self._read(await self._execute(command), fast=fast, counts=counts)
        except _FAILURES as exc:
            return self._failed(exc)
        self._answered(reply, outages)
        return reply

    async def _peek(self) -> int | MemoryState | None:
        """Read a closed breaker's generation (one HMGET); None: ask the script.

        While Redis is unavailable, the local state instead.
        """
        if self._local is not None:
            local = await self._recheck()
            if local is not None:
                return local
        outages = self._outages
        try:
            generation = self._closed_generation(
                await self._client.execute_command(*self._peek_command)
            )
        except _FAILURES as exc:
            return self._failed(exc)
        if generation is not None:
            self._answered(generation, outages)
        return generation

    def _sync(self, method: str) -> RuntimeError:
        return RuntimeError(
            f"breaker {self.name!r} keeps its state in an AsyncRedisStorage: call"
            f" {method}_async from async code (or use RedisStorage in sync code)"
        )

    def admit(self) -> tuple[int, float | None, Transition | None]:
        """Raise `RuntimeError`: use `admit_async`."""
        raise self._sync("admit")

    def record(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """Raise `RuntimeError`: use `record_async`."""
        del generation, failed, duration, failure_type
        raise self._sync("record")

    def record_success(self, generation: int) -> Transition | None:
        """Raise `RuntimeError`: use `record_success_async`."""
        del generation
        raise self._sync("record_success")

    def release(self, generation: int) -> None:
        """Raise `RuntimeError`: use `release_async`."""
        del generation
        raise self._sync("release")

    def change(self, operation: str) -> Transition:
        """Raise `RuntimeError`: use `change_async`."""
        del operation
        raise self._sync("change")

    def counts(self) -> Counts:
        """The counts as of the last answer from Redis, without I/O.

        The state and generation are those of the last answer of any kind; the
        counters those of the last `counts_async`. While Redis is unavailable, the
        local state's counts (``degraded=True``).
        """
        local = self._local
        if local is not None:
            return _degraded(local.counts())
        known = self._known
        state, generation = self._last
        if (known.state, known.generation) != (state, generation):
            known = replace(known, state=state, generation=generation)
        return known

    async def admit_async(self) -> tuple[int, float | None, Transition | None]:
        """See `stalwart.breaker.BreakerState.admit`."""
        generation = self._cached_generation()
        if generation >= 0:
            return generation, None, None
        if self._closed:
            peeked = await self._peek()
            if isinstance(peeked, int):
                return peeked, None, None
            if isinstance(peeked, MemoryState):
                return peeked.admit()
        reply = await self._call(self._admit(), fast=True)
        if isinstance(reply, int):
            return reply, None, None
        if isinstance(reply, MemoryState):
            return reply.admit()
        return reply.token, reply.retry_after, reply.transition

    async def record_async(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Transition | None:
        """See `stalwart.breaker.BreakerState.record`."""
        reply = await self._call(self._record(generation, failed, duration, failure_type))
        if isinstance(reply, MemoryState):
            return reply.record(generation, failed, duration, failure_type)
        return _full(reply).transition

    async def record_success_async(self, generation: int) -> Transition | None:
        """See `stalwart.breaker.BreakerState.record_success`."""
        plain = self._plain_success(generation)
        if plain is not None:
            try:
                await self._client.execute_command(*plain)
            except _FAILURES as exc:
                return self._failed(exc).record_success(generation)
            return None
        reply = await self._call(self._success(generation), fast=True)
        if isinstance(reply, int):
            return None
        if isinstance(reply, MemoryState):
            return reply.record_success(generation)
        return reply.transition

    async def release_async(self, generation: int) -> None:
        """See `stalwart.breaker.BreakerState.release`."""
        reply = await self._call(self._command(b"release", str(generation)), fast=True)
        if isinstance(reply, MemoryState):
            reply.release(generation)

    async def change_async(self, operation: str) -> Transition:
        """See `stalwart.breaker.BreakerState.change`."""
        self._check_operation(operation)
        reply = await self._call(self._command(b"change", operation))
        if isinstance(reply, MemoryState):
            return reply.change(operation)
        transition = _full(reply).transition
        assert transition is not None  # noqa: S101 - every change is a transition
        return transition

    async def counts_async(self) -> Counts:
        """See `stalwart.breaker.BreakerState.counts` (one round trip)."""
        reply = await self._call(self._command(b"counts"), counts=True)
        if isinstance(reply, MemoryState):
            return _degraded(reply.counts())
        counts = _full(reply).counts
        assert counts is not None  # noqa: S101 - read with counts=True
        self._known = counts
        return counts


class AsyncRedisStorage:
    """Breaker state in Redis for asyncio code, shared like `RedisStorage`'s.

    Takes the same arguments as `RedisStorage`, with a `redis.asyncio.Redis` (or
    `redis.asyncio.cluster.RedisCluster`) client. Breakers on it must be driven from
    async code (the decorator on ``async def``, `call_async`, ``async with``);
    `stats()` in sync code shows the state of the last answer, `stats_async()` reads
    Redis. redis.asyncio runs on asyncio only (not trio).

    Raises:
        ValueError: `prefix` or a duration is invalid (named in the message, with the
            value).
        TypeError: `client` is not an asyncio Redis client nor a URL, or `clock` is not
            callable.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_options", "client")

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_staleness: float | timedelta | None = None,
        socket_timeout: float | timedelta = DEFAULT_SOCKET_TIMEOUT,
        retry_interval: float | timedelta = DEFAULT_RETRY_INTERVAL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        options = _Options(
            client=client,
            prefix=prefix,
            max_staleness=max_staleness,
            socket_timeout=socket_timeout,
            retry_interval=retry_interval,
            clock=clock,
        )
        if client is None or isinstance(client, str):
            client = redis.asyncio.Redis.from_url(
                DEFAULT_URL if client is None else client,
                socket_timeout=options.socket_timeout,
                socket_connect_timeout=options.socket_timeout,
                retry=_client_retry(redis.asyncio.retry.Retry),
            )
        elif not isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
            raise TypeError(
                f"client must be a redis.asyncio.Redis client or a URL, got {client!r}"
                " (use RedisStorage for sync clients)"
            )
        self._options = options
        self.client = client

    def __repr__(self) -> str:
        return f"<AsyncRedisStorage prefix={self.prefix!r}>"

    @property
    def prefix(self) -> str:
        """The first part of every key."""
        return self._options.prefix

    def bind(
        self, name: str, config: BreakerConfig, clock: Callable[[], float]
    ) -> AsyncRedisState:
        """Return the state of breaker `name` (no I/O: the keys are made on first use)."""
        return AsyncRedisState(self, name, config, clock)

    async def aclose(self) -> None:
        """Close the client if the storage made it (from a URL); else leave it be."""
        if self._options.owns_client:
            await self.client.aclose()
