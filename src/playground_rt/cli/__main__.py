"""``python -m playground_rt.cli``: the same as ``playground-rt``."""

from playground_rt.cli.main import main

raise SystemExit(main())
