"""The cache key used alone (``pipeline/registry.py``): a plan's canonical params, the
canonical JSON the page reproduces with Web Crypto, and the digest that names a job and its
result. No server: the key is recomputed here from its documented form."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from playground_rt.pipeline import registry

IMAGE_SHA = hashlib.sha256(b"the image's bytes").hexdigest()


def key(pipeline_id: str, params: dict[str, Any], image_sha: str = IMAGE_SHA) -> str:
    plan = registry.get_pipeline(pipeline_id).plan(params)
    return registry.cache_key(pipeline_id, registry.digest(plan, image_sha))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param({"b": 1, "a": 2}, '{"a":2,"b":1}', id="keys-sorted-no-spaces"),
        pytest.param({"name": "café"}, '{"name":"café"}', id="non-ascii-kept"),
        pytest.param([1.0, -0.0, 0.5], "[1,0,0.5]", id="integral-as-integers"),
        pytest.param([2.1234567, 1e-7], "[2.123457,0]", id="six-decimals"),
        pytest.param({"off": None, "on": True}, '{"off":null,"on":true}', id="literals"),
    ],
)
def test_canonical_json(value: object, text: str) -> None:
    assert registry.canonical_json(value) == text


def test_the_digest_is_sha256_over_the_documented_form() -> None:
    """Not Python's ``hash``: the key must not depend on the process (or the language)."""
    plan = registry.get_pipeline("preprocessing").plan({"blur": {"kernelSize": 3}})
    assert plan.canonical == '{"blur":{"kernelSize":3}}'
    text = "\n".join(
        ["playground-rt/cache-v2", "preprocessing", "1", plan.canonical, "", IMAGE_SHA]
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    assert registry.digest(plan, IMAGE_SHA) == digest
    assert registry.cache_key("preprocessing", digest) == f"preprocessing:{digest}"
    job_id = registry.job_id("preprocessing", digest)
    assert job_id == f"preprocessing-{digest}"
    assert registry.split_job_id(job_id) == ("preprocessing", digest)


def test_defaults_are_filled_in_so_spelling_them_out_changes_nothing() -> None:
    assert key("preprocessing", {"blur": True}) == key("preprocessing", {"blur": {"kernelSize": 5}})
    assert key("rembg", {}) == key("rembg", {"strength": 1.0, "model": "u2netp"})


def test_where_the_work_runs_is_not_part_of_the_key() -> None:
    placed: list[dict[str, Any]] = [
        {"rembg": True},
        {"rembg": "client"},
        {"rembg": "server"},
        {"rembg": True, "background_removal": "client"},
    ]
    assert len({key("preprocessing", params) for params in placed}) == 1
    flat: list[dict[str, Any]] = [{}, {"rembg": "client"}, {"background_removal": "server"}]
    assert len({key("rembg", params) for params in flat}) == 1


def test_params_are_rounded_to_what_the_key_names() -> None:
    """Six decimals in the canonical form, so the params that run are those: two sliders
    a float's noise apart are one job."""
    assert key("rembg", {"strength": 0.8500001}) == key("rembg", {"strength": 0.85})
    assert key("rembg", {"strength": 0.851}) != key("rembg", {"strength": 0.85})


def test_the_image_the_checkpoint_and_the_pipeline_each_change_the_key() -> None:
    plan = registry.get_pipeline("rembg").plan({})
    base = registry.digest(plan, IMAGE_SHA)
    other_image = hashlib.sha256(b"other bytes").hexdigest()
    assert registry.digest(plan, other_image) != base
    assert registry.digest(plan, IMAGE_SHA, checkpoint_sha256="ab" * 32) != base
    assert key("preprocessing", {"rembg": True}) != key("rembg", {})


def test_a_checkpoint_is_keyed_by_its_bytes(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.onnx"
    checkpoint.write_bytes(b"weights")
    assert registry.file_sha256(checkpoint) == hashlib.sha256(b"weights").hexdigest()
