"""The ops against Pillow/numpy references, their params' validation, the rembg op
against ``rembg.remove`` with the real u2netp model, and the JS ports against Pillow."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import rembg
from PIL import Image, ImageFilter, ImageOps
from rembg.sessions.base import BaseSession

from playground_rt import errors
from playground_rt.pipeline import registry
from playground_rt.pipeline.ops import OPS, OpContext, SessionProvider, get_op, parse_params
from playground_rt.pipeline.ops.geometry import MAX_SIDE

ROOT = Path(__file__).resolve().parents[1]
OPS_CHECK = ROOT / "tests" / "js" / "ops_check.mjs"
CTX = OpContext()

U8 = npt.NDArray[np.uint8]


def synthetic(width: int = 64, height: int = 48, *, alpha: bool = False, seed: int = 7) -> U8:
    """A gradient with noise (and, with ``alpha``, a ramp of alpha from 0 to 255)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 3, y * 4, (x + y) * 2], axis=-1).astype(np.float64) + 40
    pixels = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    if not alpha:
        return pixels
    ramp = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    ramp[rng.random(ramp.shape) < 0.1] = 0  # fully transparent specks
    return np.dstack([pixels, ramp])


def image(width: int = 64, height: int = 48, *, alpha: bool = False, seed: int = 7) -> Image.Image:
    return Image.fromarray(synthetic(width, height, alpha=alpha, seed=seed))


def array(img: Image.Image) -> npt.NDArray[np.int32]:
    return np.asarray(img, dtype=np.int32)


def run(name: str, raw: dict[str, Any], img: Image.Image, ctx: OpContext = CTX) -> Image.Image:
    spec = get_op(name)
    return spec.run(img, parse_params(spec, raw), ctx)


# --- registry ---------------------------------------------------------------------------


def test_registry_names_and_client_flags() -> None:
    assert {name: spec.client for name, spec in OPS.items()} == {
        "autocontrast": True,
        "equalize": False,
        "grayscale": True,
        "blur": True,
        "sharpen": False,
        "resize": True,
        "crop": False,
        "rotate": True,
        "flip": True,
        "rembg": True,  # u2netp without alpha matting or post-processing: model-worker.js
    }
    for name, spec in OPS.items():
        assert spec.name == name
        schema = msgspec.json.schema(spec.params)
        assert schema["$defs"][spec.params.__name__]["description"], name
        if name != "resize":  # resize needs one of its (defaulted) sides
            msgspec.convert({}, spec.params)  # every field has a default


# --- tone -------------------------------------------------------------------------------


