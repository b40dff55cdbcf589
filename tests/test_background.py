"""The rembg op's bounded work: alpha matting capped at ``MATTING_MAX_PIXELS``, matting
skipped on images too thin to matte, and the strength blend in row tiles.

Memory and time are measured by ``bench`` runs, not asserted here: these tests check
behaviour (identical results, the size of what pymatting is handed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import rembg
import rembg.bg
from PIL import Image
from rembg.sessions.base import BaseSession

from playground_rt.ops import OpContext, SessionProvider, get_op, parse_params
from playground_rt.ops import background as bg

from .conftest import MODEL_HOME, sample_image


@pytest.fixture(scope="module")
def u2netp() -> BaseSession:
    if not (MODEL_HOME / "u2netp.onnx").is_file():
        pytest.fail(f"u2netp.onnx missing in {MODEL_HOME}: run `playground-rt models pull`")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2  # the test machines are small and shared
    return rembg.new_session("u2netp", sess_opts=options)


class OneSession(SessionProvider):
    def __init__(self, session: BaseSession) -> None:
        self._session = session

    def session(self, model: str, wide: bool = False) -> BaseSession:
        return self._session

    def custom(self, path: Path) -> BaseSession:
        return self._session


def run(session: BaseSession, image: Image.Image, **raw: Any) -> Image.Image:
    spec = get_op("rembg")
    return spec.run(image, parse_params(spec, raw), OpContext(models=OneSession(session)))


def array(image: Image.Image) -> np.ndarray[Any, Any]:
    return np.asarray(image)


@pytest.fixture
def matted_shapes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shapes of the images rembg hands to pymatting's matte solver (the real one runs)."""
    shapes: list[tuple[int, ...]] = []
    solve = rembg.bg.estimate_alpha_cf

    def recording(image: Any, trimap: Any, *args: Any, **kwargs: Any) -> Any:
        shapes.append(image.shape)
        return solve(image, trimap, *args, **kwargs)

    monkeypatch.setattr(rembg.bg, "estimate_alpha_cf", recording)
    return shapes


# --- D2 (a): matting has its own pixel cap ---------------------------------------------


def test_matting_up_to_the_cap_is_rembg_remove(
    u2netp: BaseSession, matted_shapes: list[tuple[int, ...]]
) -> None:
    image = sample_image(160, 120, seed=3)
    out = run(u2netp, image, alpha_matting=True)
    assert matted_shapes == [(120, 160, 3)]
    expected = rembg.remove(image, session=u2netp, alpha_matting=True)
    assert isinstance(expected, Image.Image)
    assert np.array_equal(array(out), array(expected))


def test_matting_over_the_cap_runs_on_a_scaled_copy(
    u2netp: BaseSession, matted_shapes: list[tuple[int, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bg, "MATTING_MAX_PIXELS", 160 * 120)
    image = sample_image(320, 240, seed=3)
    out = run(u2netp, image, alpha_matting=True)
    assert matted_shapes == [(120, 160, 3)]
    assert out.mode == "RGBA" and out.size == (320, 240)
    alpha = array(out)[..., 3].astype(np.int16)
    plain = array(run(u2netp, image))[..., 3].astype(np.int16)  # rembg's mask as alpha
    assert alpha.min() == 0 and alpha.max() == 255
    assert np.abs(alpha - plain).mean() < 16, "the matte should follow the mask"
    opaque = alpha == 255
    assert np.array_equal(array(out)[opaque][:, :3], array(image)[opaque])


def test_matting_over_the_cap_without_a_trimap_falls_back_like_rembg(
    u2netp: BaseSession, matted_shapes: list[tuple[int, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thresholds that leave no definite background: rembg decontaminates instead."""
    monkeypatch.setattr(bg, "MATTING_MAX_PIXELS", 80 * 60)
    image = sample_image(320, 240, seed=3)
    out = run(u2netp, image, alpha_matting=True, alpha_matting_background_threshold=0)
    assert matted_shapes == [(60, 80, 3)]  # it raised ValueError: no background
    assert out.size == (320, 240) and out.mode == "RGBA"


# --- D12: images too small to matte -------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (2, 40), (40, 1)], ids=["1x1", "2x40", "40x1"])
def test_images_too_thin_to_matte_are_cut_out_without_matting(
    u2netp: BaseSession, matted_shapes: list[tuple[int, ...]], size: tuple[int, int]
) -> None:
    image = sample_image(*size, seed=5)
    out = run(u2netp, image, alpha_matting=True)  # 1x1: ZeroDivisionError in pymatting
    assert np.array_equal(array(out), array(run(u2netp, image)))
    assert matted_shapes == []


# --- D2 (b): the strength blend in row tiles ----------------------------------------------


def reference_blend(original: Image.Image, cutout: Image.Image, strength: float) -> Image.Image:
    """The float64 whole-image blend the op used before it was tiled."""
    before = np.asarray(original.convert("RGBA"), dtype=np.float64)
    after = np.asarray(cutout.convert("RGBA"), dtype=np.float64)
    a0, a1 = before[..., 3].astype(np.uint8), after[..., 3].astype(np.uint8)
    delta = a0.astype(np.int16) - a1.astype(np.int16)
    alpha = (a0 - np.rint(strength * delta)).astype(np.uint8)
    weight_after = strength * after[..., 3:]
    weight_before = (1.0 - strength) * before[..., 3:]
    total = weight_after + weight_before
    premultiplied = weight_after * after[..., :3] + weight_before * before[..., :3]
    colour = np.divide(premultiplied, total, out=after[..., :3].copy(), where=total > 0)
    rgba = np.dstack([np.clip(np.rint(colour), 0, 255).astype(np.uint8), alpha])
    return Image.fromarray(rgba, "RGBA")


def random_rgba(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    pixels = rng.integers(0, 256, size=(height, width, 4), dtype=np.uint8)
    pixels[..., 3][rng.random((height, width)) < 0.2] = 0  # plenty of alpha 0 and 255
    pixels[..., 3][rng.random((height, width)) < 0.2] = 255
    return Image.fromarray(pixels, "RGBA")


@pytest.mark.parametrize("seed", range(4))
def test_the_tiled_blend_is_the_float64_blend(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(bg, "TILE_PIXELS", 1000)  # many tiles, a ragged last one
    width, height = int(rng.integers(1, 300)), int(rng.integers(1, 200))
    cutout = random_rgba(rng, width, height)
    original = random_rgba(rng, width, height)
    if seed % 2:
        original = original.convert("RGB")
    strengths = [0.0, 1e-6, 0.5, 0.999999, 1 / 3, *np.round(rng.random(6), 6).tolist()]
    for strength in strengths:
        got = bg._blend_cutout(original, cutout, strength)
        want = reference_blend(original, cutout, strength)
        assert np.array_equal(array(got), array(want)), strength
        mask = cutout.getchannel("A")
        opaque = np.full((height, width), 255, np.int16)
        removed = array(mask).astype(np.int16)
        expected_mask = (opaque - np.rint(strength * (opaque - removed))).astype(np.uint8)
        assert np.array_equal(array(bg._blend_mask(mask, strength)), expected_mask)
