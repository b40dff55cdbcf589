"""Server jobs across machines: web nodes hand them to worker processes through Redis.

``PLAYGROUND_EXECUTE=remote`` makes ``serve`` a *web node* (:mod:`.remote`): it validates and
keys requests as always, and hands every server job to ``playground-rt worker`` processes
(:mod:`.worker`) through a Redis Stream with a consumer group. Everything shared lives in
Redis, under ``playground-rt:`` (:mod:`.wire`), and changes only inside Lua scripts
(:mod:`.scripts`), so each change is atomic and emits its own frames::

    jobs            stream, group "workers"   one entry per queued job (its image bytes)
    queue           sorted set                 job ids waiting, in order: depth and position
    job:<id>        hash                       state, entry, worker, detail (the job's truth)
    interests:<id>  set                        the taskIds (and anonymous waiters) wanting it
    task:<taskId>   string                     the task's newest job (a newer one supersedes)
    history         stream (capped)            every job frame of the cluster, in one order
    dead            stream (capped)            jobs given up after max_deliveries
    durations       hash                       moving average run time per kind (ETAs)
    workers         set + worker:<name> hashes heartbeats with a TTL (telemetry)
    incarnation     string                     changes when Redis lost its data

Every web node reads ``history`` (:mod:`.feed`) and delivers each frame to its own sockets,
so a job is followed from any node; the frame's stream id is its ``cursor``, a cluster-wide
order that ``resume`` on another node starts from.
"""