def reference_autocontrast(band: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    lo, hi = int(band.min()), int(band.max())
    scale = 255.0 / (hi - lo)
    lut = np.clip(np.trunc(np.arange(256) * scale - lo * scale), 0, 255).astype(np.int32)
    stretched: npt.NDArray[np.int32] = lut[band]
    return stretched


@pytest.mark.parametrize("alpha", [pytest.param(False, id="rgb"), pytest.param(True, id="rgba")])
def test_autocontrast_stretches_colour_bands_and_keeps_alpha(alpha: bool) -> None:
    src = image(alpha=alpha)
    out = array(run("autocontrast", {}, src))
    expected = array(src)
    for band in range(3):
        expected[..., band] = reference_autocontrast(expected[..., band])
        assert out[..., band].min() == 0
        assert out[..., band].max() == 255
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("cutoff", [pytest.param(2.0, id="2%"), pytest.param(10.5, id="10.5%")])
def test_autocontrast_cutoff_is_pillows(cutoff: float) -> None:
    src = image(alpha=True)
    out = run("autocontrast", {"cutoff": cutoff}, src)
    expected = ImageOps.autocontrast(src.convert("RGB"), cutoff=cutoff)
    np.testing.assert_array_equal(array(out)[..., :3], array(expected))
    np.testing.assert_array_equal(array(out)[..., 3], array(src)[..., 3])


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_equalize_flattens_histogram_and_keeps_alpha(mode: str) -> None:
    src = image(alpha=True).convert(mode)
    out = run("equalize", {}, src)
    assert out.mode == mode
    colour = src.convert("L" if mode in ("L", "LA") else "RGB")
    np.testing.assert_array_equal(array(out.convert(colour.mode)), array(ImageOps.equalize(colour)))
    if "A" in mode:
        np.testing.assert_array_equal(array(out.getchannel("A")), array(src.getchannel("A")))


@pytest.mark.parametrize(
    ("alpha", "keep_alpha", "mode"),
    [
        pytest.param(False, True, "L", id="rgb"),
        pytest.param(True, True, "LA", id="rgba-keep"),
        pytest.param(True, False, "L", id="rgba-drop"),
    ],
)
def test_grayscale_is_itu601_fixed_point(alpha: bool, keep_alpha: bool, mode: str) -> None:
    src = image(alpha=alpha)
    out = run("grayscale", {"keep_alpha": keep_alpha}, src)
    assert out.mode == mode
    rgb = array(src)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    np.testing.assert_array_equal(array(out.getchannel("L")), luma)
    if mode == "LA":
        np.testing.assert_array_equal(array(out.getchannel("A")), rgb[..., 3])


# --- filters ----------------------------------------------------------------------------


def reference_box_blur(pixels: npt.NDArray[np.int32], kernel: int) -> npt.NDArray[np.int32]:
    """Mean over the window with edges extended, rounded after each separable pass."""
    r = (kernel - 1) // 2
    out = pixels.astype(np.float64)
    for axis in (1, 0):
        pad = [(r, r) if a == axis else (0, 0) for a in range(out.ndim)]
        padded = np.pad(out, pad, mode="edge")
        windows = [np.take(padded, range(i, i + out.shape[axis]), axis=axis) for i in range(kernel)]
        out = np.floor(np.mean(windows, axis=0) + 0.5)
    return out.astype(np.int32)


@pytest.mark.parametrize("kernel", [3, 5, 9, 31])
@pytest.mark.parametrize("alpha", [pytest.param(False, id="rgb"), pytest.param(True, id="rgba")])
def test_blur_is_a_box_mean(kernel: int, alpha: bool) -> None:
    src = image(alpha=alpha)
    out = array(run("blur", {"kernelSize": kernel}, src))
    # Pillow's 24-bit fixed-point weights may round a mean off by one, never more.
    diff = np.abs(out - reference_box_blur(array(src), kernel))
    assert diff.max() <= 1
    np.testing.assert_array_equal(out, array(src.filter(ImageFilter.BoxBlur((kernel - 1) // 2))))


def test_blur_kernel_1_is_identity() -> None:
    src = image(alpha=True)
    np.testing.assert_array_equal(array(run("blur", {"kernelSize": 1}, src)), array(src))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"amount": 1.0, "radius": 2.0, "threshold": 3}, id="default"),
        pytest.param({"amount": 2.5, "radius": 0.5, "threshold": 0}, id="strong"),
    ],
)
def test_sharpen_is_unsharp_mask_on_colour(raw: dict[str, Any]) -> None:
    src = image(alpha=True)
    out = run("sharpen", raw, src)
    mask = ImageFilter.UnsharpMask(raw["radius"], round(raw["amount"] * 100), raw["threshold"])
    expected = src.convert("RGB").filter(mask)
    np.testing.assert_array_equal(array(out)[..., :3], array(expected))
    np.testing.assert_array_equal(array(out)[..., 3], array(src)[..., 3])


# --- geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        pytest.param({"width": 32}, (32, 24), id="width-only"),
        pytest.param({"height": 10}, (13, 10), id="height-only-round-half-up"),
        pytest.param({"width": 3}, (3, 2), id="2.25-rounds-down"),
        pytest.param({"width": 1}, (1, 1), id="at-least-1"),
        pytest.param({"width": 100, "height": 7}, (100, 7), id="both"),
    ],
)
def test_resize_sizes(raw: dict[str, Any], size: tuple[int, int]) -> None:
    src = image(alpha=True)
    out = run("resize", raw, src)
    assert out.size == size
    np.testing.assert_array_equal(array(out), array(src.resize(size, Image.Resampling.BILINEAR)))


def test_resize_half_up_tie() -> None:
    # 10 x 48 / 64 = 7.5 exactly: rounded half up, not to even.
    assert run("resize", {"height": 10}, image(48, 64)).size == (8, 10)


def test_resize_rejects_a_derived_side_over_the_limit() -> None:
    with pytest.raises(errors.InvalidParams, match=r"1x100 image gives 8192x819200"):
        run("resize", {"width": 8192}, image(1, 100))


