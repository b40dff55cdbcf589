"""ONNX sessions through rembg: the real u2netp model, cached, confined, never downloaded."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rembg
from PIL import Image, ImageDraw
from rembg.sessions.base import BaseSession
from rembg.sessions.u2netp import U2netpSession

from playground_rt.errors import InvalidParams, ModelUnavailable, PathOutsideRoot
from playground_rt.pipeline.model_files import U2NETP_MD5, pull
from playground_rt.pipeline.sessions import ModelRegistry, choose_providers, model_file, rembg_home

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the real u2netp: ``~/.u2net`` when it holds the right file, else pulled."""
    mine = model_file(Path.home() / ".u2net", "u2netp")
    if mine is not None and hashlib.md5(mine.read_bytes()).hexdigest() == U2NETP_MD5:
        return mine.parent
    home = tmp_path_factory.mktemp("u2net")
    pull("u2netp", home, log=lambda _: None)
    return home


@pytest.fixture
def u2netp_file(model_home: Path) -> Path:
    found = model_file(model_home, "u2netp")
    assert found is not None
    return found


@pytest.fixture
def custom_root(tmp_path: Path) -> Path:
    root = tmp_path / "outputs"
    root.mkdir()
    return root


@pytest.fixture
def registry(model_home: Path, custom_root: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv("U2NET_HOME", "")  # undone after the test: the registry overwrites it
    return ModelRegistry(model_home, custom_root, intra_op_threads=1)


def sample_image() -> Image.Image:
    """A dark disc on a light gradient: something for the model to separate."""
    image = Image.linear_gradient("L").resize((160, 120)).convert("RGB")
    ImageDraw.Draw(image).ellipse((50, 30, 110, 90), fill=(30, 40, 160))
    return image


def mask_of(session: BaseSession, image: Image.Image) -> np.ndarray:
    masks: list[Image.Image] = session.predict(image)
    return np.asarray(masks[0])


@pytest.mark.parametrize(
    ("available", "chosen"),
    [
        pytest.param([CPU], [CPU], id="cpu-only"),
        pytest.param(["AzureExecutionProvider", CPU], [CPU], id="azure-is-not-an-accelerator"),
        pytest.param([CUDA, CPU], [CUDA, CPU], id="cuda"),
        pytest.param(["TensorrtExecutionProvider", CUDA, CPU], [CUDA, CPU], id="tensorrt-skipped"),
        pytest.param([], [CPU], id="nothing-listed"),
    ],
)
def test_choose_providers(available: list[str], chosen: list[str]) -> None:
    assert choose_providers(available) == chosen


def test_u2netp_session_predicts_a_mask(registry: ModelRegistry, u2netp_file: Path) -> None:
    image = sample_image()

    mask = registry.session("u2netp").predict(image)[0]

    assert (mask.mode, mask.size) == ("L", image.size)
    disc, corner = np.asarray(mask)[60, 80], np.asarray(mask)[5, 5]
    assert int(disc) > int(corner)
    [info] = registry.info()
    assert (info.model, info.path, info.md5) == ("u2netp", str(u2netp_file), U2NETP_MD5)
    assert info.providers[-1] == CPU


def test_session_is_created_once_and_shared(registry: ModelRegistry) -> None:
    first = registry.session("u2netp")

    assert registry.session("u2netp") is first


def test_concurrent_first_calls_create_one_session(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[str] = []
    real_new_session = rembg.new_session

    def counting_new_session(name: str, **kwargs: object) -> BaseSession:
        created.append(name)
        session: BaseSession = real_new_session(name, **kwargs)
        return session

    monkeypatch.setattr(rembg, "new_session", counting_new_session)
    start = threading.Barrier(8)
    got: list[BaseSession] = []

    def worker() -> None:
        start.wait()
        got.append(registry.session("u2netp"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert created == ["u2netp"]
    assert len(got) == 8 and all(session is got[0] for session in got)


def test_warm_creates_sessions_up_front(registry: ModelRegistry) -> None:
    registry.warm(["u2netp"])

    assert [info.model for info in registry.info()] == ["u2netp"]
    assert registry.available() == ["u2netp"]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        pytest.param("u2netq", "is not a rembg model", id="typo"),
        pytest.param("u2net_custom", "is not served by name", id="custom-needs-a-path"),
        pytest.param("sam", "is not served by name", id="two-file-model"),
        pytest.param("atlascloud", "is not served by name", id="remote"),
    ],
)
def test_names_rembg_cannot_serve_from_a_file(registry: ModelRegistry, name: str, why: str) -> None:
    with pytest.raises(InvalidParams, match=why) as caught:
        registry.session(name)

    assert "known: " in caught.value.detail and "u2netp" in caught.value.detail


def test_missing_model_file_says_how_to_pull_and_downloads_nothing(
    tmp_path: Path, custom_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("U2NET_HOME", "")
    empty = tmp_path / "empty-home"
    empty.mkdir()
    registry = ModelRegistry(empty, custom_root, intra_op_threads=1)

    with pytest.raises(ModelUnavailable, match="run `playground-rt models pull --model u2net`"):
        registry.session("u2net")

    assert list(empty.iterdir()) == []  # rembg never got to start a download
    assert registry.available() == []
    assert registry.info() == []


@pytest.mark.parametrize("layout", ["models/u2netp/u2netp.onnx", "u2netp.onnx"])
def test_model_file_agrees_with_rembg(tmp_path: Path, u2netp_file: Path, layout: str) -> None:
    target = tmp_path / layout
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(u2netp_file, target)

    with rembg_home(tmp_path):
        assert U2netpSession.resolve_existing("u2netp.onnx") == str(target)
    assert model_file(tmp_path, "u2netp") == target


def test_custom_onnx_gives_the_same_mask_as_u2netp(
    registry: ModelRegistry, custom_root: Path, u2netp_file: Path
) -> None:
    mine = custom_root / "runs" / "mine.onnx"
    mine.parent.mkdir()
    shutil.copyfile(u2netp_file, mine)
    image = sample_image()

    custom = registry.custom(mine)

    assert registry.custom(custom_root / "runs" / ".." / "runs" / "mine.onnx") is custom
    np.testing.assert_array_equal(
        mask_of(custom, image), mask_of(registry.session("u2netp"), image)
    )
    assert [(i.model, i.path, i.md5) for i in registry.info()] == [
        ("u2netp", str(u2netp_file), U2NETP_MD5),
        ("u2net_custom", str(mine), None),
    ]


def test_replaced_custom_file_is_reloaded(
    registry: ModelRegistry, custom_root: Path, u2netp_file: Path
) -> None:
    mine = custom_root / "mine.onnx"
    shutil.copyfile(u2netp_file, mine)
    before = registry.custom(mine)

    shutil.copyfile(u2netp_file, mine)
    os.utime(mine, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))

    assert registry.custom(mine) is not before


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth"])
def test_pytorch_checkpoints_must_be_exported(
    registry: ModelRegistry, custom_root: Path, suffix: str
) -> None:
    checkpoint = custom_root / f"epoch_9{suffix}"
    checkpoint.write_bytes(b"torch zip")

    with pytest.raises(InvalidParams, match=r"PyTorch checkpoint; export it to ONNX"):
        registry.custom(checkpoint)


def test_other_files_are_not_models(registry: ModelRegistry, custom_root: Path) -> None:
    with pytest.raises(InvalidParams, match=r"must be an \.onnx file"):
        registry.custom(custom_root / "notes.txt")


def test_paths_outside_the_root_are_refused(
    registry: ModelRegistry, custom_root: Path, u2netp_file: Path
) -> None:
    outside = custom_root.parent / "elsewhere.onnx"
    shutil.copyfile(u2netp_file, outside)
    link = custom_root / "link.onnx"
    link.symlink_to(outside)

    with pytest.raises(PathOutsideRoot):
        registry.custom(custom_root / ".." / "elsewhere.onnx")
    with pytest.raises(PathOutsideRoot):
        registry.custom(link)


def test_missing_custom_file(registry: ModelRegistry, custom_root: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"checkpoint_path gone\.onnx not found"):
        registry.custom(custom_root / "gone.onnx")


def test_garbage_onnx_is_unavailable_with_a_short_reason(
    registry: ModelRegistry, custom_root: Path
) -> None:
    garbage = custom_root / "garbage.onnx"
    garbage.write_bytes(b"garbage" * 100)

    with pytest.raises(ModelUnavailable) as caught:
        registry.custom(garbage)

    detail = caught.value.detail
    assert detail.startswith("checkpoint_path garbage.onnx cannot be loaded: INVALID_PROTOBUF")
    assert str(custom_root) not in detail and len(detail) < 300
    assert registry.info() == []


def test_the_all_cores_session_gives_bit_identical_masks(
    model_home: Path, custom_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job alone in the pool runs on the wide session: its result must not depend on that."""
    monkeypatch.setenv("U2NET_HOME", str(model_home))
    registry = ModelRegistry(model_home, custom_root, intra_op_threads=1, wide_threads=2)
    narrow, wide = registry.session("u2netp"), registry.session("u2netp", wide=True)
    assert narrow is not wide
    image = sample_image()
    for angle in (0, 90, 180):
        turned = image.rotate(angle, expand=True)
        assert np.array_equal(mask_of(narrow, turned), mask_of(wide, turned))
