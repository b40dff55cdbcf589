"""The rembg op's bounded work: alpha matting capped at ``MATTING_MAX_PIXELS``, matting
skipped on images too thin to matte, and the strength blend and background colour in bands.

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

from playground_rt.pipeline import bands
from playground_rt.pipeline.ops import OpContext, SessionProvider, compose, get_op, parse_params
from playground_rt.pipeline.ops import background as bg

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


# --- D2 (b), issue 12: the strength blend in bands, in Pillow's integer arithmetic --------


def reference_blend(original: Image.Image, cutout: Image.Image, strength: float) -> Image.Image:
    """The straightforward float64 whole-image blend (the op's before issue 12)."""
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


def blended(original: Image.Image, cutout: Image.Image, strength: float) -> Image.Image:
    return compose.blend_cutout(original, cutout.copy(), strength)  # it writes over its cutout


ORIGINAL_MODES = ["RGB", "RGBA", "L", "LA"]


@pytest.mark.parametrize("seed", range(8))
def test_the_blend_is_within_one_level_of_the_float64_blend(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alpha and the mask exactly; colours within 1 (the weight is rounded to 1/255)."""
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(bands, "BAND_PIXELS", 1000)  # many bands, a ragged last one
    width, height = int(rng.integers(1, 300)), int(rng.integers(1, 200))
    cutout = random_rgba(rng, width, height)
    original = random_rgba(rng, width, height).convert(ORIGINAL_MODES[seed % 4])
    strengths = [1e-6, 0.5, 0.85, 0.999999, 1 / 3, *np.round(rng.random(6), 6).tolist()]
    for strength in strengths:
        got = array(blended(original, cutout, strength)).astype(np.int16)
        want = array(reference_blend(original, cutout, strength)).astype(np.int16)
        assert np.array_equal(got[..., 3], want[..., 3]), strength
        assert np.abs(got[..., :3] - want[..., :3]).max() <= 1, strength
        mask = cutout.getchannel("A")
        opaque = np.full((height, width), 255, np.int16)
        removed = array(mask).astype(np.int16)
        expected_mask = (opaque - np.rint(strength * (opaque - removed))).astype(np.uint8)
        assert np.array_equal(array(compose.blend_mask(mask, strength)), expected_mask)


@pytest.mark.parametrize("mode", ORIGINAL_MODES)
def test_the_blend_is_exact_at_strength_0_and_1(mode: str) -> None:
    rng = np.random.default_rng(7)
    cutout = random_rgba(rng, 97, 41)
    original = random_rgba(rng, 97, 41).convert(mode)
    for strength in (0.0, 1.0):
        got = blended(original, cutout, strength)
        assert np.array_equal(array(got), array(reference_blend(original, cutout, strength)))
    assert np.array_equal(array(blended(original, cutout, 1.0)), array(cutout))
    opaque = original.convert("RGBA")
    clear = array(opaque)[..., 3] == 0  # the float64 blend keeps the cut-out's colour there
    zero = array(blended(original, cutout, 0.0))
    assert np.array_equal(zero[~clear], array(opaque)[~clear])


def test_the_blend_of_an_opaque_photo_mostly_matches_the_float64_blend(
    u2netp: BaseSession,
) -> None:
    """On a real cut-out the ±1 cases are rare (ties and near-ties of the weight)."""
    image = sample_image(160, 120, seed=3)
    for strength in (0.85, 0.5, 0.2):
        got = array(run(u2netp, image, strength=strength)).astype(np.int16)
        cutout = run(u2netp, image)
        want = array(reference_blend(image, cutout, strength)).astype(np.int16)
        assert np.abs(got - want).max() <= 1
        assert (got != want).mean() < 0.01, strength


def test_bgcolor_is_rembgs_alpha_composite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bands, "BAND_PIXELS", 500)
    cutout = random_rgba(np.random.default_rng(3), 123, 45)
    for colour in [(12, 200, 56, 255), (255, 0, 0, 90), (0, 0, 0, 0)]:
        want = rembg.bg.apply_background_color(cutout, colour)
        for threads in (1, 2):
            got = compose.over_colour(cutout.copy(), colour, threads)
            assert np.array_equal(array(got), array(want)), (colour, threads)


def every_value_and_mask(mode: str) -> tuple[Image.Image, Image.Image]:
    """An image of ``mode`` and an L mask holding every (value, mask) pair once."""
    values = np.arange(256, dtype=np.uint8)
    value, weight = np.meshgrid(values, values)
    layers = [value, 255 - value, value[::-1], weight[::-1]][: len(mode)]
    pixels = np.stack(layers, axis=-1) if len(layers) > 1 else layers[0]
    return Image.fromarray(pixels.astype(np.uint8), mode), Image.fromarray(weight, "L")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_the_cutout_is_rembgs_naive_cutout_for_every_value_and_mask(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bands, "BAND_PIXELS", 5000)  # bands of 19 rows, the last short
    image, mask = every_value_and_mask(mode)
    want = array(rembg.bg.naive_cutout(image, mask))
    for threads in (1, 2):
        assert np.array_equal(array(compose.cutout(image, mask, threads=threads)), want)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA"])
def test_the_dialled_cutout_is_the_cutout_then_the_blend(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RGB and L take one pass (cut-out and blend band by band): the same bytes as the
    cut-out followed by the blend, for every (value, mask) pair, on one thread or two."""
    monkeypatch.setattr(bands, "BAND_PIXELS", 5000)
    image, mask = every_value_and_mask(mode)
    for strength in (0.0, 0.3, 0.85, 1.0):
        want = array(blended(image, rembg.bg.naive_cutout(image, mask), strength))
        for threads in (1, 2):
            got = compose.cutout(image, mask, strength, threads)
            assert np.array_equal(array(got), want), (strength, threads)


def test_a_cutout_by_a_mask_of_another_size_is_rembgs() -> None:
    image, mask = every_value_and_mask("RGB")
    other = mask.resize((128, 256)).resize(image.size)
    assert np.array_equal(
        array(compose.cutout(image, other.convert("1"), 0.5)),
        array(blended(image, rembg.bg.naive_cutout(image, other.convert("1")), 0.5)),
    )