def test_crop_removes_edges() -> None:
    src = image(alpha=True)
    out = run("crop", {"left": 1, "top": 2, "right": 3, "bottom": 4}, src)
    np.testing.assert_array_equal(array(out), array(src)[2:-4, 1:-3])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"left": 32, "right": 32}, id="width"),
        pytest.param({"bottom": 48}, id="height"),
        pytest.param({"top": 60000}, id="beyond"),
    ],
)
def test_crop_leaving_nothing_is_invalid(raw: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidParams, match=r"^crop: .* from a 64x48 image leaves nothing"):
        run("crop", raw, image())


@pytest.mark.parametrize(("degrees", "turns"), [(0, 0), (90, 1), (180, 2), (270, 3)])
def test_rotate_is_exact_counter_clockwise(degrees: int, turns: int) -> None:
    src = image(alpha=True)
    out = run("rotate", {"degrees": degrees}, src)
    np.testing.assert_array_equal(array(out), np.rot90(array(src), turns))


@pytest.mark.parametrize(("direction", "axis"), [("horizontal", 1), ("vertical", 0)])
def test_flip(direction: str, axis: int) -> None:
    src = image(alpha=True)
    out = run("flip", {"direction": direction}, src)
    np.testing.assert_array_equal(array(out), np.flip(array(src), axis))


@pytest.mark.parametrize("name", ["blur", "resize", "rotate", "flip", "crop", "sharpen"])
def test_geometry_and_filters_take_l_and_la(name: str) -> None:
    raw = {"width": 20} if name == "resize" else {"left": 1} if name == "crop" else {}
    for mode in ("L", "LA"):
        out = run(name, raw, image(alpha=True).convert(mode))
        assert out.mode == mode


# --- params validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        pytest.param(
            "blur",
            {"kernelSize": 4},
            "kernelSize must be odd, got 4 - at `$.params.blur`",
            id="even",
        ),
        pytest.param(
            "blur",
            {"kernelSize": 33},
            "Expected `int` <= 31 - at `$.params.blur.kernelSize`",
            id="big",
        ),
        pytest.param(
            "blur",
            {"kernelSize": "5"},
            "Expected `int`, got `str` - at `$.params.blur.kernelSize`",
            id="type",
        ),
        pytest.param(
            "autocontrast",
            {"cutoff": 50},
            "Expected `float` <= 49.0 - at `$.params.autocontrast.cutoff`",
            id="cutoff",
        ),
        pytest.param(
            "resize",
            {},
            "at least one of width and height is required - at `$.params.resize`",
            id="no-size",
        ),
        pytest.param(
            "resize", {"width": 0}, "Expected `int` >= 1 - at `$.params.resize.width`", id="zero"
        ),
        pytest.param(
            "rotate",
            {"degrees": 45},
            "Invalid enum value 45 - at `$.params.rotate.degrees`",
            id="angle",
        ),
        pytest.param(
            "flip",
            {"direction": "up"},
            "Invalid enum value 'up' - at `$.params.flip.direction`",
            id="direction",
        ),
        pytest.param(
            "crop", {"left": -1}, "Expected `int` >= 0 - at `$.params.crop.left`", id="negative"
        ),
        pytest.param(
            "grayscale",
            {"keepAlpha": True},
            "Object contains unknown field `keepAlpha` - at `$.params.grayscale`",
            id="unknown-field",
        ),
        pytest.param(
            "sharpen",
            {"radius": 0},
            "Expected `float` >= 0.1 - at `$.params.sharpen.radius`",
            id="radius",
        ),
        pytest.param(
            "rembg",
            {"model": "../evil"},
            r"Expected `str` matching regex '^[a-z0-9_\\-]{1,64}$' - at `$.params.rembg.model`",
            id="model-pattern",
        ),
        pytest.param(
            "rembg",
            {"strength": 1.5},
            "Expected `float` <= 1.0 - at `$.params.rembg.strength`",
            id="strength",
        ),
        pytest.param(
            "rembg",
            {"bgcolor": [0, 0, 0, 256]},
            "Expected `int` <= 255 - at `$.params.rembg.bgcolor[3]`",
            id="bgcolor-range",
        ),
        pytest.param(
            "rembg",
            {"bgcolor": [0, 0, 0]},
            "Expected `array` of length 4, got 3 - at `$.params.rembg.bgcolor`",
            id="bgcolor-length",
        ),
    ],
)
def test_invalid_params(name: str, raw: dict[str, Any], message: str) -> None:
    """What a request with these params is told (the 422's detail names the path)."""
    with pytest.raises(errors.InvalidParams) as info:
        registry.get_pipeline("preprocessing").plan({name: raw})
    assert info.value.detail == message


