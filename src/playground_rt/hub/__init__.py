"""Frames out: fan-out, connections, replay, the broker between processes."""
