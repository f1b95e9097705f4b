"""Training throughput: our Ray Train job vs a plain single-process PyTorch loop.

Both train the same family on the same preprocessed faces (clips for the clip families)
for the same epochs, batch size and torch threads, with the same per-epoch validation pass
and augmentation:
  (a) `fer_ray.training.trainer.run` (1 Ray Train worker, decoded splits cached);
  (b) a loop over in-memory tensors with the same model, optimiser, Batcher and metrics.
Steady-state samples/s comes from the epochs after the first (a's first epoch includes
its worker start-up; reported separately as the fixed cost of a run). Several families
(`--model cnn_lstm,c3d`) are measured one after the other and printed side by side.

Clip families train on synthetic clips/ (tests/clip_shards.py: committed, schema.CLIPS,
48 px grey, `--frames` per clip) until the video sample archive can be preprocessed here.

    .venv/bin/python bench/train.py [--scale 8] [--epochs 6] [--model dexpression_fer]
    .venv/bin/python bench/train.py --model cnn_lstm,c3d --clip-subjects 12 --epochs 4 --batch-size 16
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from fer_ray.config import PreprocessConfig, TrainConfig  # noqa: E402
from fer_ray.models import checkpoint as ckpt  # noqa: E402
from fer_ray.models import create_model, get_spec  # noqa: E402
from fer_ray.models.inputs import Batcher  # noqa: E402
from fer_ray.pipelines import preprocess  # noqa: E402
from fer_ray.pipelines.demo import sample_input  # noqa: E402
from fer_ray.sample_data import write_sample_data  # noqa: E402
from fer_ray.training import data, trainer  # noqa: E402
from fer_ray.training.augment import augmenter  # noqa: E402
from fer_ray.training.loop import cosine_lr  # noqa: E402
from fer_ray.training.metrics import confusion_matrix  # noqa: E402
from tests.clip_shards import write_clip_shards  # noqa: E402


def make_shards(root: str, scale: int) -> str:
    write_sample_data(f"{root}/raw", scale=scale, layouts=("fer2013",))
    output = f"{root}/faces"
    preprocess.run(PreprocessConfig(layout="fer2013", input=sample_input(f"{root}/raw", "fer2013"), output=output))
    return output


def make_clip_shards(root: str, subjects: int, frames: int) -> str:
    output = f"{root}/clips"
    write_clip_shards(output, subjects=subjects, takes=2, frames=frames)
    return output


def split_tensors(info, label_set: str, split: str) -> dict:
    batches = list(data.read_split(info, label_set, split).iter_batches(batch_format="numpy", batch_size=None))
    return {key: torch.from_numpy(np.concatenate([b[key] for b in batches])) for key in batches[0]}


def plain_loop(cfg: TrainConfig, info, threads: int) -> list[float]:
    """Seconds per epoch of a single-process loop doing what each Ray Train epoch does."""
    torch.set_num_threads(threads)
    label_set, spec = cfg.resolved_label_set(), get_spec(cfg.model)
    train, val = split_tensors(info, label_set, "train"), split_tensors(info, label_set, "val")
    norm = data.normalisation(data.read_split(info, label_set, "train"), info.face_shape, info.clip_length)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=len(info.class_names), **ckpt.architecture(cfg))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.resolved_lr(), weight_decay=cfg.weight_decay)
    batcher, loss_fn = Batcher(spec, norm, torch.device("cpu"), info.face_shape[0]), torch.nn.CrossEntropyLoss()
    times = []
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(cfg.resolved_lr(), epoch, cfg.epochs)
        generator = torch.Generator().manual_seed(epoch)
        model.train()
        for batch in batches(train, cfg.batch_size, generator):
            loss = loss_fn(model(*batcher.inputs(batch, augmenter(cfg.augment, generator, batcher.face_side))),
                           batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for batch in batches(val, cfg.batch_size):
                confusion_matrix(batch["label"].numpy(), model(*batcher.inputs(batch)).argmax(1).numpy(),
                                 len(info.class_names))
        times.append(time.perf_counter() - started)
    return times


def batches(tensors: dict, size: int, generator: torch.Generator | None = None):
    n = len(tensors["label"])
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, size):
        index = order[start:start + size]
        yield {key: value[index] for key, value in tensors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=8, help="sample-data scale (8: ~1,000 faces)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="dexpression_fer", help="family, or comma-separated families")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch threads on both sides (Ray worker: cpus_per_worker)")
    parser.add_argument("--clip-subjects", type=int, default=12, help="clip families: subjects x 4 classes x 2 takes")
    parser.add_argument("--frames", type=int, default=12, help="clip families: frames per clip (seed 001: 12)")
    parser.add_argument("--fc-size", type=int, default=0, help="c3d's FC width; 0 = 4096")
    args = parser.parse_args()
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False)
    lines = []
    with tempfile.TemporaryDirectory() as root:
        for model in args.model.split(","):
            lines.append(measure(model, root, args))
    for line in lines:
        print(line)


def measure(model: str, root: str, args) -> str:
    """Train one family both ways on the same shards; print the epochs, return the bench line."""
    clips = get_spec(model).needs_clips
    shards = make_clip_shards(root, args.clip_subjects, args.frames) if clips else make_shards(root, args.scale)
    cfg = TrainConfig(data=shards, output=f"{root}/run-{model}", model=model, epochs=args.epochs,
                      batch_size=args.batch_size, workers=1, cpus_per_worker=args.threads, cache="on",
                      fc_size=args.fc_size if model == "c3d" else 0)
    info = trainer.check(cfg)
    n_train = sum(info.counts["train"])
    started = time.perf_counter()
    report = trainer.run(cfg, test=False)
    wall = time.perf_counter() - started
    ours = [h["epoch_s"] for h in report["history"]]
    base = plain_loop(cfg, info, args.threads)
    ours_rate, base_rate = n_train / np.median(ours[1:]), n_train / np.median(base[1:])
    samples = f"clips of {info.clip_length} frames" if clips else "faces"
    print(f"{model}: {n_train} train {samples}, {args.epochs} epochs, batch {args.batch_size}, torch threads: "
          f"ours {report['history'][-1]['torch_threads']}, plain {args.threads}")
    print(f"  ours  epoch s: {', '.join(f'{t:.2f}' for t in ours)}  (run wall {wall:.1f} s incl. start-up, "
          f"normalisation pass and checkpoint upload)")
    print(f"  plain epoch s: {', '.join(f'{t:.2f}' for t in base)}")
    print(f"  overhead of Ray Train: {1 - ours_rate / base_rate:+.1%} of the plain loop's samples/s")
    return (f"bench train {model}: ours={ours_rate:.1f} samples/s, baseline={base_rate:.1f} samples/s, "
            f"ratio={ours_rate / base_rate:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
