"""``playground-rt``: serve, worker, run, models, bench."""
