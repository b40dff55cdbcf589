"""The Lua scripts that change the cluster's shared state, each one atomic.

A job's state lives in ``job:<id>`` and moves ``queued → running → completed | failed |
cancelled`` only here; every script that moves it also appends the frames that tell its
followers, to ``history``, in the same step. So a frame never contradicts the state, no two
scripts can both end a job (exactly one terminal frame, however many workers ran it), and
the frames of a job are in ``history`` in the order its state changed.

Every script takes, in order, ``ARGV`` = prefix, history length, history TTL (ms), then its
own arguments (``A[1]``...). Key names are built from the prefix inside the scripts (one
Redis, not Redis Cluster). A finished job's ``job:`` and ``interests:`` keys expire after the
history TTL, like its frames.
"""

from __future__ import annotations

PRELUDE = r"""
local P = ARGV[1]
local HMAX = ARGV[2]
local HTTL = tonumber(ARGV[3])
local A = {}
for i = 4, #ARGV do A[#A + 1] = ARGV[i] end
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local JOBS = P .. 'jobs'
local QUEUE = P .. 'queue'

local function active(state) return state == 'queued' or state == 'running' end

local function tasks_of(id)
  local out = {}
  for _, i in ipairs(redis.call('SMEMBERS', P .. 'interests:' .. id)) do
    if string.sub(i, 1, 5) ~= 'anon:' then out[#out + 1] = i end
  end
  table.sort(out)
  if #out == 0 then return '[]' end
  return cjson.encode(out)
end

local function emit(run, frame, tids, withdrawn)
  local id = redis.call('XADD', P .. 'history', 'MAXLEN', '~', HMAX, '*',
    'f', frame, 't', tids, 'w', withdrawn and '1' or '0', 'r', run or '')
  redis.call('XTRIM', P .. 'history', 'MINID', '~', tostring(NOW - HTTL))
  return id
end

local function ended(id)
  redis.call('PEXPIRE', P .. 'job:' .. id, HTTL)
  redis.call('PEXPIRE', P .. 'interests:' .. id, HTTL)
end

local function cancel(id, detail)
  local job = P .. 'job:' .. id
  local state = redis.call('HGET', job, 'state')
  if not active(state) then return false end
  local entry = redis.call('HGET', job, 'entry')
  if state == 'queued' and entry then redis.call('XDEL', JOBS, entry) end
  redis.call('ZREM', QUEUE, id)
  redis.call('HSET', job, 'state', 'cancelled', 'detail', detail, 'ended', tostring(NOW))
  emit(entry, cjson.encode({type = 'cancelled', job_id = id, detail = detail}), tasks_of(id),
    false)
  ended(id)
  return true
end

local function withdraw(id, interest, detail)
  local job = P .. 'job:' .. id
  local state = redis.call('HGET', job, 'state')
  if not state then return 'unknown' end
  if not active(state) then return 'finished' end
  local ikey = P .. 'interests:' .. id
  if redis.call('SISMEMBER', ikey, interest) == 0 then return 'not_following' end
  if redis.call('SCARD', ikey) == 1 then
    cancel(id, detail)
    return 'cancelled'
  end
  redis.call('SREM', ikey, interest)
  if string.sub(interest, 1, 5) ~= 'anon:' then
    emit(redis.call('HGET', job, 'entry'),
      cjson.encode({type = 'cancelled', job_id = id, detail = detail}),
      cjson.encode({interest}), true)
  end
  return 'withdrawn'
end

local function supersede(task, keep)
  local tkey = P .. 'task:' .. task
  local old = redis.call('GET', tkey)
  if old and old ~= keep then
    withdraw(old, task, 'superseded by a newer request of task ' .. task)
  end
  redis.call('SET', tkey, keep, 'PX', HTTL)
end

local function eta(position, kind, default_ms, threads)
  local avg = tonumber(redis.call('HGET', P .. 'durations', kind) or default_ms)
  return math.floor(position * avg / math.max(1, tonumber(threads)) + avg)
end

local function queued_frame(id, position, ms)
  return cjson.encode({type = 'queued', job_id = id, position = position, eta_ms = ms})
end
"""

