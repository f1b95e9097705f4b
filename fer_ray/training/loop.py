"""The per-worker training loop that Ray Train runs on every worker.

Each epoch: train on this worker's shard (DDP keeps replicas equal), validate on its
val shard, sum the confusion matrices over workers, report the metrics, and (rank 0)
attach a checkpoint. A restarted worker group resumes from the latest checkpoint.
"""
from __future__ import annotations

import json
import math
import tempfile
import time

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from fer_ray import storage
from fer_ray.config import TrainConfig, apply_dict
from fer_ray.models import checkpoint as ckpt
from fer_ray.models import create_model, get_spec
from fer_ray.models.inputs import Batcher
from fer_ray.training.augment import augmenter
from fer_ray.training.metrics import confusion_matrix, summarise


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Cosine decay by epoch, computed (not stored) so a resumed run continues the schedule."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def train_step(model, optimizer, loss_fn, batch: dict, batcher: Batcher, cfg: TrainConfig,
               generator: torch.Generator, autocast: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on one batch (augmented as cfg says); returns (loss, labels).
    The recipes test runs exactly this on each config, without a Ray Train worker group."""
    inputs = batcher.inputs(batch, augmenter(cfg.augment, generator, batcher.face_side))
    labels = batch["label"].to(batcher.device)
    with torch.autocast(**autocast):
        loss = loss_fn(model(*inputs).float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, labels


def new_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.resolved_lr(), weight_decay=cfg.weight_decay)


def train_epoch(model, optimizer, loss_fn, shard, batcher: Batcher, cfg: TrainConfig,
                generator: torch.Generator, autocast: dict) -> tuple[float, int]:
    """One pass over this worker's shard; returns (mean loss over all workers, samples here)."""
    model.train()
    loss_sum, seen = torch.zeros(2, device=batcher.device), 0
    for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, local_shuffle_buffer_size=4 * cfg.batch_size,
                                          local_shuffle_seed=int(generator.initial_seed() % 2**31)):
        loss, labels = train_step(model, optimizer, loss_fn, batch, batcher, cfg, generator, autocast)
        loss_sum += torch.stack([loss.detach() * len(labels), torch.tensor(float(len(labels)), device=loss.device)])
        seen += len(labels)
    total = _all_reduce(loss_sum)
    return (total[0] / total[1].clamp_min(1)).item(), seen


@torch.no_grad()
def evaluate_shard(model, loss_fn, shard, batcher: Batcher, num_classes: int, batch_size: int,
                   autocast: dict) -> tuple[np.ndarray, float]:
    """Confusion matrix and mean loss over the shards of all workers (summed with all_reduce)."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=batcher.device)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=batcher.device)
    for batch in shard.iter_torch_batches(batch_size=batch_size):
        labels = batch["label"].to(batcher.device)
        with torch.autocast(**autocast):
            logits = model(*batcher.inputs(batch)).float()
        loss_sum += torch.stack([loss_fn(logits, labels).double() * len(labels),
                                 torch.tensor(float(len(labels)), dtype=torch.float64, device=labels.device)])
        confusion += torch.as_tensor(confusion_matrix(labels.cpu().numpy(), logits.argmax(1).cpu().numpy(),
                                                      num_classes), dtype=torch.float64, device=labels.device)
    confusion, loss_sum = _all_reduce(confusion), _all_reduce(loss_sum)
    return confusion.cpu().numpy().astype(np.int64), (loss_sum[0] / loss_sum[1].clamp_min(1)).item()


def epoch_metrics(epoch: int, train_loss: float, val_loss: float, confusion: np.ndarray,
                  class_names, restored_epoch: int, lr: float, elapsed: float) -> dict:
    """What each epoch reports to Ray Train (flat scalars, so Tune and the CSV can use them)."""
    summary = summarise(confusion, class_names)
    recalls = {f"val_recall_{name}": value for name, value in summary["per_class_recall"].items()}
    return {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
            "val_accuracy": summary["accuracy"], "val_macro_f1": summary["macro_f1"], **recalls,
            "lr": lr, "restored_from_epoch": restored_epoch, "epoch_s": round(elapsed, 3),
            "torch_threads": torch.get_num_threads()}


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's entry point on each worker. loop_config: config, norm, class_names,
    class_weights (or None) and face_side, all prepared by the driver."""
    cfg = TrainConfig()
    apply_dict(cfg, loop_config["config"])
    class_names = tuple(loop_config["class_names"])
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    model, ddp_model, optimizer, state = _build(cfg, len(class_names), loop_config.get("init_state"))
    start_epoch, history, restored = (
        (state["epoch"] + 1, list(state["history"]), state["epoch"]) if state else (0, [], -1))
    weights = loop_config.get("class_weights")
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, device=device) if weights else None)
    batcher = Batcher(get_spec(cfg.model), loop_config["norm"], device, loop_config["face_side"])
    autocast = {"device_type": device.type, "dtype": torch.bfloat16,
                "enabled": device.type == "cuda" and cfg.bf16}
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    for epoch in range(start_epoch, cfg.epochs):
        started = time.time()
        lr = cosine_lr(cfg.resolved_lr(), epoch, cfg.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 101 + rank)
        train_loss, _ = train_epoch(ddp_model, optimizer, loss_fn, train_shard, batcher, cfg, generator, autocast)
        confusion, val_loss = evaluate_shard(ddp_model, loss_fn, val_shard, batcher, len(class_names),
                                             cfg.batch_size, autocast)
        history.append(epoch_metrics(epoch, train_loss, val_loss, confusion, class_names, restored, lr,
                                     time.time() - started))
        _report(history, rank, model, optimizer, loop_config, class_names)
        if rank == 0:
            write_progress(cfg, history)
    if start_epoch >= cfg.epochs and history:
        # resumed with every epoch done (the last one's checkpoint was uploaded, the driver killed
        # before Ray recorded it): its scores once more, or Tune ends the trial with no metric and
        # raises; the checkpoint comes from the run's own files (trainer.best_and_history)
        ray.train.report(history[-1])