# --- rembg ------------------------------------------------------------------------------


def u2netp_path() -> Path:
    home = os.environ.get("U2NET_HOME", str(Path.home() / ".u2net"))
    return Path(home).expanduser() / "u2netp.onnx"


@pytest.fixture(scope="module")
def u2netp() -> BaseSession:
    path = u2netp_path()
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `playground-rt models pull` first")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2  # the test machines are small and shared
    return rembg.new_session("u2netp", sess_opts=options)


class LocalModels(SessionProvider):
    """The one u2netp session, for any model name or checkpoint; records what was asked."""

    def __init__(self, session: BaseSession) -> None:
        self._session = session
        self.asked: list[str | Path] = []

    def session(self, model: str, wide: bool = False) -> BaseSession:
        self.asked.append(model)
        return self._session

    def custom(self, path: Path) -> BaseSession:
        self.asked.append(path)
        return self._session


def subject() -> Image.Image:
    """A bright disc on a darker noisy gradient: something for u2netp to cut out."""
    pixels = synthetic(64, 48, seed=3).astype(np.int32) // 2
    y, x = np.mgrid[0:48, 0:64]
    disc = (x - 32) ** 2 + (y - 24) ** 2 < 14**2
    pixels[disc] = [230, 60, 40]
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="module")
def removed(u2netp: BaseSession) -> Image.Image:
    cutout = rembg.remove(subject(), session=u2netp)
    assert isinstance(cutout, Image.Image)
    alpha = np.asarray(cutout.getchannel("A"))
    assert alpha.min() < 64 < 192 < alpha.max(), "u2netp should find a foreground"
    return cutout


def rembg_run(
    session: BaseSession, raw: dict[str, Any], ctx: OpContext | None = None
) -> Image.Image:
    return run("rembg", raw, subject(), ctx or OpContext(models=LocalModels(session)))


def test_rembg_strength_1_is_rembg_remove(u2netp: BaseSession, removed: Image.Image) -> None:
    steps: list[tuple[str, int, int]] = []
    models = LocalModels(u2netp)
    ctx = OpContext(models=models, report=lambda *step: steps.append(step))
    out = rembg_run(u2netp, {}, ctx)
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(array(out), array(removed))
    assert steps == [("model", 0, 2), ("compose", 1, 2), ("compose", 2, 2)]
    assert models.asked == ["u2netp"]


def test_rembg_alpha_matting_is_a_stage_of_its_own(u2netp: BaseSession) -> None:
    steps: list[tuple[str, int, int]] = []
    ctx = OpContext(models=LocalModels(u2netp), report=lambda *step: steps.append(step))
    rembg_run(u2netp, {"alpha_matting": True}, ctx)
    assert steps == [("model", 0, 3), ("alpha matting", 1, 3), ("compose", 2, 3), ("compose", 3, 3)]


def test_rembg_strength_0_is_opaque_original(u2netp: BaseSession) -> None:
    out = rembg_run(u2netp, {"strength": 0})
    assert (array(out)[..., 3] == 255).all()
    np.testing.assert_array_equal(array(out)[..., :3], array(subject()))


def test_rembg_strength_0_keeps_an_rgba_input(u2netp: BaseSession) -> None:
    src = subject().convert("RGBA")
    src.putalpha(Image.fromarray(synthetic(64, 48, alpha=True)[..., 3]))
    out = array(run("rembg", {"strength": 0}, src, OpContext(models=LocalModels(u2netp))))
    visible = array(src)[..., 3] > 0
    np.testing.assert_array_equal(out[..., 3], array(src)[..., 3])
    np.testing.assert_array_equal(out[visible], array(src)[visible])


def test_rembg_strength_half_blends_alpha(u2netp: BaseSession, removed: Image.Image) -> None:
    out = array(rembg_run(u2netp, {"strength": 0.5}))
    a = array(removed)[..., 3]
    np.testing.assert_array_equal(out[..., 3], 255 - np.rint(0.5 * (255 - a)))
    # Colours: over black, the result is the average of the original and of the cutout.
    over_black = out[..., :3] * out[..., 3:] / 255
    expected = (array(subject()) + array(removed)[..., :3] * a[..., None] / 255) / 2
    assert np.abs(over_black - expected).max() <= 1.0