SUBMIT = r"""
-- A: id, interest, task ('' = none), body, queue_size, kind, default_ms, threads, origin,
--    active_ttl_ms, force ('1': a 'completed' record without a result on disk runs again),
--    join_only ('1': join a run in flight, queue nothing)
-- → {'joined' | 'queued', entry, position (-1: running), state} | {'full', depth}
--   | {'completed'} | {'absent'}
local id, interest, task = A[1], A[2], A[3]
if task ~= '' then supersede(task, id) end
local job = P .. 'job:' .. id
local ikey = P .. 'interests:' .. id
local state = redis.call('HGET', job, 'state')
if active(state) then
  redis.call('SADD', ikey, interest)
  local entry = redis.call('HGET', job, 'entry')
  local rank = redis.call('ZRANK', QUEUE, id)
  if rank then
    local kind = redis.call('HGET', job, 'kind') or A[6]
    emit(entry, queued_frame(id, rank, eta(rank, kind, A[7], A[8])), tasks_of(id), false)
  end
  return {'joined', entry, rank or -1, state}
end
if A[12] == '1' then return {'absent'} end
if state == 'completed' and A[11] ~= '1' then return {'completed'} end
local depth = redis.call('ZCARD', QUEUE)
if depth >= tonumber(A[5]) then return {'full', depth} end
redis.pcall('XGROUP', 'CREATE', JOBS, 'workers', '0', 'MKSTREAM')
local entry = redis.call('XADD', JOBS, '*', 'job', id, 'body', A[4])
redis.call('ZADD', QUEUE, redis.call('INCR', P .. 'enqueued'), id)
redis.call('DEL', job, ikey)
redis.call('HSET', job, 'state', 'queued', 'entry', entry, 'created', tostring(NOW),
  'origin', A[9], 'kind', A[6])
redis.call('SADD', ikey, interest)
redis.call('PEXPIRE', job, A[10])
redis.call('PEXPIRE', ikey, A[10])
emit(entry, queued_frame(id, depth, eta(depth, A[6], A[7], A[8])), tasks_of(id), false)
return {'queued', entry, depth, 'queued'}
"""

SUPERSEDE = r"""
-- A: task, keep (a job that needs no queue: a cache hit or the page's own work)
supersede(A[1], A[2])
return 1
"""

WITHDRAW = r"""
-- A: id, interest, detail → unknown | finished | not_following | withdrawn | cancelled
return withdraw(A[1], A[2], A[3])
"""

WITHDRAW_TASK = r"""
-- A: task, detail → {status, job id} for the task's newest job
local id = redis.call('GET', P .. 'task:' .. A[1])
if not id then return {'unknown', ''} end
return {withdraw(id, A[1], A[2]), id}
"""

CANCEL = r"""
-- A: id, detail → 1 when the job was in flight
if cancel(A[1], A[2]) then return 1 end
return 0
"""

ANNOUNCE = r"""
-- A: id, last known position, default_ms, threads, entry → the position (-1: not queued)
local job = P .. 'job:' .. A[1]
local v = redis.call('HMGET', job, 'state', 'entry', 'kind')
if v[1] ~= 'queued' or v[2] ~= A[5] then return -1 end
local rank = redis.call('ZRANK', QUEUE, A[1])
if not rank then return -1 end
if rank ~= tonumber(A[2]) then
  emit(v[2], queued_frame(A[1], rank, eta(rank, v[3] or '', A[3], A[4])), tasks_of(A[1]), false)
end
return rank
"""

NOTIFY = r"""
-- A: frame, task ids (JSON), withdrawn ('1'/'0'): a frame no state change goes with
emit('', A[1], A[2], A[3] == '1')
return 1
"""

START = r"""
-- A: id, consumer, entry → run | skip (finished, cancelled, or a stale entry of an older run)
local job = P .. 'job:' .. A[1]
local v = redis.call('HMGET', job, 'state', 'entry')
if not active(v[1]) or v[2] ~= A[3] then return 'skip' end
redis.call('ZREM', QUEUE, A[1])
redis.call('HSET', job, 'state', 'running', 'worker', A[2], 'started', tostring(NOW))
return 'run'
"""

