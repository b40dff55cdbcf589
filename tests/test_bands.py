"""Whole-image passes in bands of rows (``pipeline.bands``)."""

from __future__ import annotations

import threading

import pytest

from playground_rt.pipeline import bands


def test_the_bands_cover_the_image_once_in_whole_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bands, "BAND_PIXELS", 1000)
    boxes = bands.boxes((300, 47))
    assert boxes[0] == (0, 0, 300, 3) and boxes[-1] == (0, 45, 300, 47)  # the last one short
    assert [top for _, top, _, _ in boxes] == list(range(0, 47, 3))
    assert all(bottom == top + 3 for _, top, _, bottom in boxes[:-1])


def test_a_row_wider_than_a_band_is_a_band_of_its_own() -> None:
    assert bands.boxes((bands.BAND_PIXELS * 2, 2)) == [
        (0, 0, bands.BAND_PIXELS * 2, 1),
        (0, 1, bands.BAND_PIXELS * 2, 2),
    ]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_each_band_is_worked_once_on_up_to_the_threads_given(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bands, "BAND_PIXELS", 100)
    seen: list[bands.Box] = []
    workers: set[int] = set()
    lock = threading.Lock()

    def work(box: bands.Box) -> None:
        with lock:
            seen.append(box)
            workers.add(threading.get_ident())

    bands.each((10, 95), work, threads)  # 10 bands
    assert sorted(seen) == bands.boxes((10, 95))
    assert 1 <= len(workers) <= threads
    if threads == 1:
        assert workers == {threading.get_ident()}  # on the caller's thread, no pool


def test_a_small_image_is_worked_on_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bands, "BAND_PIXELS", 100)
    workers: set[int] = set()
    count = bands.BANDS_PER_THREAD * 2 - 1  # too few bands for two threads
    bands.each((10, count), lambda box: workers.add(threading.get_ident()), 4)
    assert workers == {threading.get_ident()}


def test_a_failing_band_fails_the_pass() -> None:
    def work(box: bands.Box) -> None:
        if box[1] > 0:
            raise ValueError(f"band at {box[1]}")

    with pytest.raises(ValueError, match="band at"):
        bands.each((bands.BAND_PIXELS, 8), work, 2)
