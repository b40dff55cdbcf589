"""``playground-rt serve`` without the idle release of onnxruntime's arenas (the memory
behaviour before issue 12: arenas grown for every concurrent run, kept forever), for A/B runs
in ``bench.sweep``::

    python -m bench.arena_serve serve --port 8001 ...
"""

from __future__ import annotations

import sys

from playground_rt import arenas, cli

if __name__ == "__main__":
    arenas.IDLE_RELEASE_S = None
    raise SystemExit(cli.main(sys.argv[1:]))