PROGRESS = r"""
-- A: id, consumer, entry, frame: only from the worker that holds the job now
local v = redis.call('HMGET', P .. 'job:' .. A[1], 'state', 'worker', 'entry')
if v[1] ~= 'running' or v[2] ~= A[2] or v[3] ~= A[3] then return 0 end
emit(A[3], A[4], tasks_of(A[1]), false)
return 1
"""

FINISH = r"""
-- A: id, entry, state (completed | failed), frame, detail, kind, run ms ('' = none),
--    average weight → 1 when this ended the job (its frame went out), 0 when it had ended
local id = A[1]
local job = P .. 'job:' .. id
local v = redis.call('HMGET', job, 'state', 'entry')
local done = 0
if v[1] == 'running' and v[2] == A[2] then
  redis.call('HSET', job, 'state', A[3], 'detail', A[5], 'ended', tostring(NOW))
  emit(A[2], A[4], tasks_of(id), false)
  ended(id)
  if A[7] ~= '' then
    local key = P .. 'durations'
    local old = tonumber(redis.call('HGET', key, A[6]))
    local x = tonumber(A[7])
    if old then x = old + tonumber(A[8]) * (x - old) end
    redis.call('HSET', key, A[6], tostring(x))
  end
  done = 1
end
redis.call('XACK', JOBS, 'workers', A[2])
redis.call('XDEL', JOBS, A[2])
return done
"""

DEAD = r"""
-- A: id, entry, deliveries, reason, consumer, kept → 1 when this failed the job (its entry
-- then goes to the dead letters; a stale entry is only acknowledged)
local id = A[1]
local job = P .. 'job:' .. id
local v = redis.call('HMGET', job, 'state', 'entry')
local done = 0
if active(v[1]) and v[2] == A[2] then
  redis.call('XADD', P .. 'dead', 'MAXLEN', '~', A[6], '*', 'job_id', id, 'entry', A[2],
    'deliveries', A[3], 'reason', A[4], 'consumer', A[5])
  redis.call('ZREM', QUEUE, id)
  redis.call('HSET', job, 'state', 'failed', 'detail', A[4], 'ended', tostring(NOW))
  emit(A[2], cjson.encode({type = 'failed', job_id = id, detail = A[4], code = 'op_failed'}),
    tasks_of(id), false)
  ended(id)
  done = 1
end
redis.call('XACK', JOBS, 'workers', A[2])
redis.call('XDEL', JOBS, A[2])
return done
"""

ACK = r"""
-- A: entries: done with them (skipped, or the job ended elsewhere)
for i = 1, #A do
  redis.call('XACK', JOBS, 'workers', A[i])
  redis.call('XDEL', JOBS, A[i])
end
return #A
"""

KEEPALIVE = r"""
-- A: consumer, entries → the entries it still holds (their idle time reset); the others were
-- taken over by another worker (or are gone)
local out = {}
for i = 2, #A do
  local mine = redis.call('XPENDING', JOBS, 'workers', A[i], A[i], 1, A[1])
  if #mine > 0 then
    redis.call('XCLAIM', JOBS, 'workers', A[1], 0, A[i], 'JUSTID')
    out[#out + 1] = A[i]
  end
end
return out
"""

RELEASE = r"""
-- A: consumer, idle ms, entries: make them claimable by any worker at once (shutdown)
for i = 3, #A do
  redis.call('XCLAIM', JOBS, 'workers', A[1], 0, A[i], 'IDLE', A[2], 'JUSTID')
end
return #A - 2
"""

SCRIPTS: dict[str, str] = {
    "submit": SUBMIT,
    "supersede": SUPERSEDE,
    "withdraw": WITHDRAW,
    "withdraw_task": WITHDRAW_TASK,
    "cancel": CANCEL,
    "announce": ANNOUNCE,
    "notify": NOTIFY,
    "start": START,
    "progress": PROGRESS,
    "finish": FINISH,
    "dead": DEAD,
    "ack": ACK,
    "keepalive": KEEPALIVE,
    "release": RELEASE,
}
"""Each script's body; :class:`~.link.Link` prepends :data:`PRELUDE`."""
