-- stalwart's circuit breaker, in Redis: the state machine of stalwart.breaker.machine
-- over three keys, run atomically. Keep the two equal: tests/test_contrib_redis.py drives
-- both with the same events and compares them.
--
-- KEYS: the state hash, the time window's buckets (a hash), the count window (a list).
-- Besides the fields listed in FIELDS below, the state hash holds:
--   closed_generation  the generation while the breaker is closed, absent otherwise: an
--                      admission by a process that last saw it closed reads this field
--                      alone (HGET) instead of calling the script;
--   ok:<generation>    successes counted without the script (HINCRBY), for a
--                      generation the process saw closed; the full path below gathers
--                      them first, and the short path for a closed breaker's success
--                      leaves them to it.
--
-- ARGV: 1 one "|"-separated string (each argument costs redis-py time to encode): the
-- operation (admit, success, record, release, change, counts, check); the generation
-- of the call (the operator's operation for "change"), or ""; the configuration (as
-- _script.config_arg lists it); and the time, or "" for Redis server time. Then, for
-- "record" only: 2 "1" if the call failed, 3 its duration or "", 4 "=" and the
-- failure's type or "".
--
-- Reply: for a closed breaker's admission, release or counted success, the generation
-- alone (an integer). Else one string (one element is cheaper for a client to read than
-- an array): "|"-separated state, generation, now, admitted generation or -1 (rejected),
-- retry_after, the transition's old state, reason code, reason numbers a and b; for
-- "counts" the counters after those, and last "=" and the failure's type (the only text
-- that could hold a "|"). An empty field stands for None; floats are written "%.17g"
-- (the shortest exact form would be nicer, but Lua 5.1 has none), integers "%d". A key
-- holding what the script did not write gets an error reply.

local state_key = KEYS[1]
local op, call_arg, ttl = string.match(ARGV[1], '^([^|]*)|([^|]*)|([^|]*)|')

local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end

local function server_time()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Fast paths, before anything else, for what most calls do: a closed breaker admitting,
-- releasing, or counting a success that only needs counting (Python asks for "success"
-- only when no rate and no slow-call limit is configured; else it sends "record"), and
-- an open breaker rejecting. Four fields read, at most three commands written, and
-- only what they need of the configuration.
if op == 'admit' or op == 'success' or op == 'release' then
  local third = 'consecutive_failures'
  if op == 'admit' then third = 'opened_at' end
  local head = redis.call('HMGET', state_key, 'state', 'generation', third,
    'closed_generation')
  local state, generation = head[1], nil
  -- Only a generation the script could have written; anything else: the full path,
  -- which checks every field (and refuses what it did not write).
  if head[2] and #head[2] <= 15 and string.find(head[2], '^%d+$') then
    generation = tonumber(head[2])
  end
  if state == 'closed' and generation then
    -- An admission returns at once only if the next one can be a plain HGET of
    -- closed_generation; else the full path writes it.
    if op == 'release' or (op == 'admit' and head[4] == head[2]) then return generation end
    if call_arg == head[2] and (head[3] == '0' or string.find(head[3] or '0', '^%d+$')) then
      redis.call('HINCRBY', state_key, 'successes', 1)
      if head[3] ~= '0' then redis.call('HSET', state_key, 'consecutive_failures', '0') end
      redis.call('PEXPIRE', state_key, ttl)
      return generation
    end
  end
  if op == 'admit' and generation and (state == 'open' or state == 'forced_open') then
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
      return state .. '|' .. int(generation) .. '|' .. num(now) .. '|-1|' .. (wait or '') ..
        '||||'
    end
  end
end

local buckets_key, calls_key = KEYS[2], KEYS[3]

-- ARGV[1] unpacked: the operation, its argument, the configuration as config_arg
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
-- closed_generation follows the state: the generation while closed (written below if
-- missing), else absent.
local closed_generation = found.closed_generation
if s.state == 'closed' then
  if closed_generation == nil then
    dirty = true
  elseif closed_generation ~= int(s.generation) then
    return refuse('closed_generation', 'the generation, ' .. int(s.generation),
      closed_generation)
  end
elseif closed_generation ~= nil then
  return refuse('closed_generation', 'absent, as the breaker is ' .. s.state,
    closed_generation)
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

local token = -1
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
    calls, failures, slow, opened_at, failed_at, wait_now, false}
  -- The failure's type after "=", so that an empty one differs from none.
  if s.last_failure_type ~= nil then extra[12] = '=' .. s.last_failure_type end
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
  if s.state == 'closed' then
    values[#values + 1] = 'closed_generation'
    values[#values + 1] = int(s.generation)
  else
    gone[#gone + 1] = 'closed_generation'
  end
  redis.call('HSET', state_key, unpack(values))
  if #gone > 0 then redis.call('HDEL', state_key, unpack(gone)) end
  local expiry = ttl
  if s.state == 'forced_open' or s.state == 'disabled' then expiry = held_ttl end
  redis.call('PEXPIRE', state_key, expiry)
  redis.call('PEXPIRE', buckets_key, expiry)
  redis.call('PEXPIRE', calls_key, expiry)
end

local reply = {s.state, int(s.generation), num(now), int(token), wait or '', '', '', '', ''}
if transition ~= nil then
  reply[6], reply[7] = transition[1], transition[2]
  if transition[3] then reply[8] = int(transition[3]) end
  if transition[4] then reply[9] = int(transition[4]) end
end
if extra ~= nil then
  for i = 1, 12 do
    local value = extra[i]
    if value == false then
      value = ''
    elseif type(value) == 'number' then
      value = int(value)
    end
    reply[9 + i] = value
  end
end
return table.concat(reply, '|')