@pytest.mark.parametrize("strength", [1.0, 0.25])
def test_rembg_only_mask(u2netp: BaseSession, removed: Image.Image, strength: float) -> None:
    out = rembg_run(u2netp, {"only_mask": True, "strength": strength, "bgcolor": [1, 2, 3, 255]})
    assert out.mode == "L"
    a = array(removed)[..., 3]  # naive_cutout's alpha is the mask
    np.testing.assert_array_equal(array(out), 255 - np.rint(strength * (255 - a)))


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_rembg_bgcolor_goes_under_the_blend(u2netp: BaseSession, strength: float) -> None:
    bgcolor = (0, 0, 255, 255)
    out = rembg_run(u2netp, {"strength": strength, "bgcolor": list(bgcolor)})
    blended = rembg_run(u2netp, {"strength": strength})
    expected = Image.alpha_composite(Image.new("RGBA", blended.size, bgcolor), blended)
    np.testing.assert_array_equal(array(out), array(expected))
    if strength == 1.0:
        reference = rembg.remove(subject(), session=u2netp, bgcolor=bgcolor)
        np.testing.assert_array_equal(array(out), array(reference))


def test_rembg_checkpoint_replaces_model(u2netp: BaseSession) -> None:
    models = LocalModels(u2netp)
    checkpoint = Path("/checkpoints/custom.onnx")
    rembg_run(u2netp, {"model": "isnet-general-use"}, OpContext(models, checkpoint=checkpoint))
    assert models.asked == [checkpoint]


def test_rembg_cancel_between_steps(u2netp: BaseSession) -> None:
    steps: list[tuple[str, int, int]] = []

    def cancelled() -> None:
        raise errors.JobCancelled("cancelled")

    ctx = OpContext(
        LocalModels(u2netp), report=lambda *step: steps.append(step), check_cancelled=cancelled
    )
    with pytest.raises(errors.JobCancelled):
        rembg_run(u2netp, {}, ctx)
    assert steps == [("model", 0, 2), ("compose", 1, 2)]


class NoModels(SessionProvider):
    def session(self, model: str, wide: bool = False) -> BaseSession:
        raise errors.ModelUnavailable(f"model {model!r} is not installed")


NO_WRITES = [
    ("autocontrast", {}),
    ("equalize", {}),
    ("grayscale", {"keep_alpha": True}),
    ("blur", {"kernelSize": 5}),
    ("blur", {"kernelSize": 1}),
    ("sharpen", {}),
    ("resize", {"width": 64}),  # its own size: a resize that changes nothing
    ("crop", {"left": 1}),
    ("rotate", {"degrees": 90}),
    ("flip", {"direction": "horizontal"}),
    ("rembg", {}),
    ("rembg", {"strength": 0.5, "bgcolor": [0, 0, 255, 255]}),
    ("rembg", {"only_mask": True, "strength": 0.5}),
    ("rembg", {"post_process_mask": True}),
]


@pytest.mark.parametrize("alpha", [False, True], ids=["RGB", "RGBA"])
@pytest.mark.parametrize(("name", "raw"), NO_WRITES, ids=[f"{n}{r}" for n, r in NO_WRITES])
def test_no_op_writes_into_its_input(
    name: str, raw: dict[str, Any], alpha: bool, u2netp: BaseSession
) -> None:
    """Decoded images are kept and shared between jobs (``pipeline.decoded``): an op
    returns a new image and leaves the one it was given as it was."""
    given = image(alpha=alpha) if name != "rembg" else subject()
    if name == "rembg" and alpha:
        given = given.convert("RGBA")
    before = given.tobytes()
    out = run(name, raw, given, OpContext(models=LocalModels(u2netp)))
    assert given.tobytes() == before, f"{name} wrote into its input"
    assert out.size[0] > 0


def test_rembg_missing_model_fails_before_reporting() -> None:
    steps: list[tuple[str, int, int]] = []
    ctx = OpContext(NoModels(), report=lambda *step: steps.append(step))
    with pytest.raises(errors.ModelUnavailable, match="'u2net' is not installed"):
        run("rembg", {"model": "u2net"}, subject(), ctx)
    assert steps == []


# --- JS parity --------------------------------------------------------------------------


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node (v20+) is not on PATH: the JS parity tests need it")
    return found