def _build(cfg: TrainConfig, num_classes: int, init_state: dict | None = None):
    """(model, its DDP-prepared wrapper, optimizer, restored state or None).

    Ray Train's latest checkpoint exists after a worker failure, or when a run is started
    again into the same output; weights and optimiser state both come back from it. A new
    run starts from init_state when given (--init pretrained).
    """
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=num_classes, **ckpt.architecture(cfg),
                         **({"weights_path": cfg.weights_path} if cfg.weights_path else {}))
    state = _latest_state(cfg)
    if state is not None:
        model.load_state_dict(state["model"])
    elif init_state is not None:
        model.load_state_dict(init_state)
    ddp_model = ray.train.torch.prepare_model(model)  # moves `model` to the device in place
    optimizer = new_optimizer(model, cfg)
    if state and state["optimizer"]:
        optimizer.load_state_dict(state["optimizer"])
    return model, ddp_model, optimizer, state


def _latest_state(cfg: TrainConfig) -> dict | None:
    """The checkpoint to continue from: Ray Train's latest, else the newest readable epoch
    checkpoint in the run's storage. Ray does not always hand one to a worker group it
    restarted after its workers were killed (seen on Ray 2.60); the run's own files do."""
    latest = ray.train.get_checkpoint()
    if latest is not None:
        with latest.as_directory() as directory:
            return ckpt.load_local(directory)
    return ckpt.newest_epoch_state(cfg.output) if cfg.resume else None


PROGRESS_FILE = "progress.json"


def write_progress(cfg: TrainConfig, history: list[dict]) -> None:
    """The epochs done so far and the last one's scores, for the driver's progress display
    (Ray Train hands reports to its controller actor, not to the driver that waits on fit)."""
    last = history[-1]
    progress = {"inputs": last["epoch"] + 1, "status": {
        name: round(last[name], 3) for name in ("train_loss", "val_loss", "val_macro_f1")}}
    storage.write_bytes(storage.join(cfg.output, PROGRESS_FILE), json.dumps(progress).encode())


def _report(history: list[dict], rank: int, model, optimizer, loop_config: dict, class_names) -> None:
    """Every worker reports; rank 0 also hands Ray Train this epoch's checkpoint to upload."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            ckpt.save(ckpt.make_checkpoint(model=model, optimizer=optimizer, cfg_dict=loop_config["config"],
                                           class_names=class_names, norm=loop_config["norm"],
                                           epoch=history[-1]["epoch"], history=history,
                                           face=loop_config.get("face")), directory)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(history[-1], checkpoint=checkpoint)
