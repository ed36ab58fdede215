"""The train function: runs in every training process, under either backend.

`main(spec)` is what horovod.spark.run and TorchDistributor call. Per epoch: each rank
trains on its row groups of the train shards (AdamW, linear warmup and decay, learning
rate scaled by the world size, gradient accumulation and clipping, bf16 autocast on
GPU), then scores its part of val; loss sums are allreduced and the scores gathered, so
every rank computes the same AUC and log loss. Rank 0 writes a checkpoint each epoch
and, at the end, the best epoch's model in Hugging Face format with metrics.json.

Ranks can hold different numbers of rows (row groups are dealt round-robin); every rank
runs the same number of steps, and a rank that has run out takes part in the extra
steps with a zero-weighted batch so the collective calls stay matched.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import warnings

import numpy as np
import torch

from llmrec import conf as conf_mod
from llmrec.progress import fmt_duration, log, setup_logging
from llmrec.train import dist as dist_mod
from llmrec.train import metrics
from llmrec.train.model import build_model, exportable, load_tokenizer
from llmrec.train.readers import ShardError, open_reader, rank_rows

CHECKPOINT = "checkpoint.pt"


def main(spec: dict) -> dict | None:
    """Entry point of a training process; returns rank 0's summary (None elsewhere)."""
    spec = dict(spec, entered_at=time.time())  # start-up cost = entered_at - launched_at
    setup_logging()
    cfg = conf_mod.from_dict(spec["config"])
    use_gpu = spec["use_gpu"]
    d = dist_mod.create(spec["backend"], use_gpu)
    try:
        return Trainer(d, cfg, spec).run()
    finally:
        d.shutdown()


def improves(auc: float, best: float | None, min_delta: float) -> bool:
    """An epoch is the new best when its validation AUC beats the best by more than min_delta."""
    return best is None or auc > best + min_delta


def _threads(cfg, d) -> int:
    if cfg.train.threads_per_proc:
        return cfg.train.threads_per_proc
    if os.environ.get("OMP_NUM_THREADS"):
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, (os.cpu_count() or 1) // d.local_size)


def _param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


@dataclasses.dataclass
class RunState:
    """What a run carries from epoch to epoch, and what its checkpoint restores."""
    history: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    best_state: dict | None = None
    start_epoch: int = 0
    resumed_from: int | None = None
    initial: dict | None = None  # validation before the first epoch
    stopped_early: bool = False


