"""Export a checkpoint to TorchScript and ONNX, check both against it, upload to the output URI."""
from __future__ import annotations

import os
import tempfile

from fer_ray import storage
from fer_ray.models import checkpoint as ckpt
from fer_ray.training.export import check_parity, export


def run_export(checkpoint_uri: str, output: str) -> dict[str, str]:
    """{kind: URI} of the written files; raises if an export differs from the checkpoint."""
    state = ckpt.load(checkpoint_uri)
    model, spec = ckpt.build_model(state), ckpt.spec_of(state)
    mean, std = (state["norm"][key].numpy() if state["norm"] else [] for key in ("mean", "std"))
    written = {}
    with tempfile.TemporaryDirectory() as directory:
        paths = export(model, spec, mean, std, directory)
        check_parity(model, spec, mean, std, directory)
        for kind, path in paths.items():
            uri = storage.join(output, os.path.basename(path))
            storage.upload_file(path, uri)  # in chunks: a big model is never whole in memory
            written[kind] = uri
    return written
