"""``playground-rt serve`` with onnxruntime's memory as before issue 12 (an arena per session,
grown for every concurrent run and kept forever: no shared arena, no idle release), for A/B
runs in ``bench.sweep``::

    python -m bench.arena_serve serve --port 8001 ...
"""

from __future__ import annotations

import sys

from playground_rt.cli import main as cli
from playground_rt.pipeline import arenas

if __name__ == "__main__":
    arenas.IDLE_RELEASE_S = None
    arenas.SHARED_ARENA = False
    raise SystemExit(cli.main(sys.argv[1:]))