def run_js(tmp_path: Path, img: Image.Image, ops: list[tuple[str, dict[str, Any]]]) -> U8:
    rgba = img.convert("RGBA")
    job = {
        "width": rgba.width,
        "height": rgba.height,
        "data": base64.b64encode(rgba.tobytes()).decode(),
        "ops": [{"name": name, "params": params} for name, params in ops],
        "limits": {"max_side": MAX_SIDE},
    }
    job_path = tmp_path / "job.json"
    job_path.write_text(json.dumps(job))
    done = subprocess.run(
        [node(), str(OPS_CHECK), str(job_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    data = np.frombuffer(base64.b64decode(result["data"]), dtype=np.uint8)
    return data.reshape(result["height"], result["width"], 4)


def run_python(img: Image.Image, ops: list[tuple[str, dict[str, Any]]]) -> U8:
    for name, raw in ops:
        img = run(name, raw, img)
    return np.asarray(img.convert("RGBA"))


PARITY = [
    pytest.param([("autocontrast", {})], id="autocontrast"),
    pytest.param([("autocontrast", {"cutoff": 2.5})], id="autocontrast-2.5"),
    pytest.param([("autocontrast", {"cutoff": 33.3})], id="autocontrast-33.3"),
    pytest.param([("grayscale", {})], id="grayscale"),
    pytest.param([("grayscale", {"keep_alpha": False})], id="grayscale-drop-alpha"),
    pytest.param([("blur", {"kernelSize": 1})], id="blur-1"),
    pytest.param([("blur", {"kernelSize": 3})], id="blur-3"),
    pytest.param([("blur", {"kernelSize": 7})], id="blur-7"),
    pytest.param([("blur", {"kernelSize": 31})], id="blur-31"),
    pytest.param([("resize", {"width": 20})], id="resize-down"),
    pytest.param([("resize", {"height": 131})], id="resize-up"),
    pytest.param([("resize", {"width": 97, "height": 13})], id="resize-mixed"),
    pytest.param([("resize", {"width": 1, "height": 1})], id="resize-1x1"),
    pytest.param([("rotate", {"degrees": 90})], id="rotate-90"),
    pytest.param([("rotate", {"degrees": 180})], id="rotate-180"),
    pytest.param([("rotate", {"degrees": 270})], id="rotate-270"),
    pytest.param([("flip", {"direction": "horizontal"})], id="flip-h"),
    pytest.param([("flip", {"direction": "vertical"})], id="flip-v"),
    pytest.param(
        [("grayscale", {}), ("blur", {"kernelSize": 5}), ("resize", {"width": 41})],
        id="chain-gray-blur-resize",
    ),
    pytest.param(
        [("autocontrast", {"cutoff": 1}), ("rotate", {}), ("resize", {"height": 30})],
        id="chain-contrast-rotate-resize",
    ),
]


@pytest.mark.parametrize("ops", PARITY)
@pytest.mark.parametrize(
    "src",
    [
        pytest.param(image(), id="rgb-64x48"),
        pytest.param(image(37, 23, alpha=True, seed=1), id="rgba-37x23"),
        pytest.param(image(5, 3, alpha=True, seed=2), id="rgba-5x3"),
    ],
)
def test_js_port_matches_pillow(
    tmp_path: Path, src: Image.Image, ops: list[tuple[str, dict[str, Any]]]
) -> None:
    assert all(OPS[name].client for name, _ in ops)
    expected = run_python(src, ops)
    actual = run_js(tmp_path, src, ops)
    assert actual.shape == expected.shape
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    # The ports reproduce Pillow's integer arithmetic, so they are bit-exact; the page's
    # contract is looser (max 1, mean 0.5 in 0..255 units) and is what we promise.
    assert diff.max() <= 1, f"max abs diff {diff.max()}, mean {diff.mean():.4f}"
    assert diff.mean() <= 0.5, f"max abs diff {diff.max()}, mean {diff.mean():.4f}"


def test_js_client_ops_are_the_client_flagged_ops(tmp_path: Path) -> None:
    """ops.js ports every ``client`` op but rembg, which runs in the model worker."""
    script = tmp_path / "names.mjs"
    script.write_text(
        "import { CLIENT_OPS } from "
        f"{json.dumps((ROOT / 'static/js/ops.js').as_uri())};\n"
        "process.stdout.write(JSON.stringify(CLIENT_OPS));\n"
    )
    done = subprocess.run([node(), str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ported = sorted(n for n, s in OPS.items() if s.client and n != "rembg")
    assert sorted(json.loads(done.stdout)) == ported
