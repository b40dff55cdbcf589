"""Settings: flags over env over defaults, and what 0 means where it means "pick for me"."""

from __future__ import annotations

from playground_rt import config
from playground_rt.cli import main as cli


def test_workers_zero_picks_cores_over_threads() -> None:
    settings = config.from_env({"PLAYGROUND_WORKERS": "0", "PLAYGROUND_INTRA_OP_THREADS": "1"})
    assert settings.workers == 0
    assert settings.worker_count == max(1, config.cores())


def test_the_serve_flag_takes_zero_as_the_help_offers() -> None:
    args = cli.parser().parse_args(["serve", "--workers", "0"])
    assert cli.serve_settings(args).workers == 0