class Trainer:
    def __init__(self, d: dist_mod.Dist, cfg, spec: dict):
        self.d, self.cfg, self.spec, self.t = d, cfg, spec, cfg.train
        self.out = spec["output_dir"]
        self.group_size = int(spec["manifest"].get("group_size", 1))  # rows a loss term spans
        self.is_main = d.rank == 0
        self.device = torch.device("cuda", d.local_rank) if spec["use_gpu"] else torch.device("cpu")
        if not spec["use_gpu"]:
            torch.set_num_threads(_threads(cfg, d))
        # Horovod's optimizer wrapper steps outside torch's step counter, so torch believes
        # the scheduler stepped first; the order is right.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")

    # --- data ---------------------------------------------------------------------
    def reader(self, split: str, shuffle: bool):
        return open_reader(self.t.reader, self.spec["shards"], self.spec["manifest"], split,
                           rank=self.d.rank, size=self.d.size, batch_size=self.t.batch_size,
                           shuffle=shuffle, seed=self.t.seed)

    def _tensors(self, batch: dict) -> tuple[dict, torch.Tensor]:
        inputs = {k: torch.as_tensor(batch[k], dtype=torch.long).to(self.device)
                  for k in ("input_ids", "attention_mask", "token_type_ids")}
        return inputs, torch.as_tensor(batch["label"], dtype=torch.float32).to(self.device)

    def _logits(self, model, inputs: dict) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return model(**inputs).logits.squeeze(-1).float()

    # --- checkpoints ----------------------------------------------------------------
    def _load_checkpoint(self):
        """Rank 0 reads the checkpoint of an unfinished run with the same settings; every
        rank gets it by broadcast (only rank 0 needs to see the output folder)."""
        state = None
        if self.is_main and self.t.resume:
            path = os.path.join(self.out, "checkpoints", CHECKPOINT)
            if os.path.exists(path):
                state = torch.load(path, map_location="cpu", weights_only=False)
                if state.get("fingerprint") != self.spec["fingerprint"]:
                    log.info("train: checkpoint in %s is for other settings; starting afresh", path)
                    state = None
        return self.d.broadcast_object(state)

    def _save_checkpoint(self, state: dict) -> None:
        folder = os.path.join(self.out, "checkpoints")
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, os.path.join(folder, CHECKPOINT))  # a crash never leaves half a file

    # --- evaluation -----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, split: str) -> dict:
        # The bare module: ranks may hold different numbers of batches, and a wrapper must
        # not be left waiting for a collective call the others never make.
        net = _unwrap(model).eval()
        reader = self.reader(split, shuffle=False)
        scores, labels = [], []
        for batch in reader:
            inputs, _ = self._tensors(batch)
            scores.append(self._logits(net, inputs).cpu().numpy())
            labels.append(batch["label"])
        net.train()
        local_s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        local_y = np.concatenate(labels) if labels else np.zeros(0, np.int32)
        all_s = self.d.allgather(local_s.astype(np.float64))
        all_y = self.d.allgather(local_y.astype(np.float64))
        expected = self.spec["manifest"]["splits"][split]["rows"]
        if len(all_s) != expected:
            raise ShardError(f"{split}: the ranks scored {len(all_s)} rows together, the manifest "
                             f"says {expected}")
        return {"loss": metrics.log_loss(all_y, all_s), "auc": metrics.auc(all_y, all_s),
                "rows": int(len(all_s)), "positives": int(all_y.sum())}

    # --- training -------------------------------------------------------------------
    def run(self) -> dict:
        """Builds the model, restores an unfinished run, trains epoch by epoch with early
        stopping on validation AUC, and saves the best epoch's model."""
        t = self.t
        model, optimizer, scheduler, train_reader, steps = self._build()
        run = self._restore(model, optimizer, scheduler)
        model, optimizer = self.d.prepare(model, optimizer, t.grad_accum)
        params = [p for p in model.parameters() if p.requires_grad]
        ready_at = time.time()  # processes joined, model built and broadcast
        if run.initial is None:
            run.initial = self.evaluate(model, "val")
        for epoch in range(run.start_epoch, t.epochs):
            if run.best is not None and t.patience and epoch - run.best["epoch"] >= t.patience:
                run.stopped_early = True
                break
            loss_sum, rows, seconds = self._train_epoch(model, optimizer, scheduler, params, train_reader,
                                                        steps, epoch)
            self._end_epoch(model, optimizer, scheduler, run, epoch, loss_sum, rows, seconds)
        self.timing = {"launch_to_entry_s": self.spec["entered_at"] - self.spec["launched_at"],
                       "entry_to_ready_s": ready_at - self.spec["entered_at"]}
        return self._finish(model, run)

    def _build(self):
        """The model (same initial weights on every rank), AdamW, the train reader, the
        steps every rank runs per epoch and the warmup-then-linear-decay schedule."""
        t, d = self.t, self.d
        torch.manual_seed(t.seed)
        model = build_model(self.cfg.model, self.cfg.tokenize.max_length).to(self.device)
        optimizer = torch.optim.AdamW(_param_groups(model, t.weight_decay),
                                      lr=t.lr * (d.size if t.scale_lr else 1))
        train_reader = self.reader("train", shuffle=True)
        # Every rank runs as many micro-batches as the busiest one, in whole accumulation
        # groups (Horovod counts backward passes per update).
        most = int(d.allreduce_max(train_reader.batches_per_epoch()))
        steps = math.ceil(most / t.grad_accum) * t.grad_accum
        shares = [rank_rows(self.spec["manifest"], "train", r, d.size) for r in range(d.size)]
        if self.is_main and min(shares) < 0.9 * max(shares):
            log.warning("train: ranks hold %s train rows: the smaller ones pad their last steps; "
                        "a smaller tokenize.row_group_rows evens them out", shares)
        total = steps // t.grad_accum * t.epochs
        warmup = int(t.warmup_ratio * total)
        schedule = lambda u: (u + 1) / (warmup + 1) if u < warmup else \
            max(0.0, (total - u) / max(1, total - warmup))  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        if self.is_main:
            log.info("train: %s, %d process(es), %s, %d steps/epoch of %d x %d rows, lr %.2e, "
                     "%d warmup of %d updates, %s loss", d.name, d.size, self.device, steps, d.size,
                     t.batch_size, t.lr * (d.size if t.scale_lr else 1), warmup, total, t.loss)
        return model, optimizer, scheduler, train_reader, steps

    def _restore(self, model, optimizer, scheduler) -> "RunState":
        """The state of an unfinished run with the same settings (its last checkpoint), or a new one."""
        state = self._load_checkpoint()
        if state is None:
            return RunState()
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if self.is_main:
            log.info("train: resuming after epoch %d of %d (checkpoint)", state["epoch"], self.t.epochs)
        best_state = state["best_state"] or {k: v.clone() for k, v in state["model"].items()}
        return RunState(history=state["history"], best=state["best"], best_state=best_state,
                        start_epoch=state["epoch"], resumed_from=state["epoch"], initial=state["initial"])

    def _train_epoch(self, model, optimizer, scheduler, params, reader, steps: int,
                     epoch: int) -> tuple[float, int, float]:
        """One epoch on this rank's row groups; returns the loss sum and rows of every rank
        together, and this rank's seconds. A rank that runs out of batches takes part in
        the remaining steps with a zero-weighted batch so the collective calls stay matched."""
        t, d = self.t, self.d
        reader.set_epoch(epoch)
        model.train()
        batches = iter(reader)
        sums = np.zeros(3)  # loss sum, rows, positives (this rank)
        last = None
        t0 = time.perf_counter()
        for step in range(steps):
            batch = next(batches, None)
            weight = 1.0
            if batch is None:
                batch, weight = last, 0.0
            last = batch
            inputs, y = self._tensors(batch)
            boundary = (step + 1) % t.grad_accum == 0
            with (contextlib.nullcontext() if boundary else d.no_sync(model)):
                per_row = self._loss(self._logits(model, inputs), y)
                (per_row.mean() * weight / t.grad_accum).backward()
            if boundary:
                d.step(optimizer, params, t.max_grad_norm)
                scheduler.step()
                optimizer.zero_grad()  # Horovod's wrapper takes no set_to_none (None is the default)
            if weight:
                sums += [float(per_row.detach().sum()), len(y), float(y.sum())]
            if self.is_main and (step + 1) % (t.log_every * t.grad_accum) == 0:
                rate = (step + 1) * t.batch_size * d.size / (time.perf_counter() - t0)
                eta = (steps - step - 1) * t.batch_size * d.size / rate
                log.info("train: epoch %d/%d step %d/%d loss %.4f lr %.2e %.1f samples/s ETA %s",
                         epoch + 1, t.epochs, step + 1, steps, sums[0] / max(1, sums[1] / self.group_size),
                         scheduler.get_last_lr()[0], rate, fmt_duration(eta))
        for _ in batches:  # drains the reader so it checks its row count
            pass
        seconds = time.perf_counter() - t0
        loss_sum, rows, _ = d.allreduce_sum(sums)
        expected = self.spec["manifest"]["splits"]["train"]["rows"]
        if int(rows) != expected:
            raise ShardError(f"epoch {epoch + 1}: the ranks trained on {int(rows)} rows together, "
                             f"the manifest says {expected}")
        return loss_sum, int(rows), seconds

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """pointwise: binary cross-entropy per row; listwise: per group of a positive and
        its negatives (consecutive rows, positive first), the softmax cross-entropy of the
        positive among them. A batch that does not hold whole groups is an error."""
        g = self.group_size
        if g == 1:
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        groups = y.view(-1, g) if len(y) % g == 0 else None
        if groups is None or not bool((groups[:, 0] == 1).all() and (groups[:, 1:] == 0).all()):
            raise ShardError(f"a batch of {len(y)} rows does not hold whole groups of one positive and "
                             f"{g - 1} negatives: the listwise shards are broken (rerun tokenize)")
        return -torch.log_softmax(logits.view(-1, g), dim=1)[:, 0]

    def _end_epoch(self, model, optimizer, scheduler, run: "RunState", epoch: int, loss_sum: float,
                   rows: int, seconds: float) -> None:
        """Validates, keeps the best epoch's weights (better = AUC up by more than
        train.min_delta) and, on rank 0, logs and writes the checkpoint."""
        t = self.t
        val = self.evaluate(model, "val")
        record = {"epoch": epoch + 1, "train_loss": loss_sum / (rows / self.group_size), "val_loss": val["loss"],
                  "val_auc": val["auc"], "train_rows": rows, "seconds": seconds,
                  "samples_per_s": rows / seconds, "lr": scheduler.get_last_lr()[0]}
        run.history.append(record)
        improved = improves(val["auc"], run.best and run.best["val_auc"], t.min_delta)
        if improved:
            run.best = {"epoch": epoch + 1, "val_auc": val["auc"], "val_loss": val["loss"]}
            # Kept so the final model is the best epoch's, not the last one's.
            run.best_state = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
        if self.is_main:
            log.info("train: epoch %d/%d done in %s: train loss %.4f, val loss %.4f, val AUC "
                     "%.4f, %.1f samples/s%s", epoch + 1, t.epochs, fmt_duration(seconds),
                     record["train_loss"], val["loss"], val["auc"], record["samples_per_s"],
                     " (best)" if improved else "")
            self._save_checkpoint({
                "epoch": epoch + 1, "fingerprint": self.spec["fingerprint"],
                "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": run.history, "best": run.best,
                "initial": run.initial,
                # The best weights only when they differ from the current ones.
                "best_state": None if improved else run.best_state})

    def _param_digests(self, model) -> list[str]:
        """sha256 of each rank's parameters, gathered: proof the replicas stayed identical."""
        h = hashlib.sha256()
        for name, p in sorted(_unwrap(model).state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        gathered = self.d.allgather(np.frombuffer(h.digest(), dtype=np.uint8).astype(np.float64))
        return [bytes(gathered[i * 32:(i + 1) * 32].astype(np.uint8)).hex() for i in range(self.d.size)]

    def _finish(self, model, run: "RunState") -> dict | None:
        digests = self._param_digests(model)  # the weights training ended with, on every rank
        if run.best_state is not None:
            _unwrap(model).load_state_dict(run.best_state)
        test = self.evaluate(model, "test") if "test" in self.spec["manifest"]["splits"] else None
        if not self.is_main:
            return None
        final = os.path.join(self.out, "model")
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        plain = exportable(_unwrap(model)).to("cpu")
        plain.save_pretrained(tmp)
        load_tokenizer(self.cfg.model.name_or_path).save_pretrained(tmp)
        with open(os.path.join(tmp, "llmrec_config.json"), "w") as fh:
            json.dump(self.spec["config"], fh, indent=1)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        summary = {
            "run_id": self.spec["run_id"], "status": "finished", "fingerprint": self.spec["fingerprint"],
            "backend": self.d.name, "world_size": self.d.size, "device": str(self.device),
            "reader": self.t.reader, "model_dir": final, "base_model": self.cfg.model.name_or_path,
            "shards_build": self.spec["manifest"]["build"], "initial": run.initial,
            "epochs": run.history, "best": run.best, "param_sha256_by_rank": digests,
            "test": test, "stopped_early": run.stopped_early, "resumed_from_epoch": run.resumed_from,
            "timing": self.timing,
            "finished_at": time.time(),
        }
        metrics.plot_curves(run.history, os.path.join(self.out, "training_curves.png"))
        with open(os.path.join(self.out, "metrics.json.tmp"), "w") as fh:
            json.dump(summary, fh, indent=1)
        os.replace(os.path.join(self.out, "metrics.json.tmp"), os.path.join(self.out, "metrics.json"))
        return summary


def _unwrap(model):
    return getattr(model, "module", model)
