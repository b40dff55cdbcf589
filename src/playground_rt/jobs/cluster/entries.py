"""A queued entry read back into a job, on a worker: checked before it runs.

An entry of the ``jobs`` stream carries the request as the web node prepared it (pipeline,
params, image bytes, checkpoint path, job id; ``wire.decode_body``). The worker plans it
again and checks that the job id is still what the image bytes, the params and the
checkpoint hash to: a checkpoint changed since it was queued, or a worker that runs another
version of the pipeline, fails the job (``OpFailed``) instead of writing a result under an
id it does not belong to. Checkpoints are hashed once per version (``registry.FileDigests``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec

from playground_rt import errors
from playground_rt.config import Settings
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.job import Prepared
from playground_rt.paths import confine
from playground_rt.pipeline import images, registry


class Entries:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._digest_file = registry.FileDigests()

    def prepared(self, data: bytes) -> Prepared:
        """The entry's job, checked (see the module docstring)."""
        try:
            body = wire.decode_body(data)
            params = msgspec.json.decode(body.params)
        except msgspec.DecodeError as exc:
            raise errors.OpFailed(f"the queued entry cannot be read: {exc}") from None
        s = self.settings
        plan = registry.get_pipeline(body.pipeline_id).plan(params)
        image_sha = hashlib.sha256(body.image).hexdigest()
        checkpoint = None
        ckpt_sha = ""
        if body.checkpoint is not None:
            checkpoint = confine(s.outputs_root, body.checkpoint, field="checkpoint_path")
            ckpt_sha = self._digest(checkpoint)
        probed = images.probe(body.image, images.Limits(s.max_image_bytes, s.max_pixels))
        digest = registry.digest(plan, image_sha, ckpt_sha)
        if registry.job_id(plan.pipeline.id, digest) != body.job_id:
            raise errors.OpFailed(
                f"job {body.job_id} does not match what this worker has (its checkpoint "
                "changed since it was queued, or the worker runs another pipeline version)"
            )
        return Prepared(
            plan,
            images.Source(body.image, image_sha),
            checkpoint,
            body.job_id,
            registry.cache_key(plan.pipeline.id, digest),
            (),
            probed.size,
        )

    def _digest(self, path: Path) -> str:
        try:
            return self._digest_file(path)
        except OSError as exc:
            raise errors.ModelUnavailable(f"checkpoint_path {path.name} not found: {exc}") from None
