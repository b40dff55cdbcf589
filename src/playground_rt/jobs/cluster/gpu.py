"""A worker's models: pulled and loaded before it takes a job, on the GPU when required.

Users of rembg's server find out late that their GPU sat unused (onnxruntime quietly falls
back to the CPU when the CUDA provider is missing or cannot load its libraries); a worker
started with ``--require-gpu`` refuses to start instead, saying which of the two it is.
"""

from __future__ import annotations

import logging

import onnxruntime as ort

from playground_rt.config import Settings
from playground_rt.pipeline import model_files
from playground_rt.pipeline.sessions import ModelRegistry

log = logging.getLogger("playground_rt.worker")

CUDA = "CUDAExecutionProvider"


class GpuRequired(Exception):
    """``--require-gpu`` and no working CUDA provider: the worker refuses to start."""


def load_models(settings: Settings, models: ModelRegistry) -> None:
    """Pull (if allowed) and load ``settings.preload_models`` into ``models``; with
    ``settings.require_gpu``, ``GpuRequired`` unless every session runs on CUDA."""
    if settings.require_gpu and CUDA not in ort.get_available_providers():
        raise GpuRequired(
            f"--require-gpu: onnxruntime {ort.__version__} offers "
            f"{', '.join(ort.get_available_providers())} and no {CUDA}; install "
            "onnxruntime-gpu (`EXTRAS=gpu ./scripts/serve`, or `pip install -e '.[gpu]'`) "
            "on a host with an NVIDIA GPU, CUDA and cuDNN"
        )
    for model in settings.preload_models:
        if settings.pull_models:
            model_files.pull(model, settings.model_home, log=log.info)
    models.warm(settings.preload_models)
    if not settings.require_gpu:
        return
    for info in models.info():
        if info.providers[:1] != [CUDA]:
            raise GpuRequired(
                f"--require-gpu: model {info.model} runs on {', '.join(info.providers)}: "
                f"{CUDA} is installed but could not start (check the CUDA and cuDNN "
                "libraries onnxruntime-gpu needs, and that a GPU is visible)"
            )
