"""The page's rembg op around the model (``static/js/rembg-ops.js``, ``resample.js``) against
rembg and Pillow under node, bit for bit: LANCZOS, u2netp's input tensor, the mask from the
model's output, the cut-out with strength, bgcolor and only_mask. The model's run itself is
compared in the browser (``tests/test_page_rembg.py``)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from bench.synth import photo
from PIL import Image
from rembg.sessions.base import BaseSession
from rembg.sessions.u2netp import U2netpSession

from playground_rt.pipeline.ops import OpContext, SessionProvider, get_op, parse_params

from .conftest import MODEL_HOME, require_model, sample_image

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "js" / "rembg_check.mjs"
SIDE = 320
U8 = npt.NDArray[np.uint8]


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node (v20+) is not on PATH: the JS parity tests need it")
    return found


def b64(data: bytes | npt.NDArray[Any]) -> str:
    return base64.b64encode(data if isinstance(data, bytes) else data.tobytes()).decode()


def run_js(tmp_path: Path, cases: list[dict[str, Any]]) -> list[bytes]:
    job = tmp_path / "rembg-job.json"
    job.write_text(json.dumps(cases))
    done = subprocess.run(
        [node(), str(CHECK), str(job)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [base64.b64decode(text) for text in json.loads(done.stdout)]


def rgba(image: Image.Image) -> dict[str, Any]:
    converted = image.convert("RGBA")
    return {"data": b64(converted.tobytes()), "width": image.width, "height": image.height}


class Recorder:
    """An inner session that answers ``run`` with a fixed prediction and keeps its input."""

    def __init__(self, pred: npt.NDArray[np.float32]) -> None:
        self.pred = pred
        self.fed: npt.NDArray[np.float32] | None = None

    def get_inputs(self) -> list[Any]:
        return [type("Input", (), {"name": "input.1"})()]

    def run(self, outputs: Any, feed: dict[str, npt.NDArray[np.float32]]) -> list[Any]:
        self.fed = feed["input.1"]
        return [self.pred]


PROBE = np.linspace(0, 1, SIDE * SIDE, dtype=np.float32).reshape(1, 1, SIDE, SIDE)
"""A prediction for runs whose output does not matter (it must not be flat: min-max)."""


def fake_u2netp(pred: npt.NDArray[np.float32]) -> tuple[U2netpSession, Recorder]:
    session = U2netpSession.__new__(U2netpSession)
    inner = Recorder(pred)
    session.inner_session = inner
    return session, inner


@pytest.fixture(scope="module")
def u2netp_run() -> ort.InferenceSession:
    require_model()
    return ort.InferenceSession(str(MODEL_HOME / "u2netp.onnx"), providers=["CPUExecutionProvider"])


# --- LANCZOS ----------------------------------------------------------------------------------

RESIZES = [
    pytest.param((640, 480), (320, 320), "RGB", id="rgb-640x480-to-320"),
    pytest.param((1633, 1225), (320, 320), "RGB", id="rgb-2mp-to-320"),
    pytest.param((120, 2000), (320, 320), "RGB", id="rgb-tall-to-320"),
    pytest.param((37, 23), (320, 320), "RGB", id="rgb-up-to-320"),
    pytest.param((320, 320), (640, 480), "L", id="mask-to-640x480"),
    pytest.param((320, 320), (1633, 1225), "L", id="mask-to-2mp"),
    pytest.param((320, 320), (37, 23), "L", id="mask-down"),
    pytest.param((320, 320), (5, 3000), "L", id="mask-odd"),
]


@pytest.mark.parametrize(("size", "target", "mode"), RESIZES)
def test_lanczos_is_pillows(
    tmp_path: Path, size: tuple[int, int], target: tuple[int, int], mode: str
) -> None:
    source = photo(5, size).convert(mode)
    bands = len(mode)
    if mode == "RGB":  # Pillow keeps RGB as 4 bytes a pixel; RGBA with alpha 255 is the same
        source_bytes, bands = source.convert("RGBA").tobytes(), 4
    else:
        source_bytes = source.tobytes()
    case = {
        "kind": "resize",
        "data": b64(source_bytes),
        "width": size[0],
        "height": size[1],
        "bands": bands,
        "out_width": target[0],
        "out_height": target[1],
        "filter": "lanczos",
    }
    (got,) = run_js(tmp_path, [case])
    expected = source.resize(target, Image.Resampling.LANCZOS)
    if mode == "RGB":
        expected = expected.convert("RGBA")
    assert got == expected.tobytes()


# --- the model's input and output -------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(photo(1), id="photo-640x480"),
        pytest.param(photo(2, (1633, 1225)), id="photo-2mp"),
        pytest.param(sample_image(57, 31, mode="RGBA"), id="rgba-small"),
        pytest.param(Image.new("RGB", (40, 30)), id="black"),
    ],
)
def test_input_tensor_is_rembgs(tmp_path: Path, image: Image.Image) -> None:
    session, inner = fake_u2netp(PROBE)
    session.predict(image)
    assert inner.fed is not None and inner.fed.shape == (1, 3, SIDE, SIDE)
    (got,) = run_js(tmp_path, [{"kind": "input", **rgba(image)}])
    np.testing.assert_array_equal(np.frombuffer(got, np.float32), inner.fed.ravel())


@pytest.mark.parametrize("size", [(640, 480), (1633, 1225), (33, 17)])
def test_mask_from_the_prediction_is_rembgs(
    tmp_path: Path, u2netp_run: ort.InferenceSession, size: tuple[int, int]
) -> None:
    image = photo(4, size)
    probe, inner = fake_u2netp(PROBE)
    probe.predict(image)
    pred = u2netp_run.run(None, {"input.1": inner.fed})[0]
    session, _ = fake_u2netp(pred)
    (expected,) = session.predict(image)
    case = {"kind": "mask", "pred": b64(pred[0, 0].copy()), "side": SIDE}
    (got,) = run_js(tmp_path, [{**case, "width": size[0], "height": size[1]}])
    assert got == expected.tobytes()


# --- after the model: the op's result from its mask ------------------------------------------


class FixedMask:
    """A session whose "model" answers a given mask (so only the op's own work is compared)."""

    def __init__(self, mask: Image.Image) -> None:
        self.mask = mask

    def predict(self, img: Image.Image, *args: Any, **kwargs: Any) -> list[Image.Image]:
        return [self.mask]


class MaskModels(SessionProvider):
    def __init__(self, mask: Image.Image) -> None:
        self._session = FixedMask(mask)

    def session(self, model: str, wide: bool = False) -> BaseSession:
        return self._session


def soft_mask(size: tuple[int, int], seed: int) -> Image.Image:
    """Every alpha value, in soft edges and noise: a hard case for the blends."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.clip(((xx + yy) * 255) // max(w + h - 2, 1), 0, 255)
    noise = rng.integers(-40, 40, size=(h, w))
    return Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8), "L")


FINISHES = [
    pytest.param({}, id="defaults"),
    pytest.param({"strength": 0.85}, id="strength-0.85"),
    pytest.param({"strength": 0.333333}, id="strength-third"),
    pytest.param({"strength": 0}, id="strength-0"),
    pytest.param({"bgcolor": [12, 200, 56, 255]}, id="bgcolor"),
    pytest.param({"bgcolor": [255, 0, 0, 90], "strength": 0.5}, id="bgcolor-translucent"),
    pytest.param({"only_mask": True}, id="only-mask"),
    pytest.param({"only_mask": True, "strength": 0.25, "bgcolor": [1, 2, 3, 4]}, id="mask-0.25"),
]


@pytest.mark.parametrize("params", FINISHES)
@pytest.mark.parametrize(
    "image",
    [
        pytest.param(photo(6, (96, 72)), id="rgb"),
        pytest.param(sample_image(61, 43, seed=3, mode="RGBA"), id="rgba-opaque"),
        pytest.param(Image.fromarray(np.random.default_rng(9).integers(0, 256, (29, 41, 4),
                                                                        np.uint8)), id="rgba"),
    ],
)  # fmt: skip
def test_cutout_strength_bgcolor_only_mask_are_the_servers(
    tmp_path: Path, image: Image.Image, params: dict[str, Any]
) -> None:
    mask = soft_mask(image.size, seed=image.width)
    spec = get_op("rembg")
    expected = spec.run(image, parse_params(spec, params), OpContext(models=MaskModels(mask)))
    case = {"kind": "finish", **rgba(image), "mask": b64(mask.tobytes()), "params": params}
    (got,) = run_js(tmp_path, [case])
    assert got == expected.convert("RGBA").tobytes()
