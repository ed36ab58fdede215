"""Driver side of training: starts the processes with the configured backend and checks
what rank 0 left behind.

Exit codes of the launchers are not trusted (TorchDistributor's wrapper exits 0
whatever torchrun returned): a run succeeded when rank 0's metrics.json names this
run's id with status "finished" and the model folder is there.
"""
from __future__ import annotations

import json
import os
import time
import uuid

from llmrec import stamps, storage
from llmrec.conf import Config
from llmrec.features.tokens import manifest_path, read_manifest
from llmrec.progress import log
from llmrec.train import model as model_mod
from llmrec.train.readers import check_files

# Settings that change what is trained; the others (logging, threads, resume, launcher)
# may differ between a crashed run and the run that resumes it.
_NOT_IN_FINGERPRINT = {"resume", "log_every", "threads_per_proc", "distributor_local_mode",
                       "backend", "reader"}


# Rank 0's last write to the launcher's return takes seconds (processes exit, the Spark
# job ends); far longer means something waited out a timeout.
LATE_RETURN_S = 60


class TrainingFailed(RuntimeError):
    pass


def output_dir(cfg: Config) -> str:
    out = cfg.train.output_dir
    if not os.path.isabs(out):
        root = cfg.storage.root
        if not storage.is_local(root) and not root.startswith("dbfs:/"):
            raise ValueError(f"train.output_dir must be an absolute local or mounted path when "
                             f"storage.root is {root} (checkpoints are written with open())")
        out = os.path.join(storage.arrow_fs(root)[1], out)
    return os.path.abspath(out)


def fingerprint(cfg: Config, manifest: dict) -> str:
    train = {k: v for k, v in cfg.train.__dict__.items() if k not in _NOT_IN_FINGERPRINT}
    return stamps.fingerprint({"shards": manifest["fingerprint"], "model": cfg.to_dict()["model"],
                               "train": train, "max_length": cfg.tokenize.max_length})


def use_gpu(cfg: Config) -> bool:
    if cfg.train.device == "cpu":
        return False
    import torch

    available = torch.cuda.is_available()
    if cfg.train.device == "gpu" and not available:
        raise ValueError("train.device=gpu but torch sees no GPU on the driver")
    return available


def read_metrics(out: str) -> dict | None:
    try:
        with open(os.path.join(out, "metrics.json")) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def run(spark, cfg: Config, force: bool = False) -> dict:
    """Trains the cross-encoder on the shards; returns rank 0's metrics summary."""
    manifest = read_manifest(manifest_path(cfg))
    if manifest is None:
        raise FileNotFoundError(f"no shards at {manifest_path(cfg)}: run the tokenize job first")
    tok = model_mod.load_tokenizer(cfg.model.name_or_path)
    if model_mod.vocab_hash(tok) != manifest["tokenizer"]["vocab_sha256"]:
        raise ValueError(f"the shards were tokenized with another vocabulary "
                         f"({manifest['tokenizer']['name']}): rerun tokenize for model "
                         f"{cfg.model.name_or_path}")
    if manifest.get("group_size", 1) != cfg.group_size:
        raise ValueError(f"train.loss is {cfg.train.loss} but the shards hold groups of "
                         f"{manifest.get('group_size', 1)} rows: rerun tokenize")
    for split in ("train", "val"):
        if not manifest["splits"].get(split, {}).get("rows"):
            raise ValueError(f"the shards have no {split} rows: nothing to train or validate on")
    shards = os.path.dirname(manifest_path(cfg))
    for split in manifest["splits"]:
        check_files(shards, manifest, split)  # a missing or corrupt file, named, before launch
    out = output_dir(cfg)
    fp = fingerprint(cfg, manifest)
    done = read_metrics(out)
    if done and done.get("status") == "finished" and done.get("fingerprint") == fp and not force:
        log.info("train: %s already holds a finished model for these shards and settings "
                 "(val AUC %.4f); nothing to do (--force retrains)", out, done["best"]["val_auc"])
        return done
    os.makedirs(out, exist_ok=True)
    gpu = use_gpu(cfg)
    spec = {"config": cfg.to_dict(), "manifest": manifest, "run_id": uuid.uuid4().hex,
            "fingerprint": fp, "output_dir": out, "use_gpu": gpu, "backend": cfg.train.backend,
            "shards": shards, "launched_at": time.time()}
    from llmrec.train.loop import main

    n = cfg.train.num_proc
    launcher_error = None
    try:
        if cfg.train.backend == "horovod":
            import horovod.spark

            horovod.spark.run(main, args=(spec,), num_proc=n, use_gloo=True, use_mpi=False,
                              verbose=1, start_timeout=600)
        else:
            from pyspark.ml.torch.distributor import TorchDistributor

            TorchDistributor(num_processes=n, local_mode=cfg.train.distributor_local_mode,
                             use_gpu=gpu).run(main, spec)
    except Exception as err:  # noqa: BLE001  (judged below by rank 0's outputs)
        launcher_error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    result = read_metrics(out)
    if not result or result.get("run_id") != spec["run_id"] or result.get("status") != "finished":
        raise TrainingFailed(
            f"training with {cfg.train.backend} failed: rank 0 wrote no finished metrics.json for "
            f"run {spec['run_id'][:8]} in {out}" + (f" ({launcher_error})" if launcher_error else
                                                    " (see the processes' log above)"))
    if launcher_error:
        log.warning("train: the launcher reported %s, but rank 0 finished; outputs checked", launcher_error)
    result["timing"]["finish_to_return_s"] = lag = time.time() - result["finished_at"]
    if lag > LATE_RETURN_S:
        log.warning("train: the launcher returned %.0f s after rank 0 finished. Under TorchDistributor this "
                    "is torchrun's exit barrier: rank 0's agent waits up to 300 s for the agent of a rank "
                    "whose process exited with an error after the run (see the processes' log above)", lag)
    return result
