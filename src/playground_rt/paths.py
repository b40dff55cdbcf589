"""Client-given paths, confined to their roots.

A path is refused before any file is opened when it is absolute, contains a NUL byte or a
``..`` part, or resolves (symlinks followed) outside its root. ``Path.is_relative_to`` is
lexical, so the check runs on resolved paths; the lexical checks come first so that a
refused path never touches the disk at all.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from playground_rt import errors


def relative_parts(root: Path, given: str) -> tuple[str, ...] | None:
    """The parts of ``given`` below ``root``, lexically; ``None`` when it is empty, has a NUL
    byte, is absolute or contains ``..``. A leading root name (``data/...``) is dropped."""
    if not given or "\x00" in given:
        return None
    pure = PurePosixPath(given.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        return None
    return pure.parts[1:] if pure.parts[:1] == (root.name,) else pure.parts


def confine(root: Path, given: str, *, field: str) -> Path:
    """The resolved path of ``given`` under ``root``, or ``PathOutsideRoot`` naming ``field``.

    ``given`` may start with the root's own name (``data/datasets/x.jpg`` with root
    ``data``), as the contract's examples do; it is then taken relative to the root.
    """
    if not given or "\x00" in given:
        raise errors.PathOutsideRoot(f"{field}: empty path or NUL byte")
    parts = relative_parts(root, given)
    if parts is None:
        raise errors.PathOutsideRoot(
            f"{field} must be relative to its root and free of '..', got {given!r}"
        )
    base = root.resolve()
    try:
        candidate = base.joinpath(*parts).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError on 3.11), ...
        raise errors.PathOutsideRoot(f"{field} {given!r} cannot be resolved: {exc}") from None
    if candidate != base and not candidate.is_relative_to(base):
        raise errors.PathOutsideRoot(f"{field} {given!r} resolves outside its root")
    return candidate


def display(root: Path, path: Path) -> str:
    """``path`` as the client should see it: relative to the root's parent (``outputs/...``)."""
    base = root.resolve()
    return str(PurePosixPath(root.name, *path.resolve().relative_to(base).parts))
