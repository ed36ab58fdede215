"""Real distributed fine-tuning on CPU: 2-process Horovod and 2-process TorchDistributor
runs of a tiny random BERT on tokenized shards (listwise: every group of a positive and
its negatives whole in each batch, which the loop checks); resume after a killed run;
failures.

The examples are made so that there is something to learn: the label is 1 exactly when
the item's category is the one the user text names; each target has 1 positive and 3
negatives (a listwise group).
"""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from helpers import PINNED, ROOT, make_config
from llmrec import tables
from llmrec.features import tokens
from llmrec.tables.schemas import EXAMPLES
from llmrec.train import launch, loop
from llmrec.train.metrics import auc
from llmrec.train.readers import ShardError, open_reader

CATEGORIES = ["Headphones", "Running Shoes", "Cookware", "Science Fiction", "Skincare", "Garden Tools"]
SETTINGS = ("model.name_or_path=tiny", "tokenize.max_length=32", "tokenize.row_group_rows=64",
            "tokenize.rows_per_file=512", "train.epochs=2", "train.batch_size=8", "train.lr=5e-4",
            "train.num_proc=2", "train.log_every=50", "train.patience=0", "train.warmup_ratio=0.05")


def example_rows(n_users: int, split: str, seed: int, apart: bool = False):
    """apart: users like only the first half of the categories and negatives come from the
    other half, so the item text alone tells them apart: a tiny random model learns that
    within a few hundred steps even under a listwise loss, which has no base rate to fit."""
    rng = np.random.default_rng(seed)
    rows = []
    half = len(CATEGORIES) // 2
    for u in range(n_users):
        cat = int(rng.integers(half if apart else len(CATEGORIES)))
        user_text = f"Recent activity: bought a {CATEGORIES[cat]} item; viewed a {CATEGORIES[cat]} item"
        others = [c for c in range(half if apart else 0, len(CATEGORIES)) if c != cat]
        for c in [cat] + list(rng.choice(others, 3, replace=False)):
            item = int(c * 1000 + rng.integers(1000))
            rows.append((u, item, u * 10, int(c == cat), "positive" if c == cat else "uniform",
                         user_text, f"Item {item}. Category: {CATEGORIES[c]}.", split))
    return rows


LISTWISE = ("train.loss=listwise", "examples.neg_ratio=3")


def _tokenized(spark, root, *settings, apart: bool = False):
    cfg = make_config(root, *SETTINGS, *settings)
    rows = [r for split, seed, n in (("train", 1, 400), ("val", 2, 100), ("test", 3, 100))
            for r in example_rows(n, split, seed, apart)]
    tables.overwrite(spark.createDataFrame(rows, EXAMPLES.schema), cfg, EXAMPLES)
    tokens.build(spark, cfg)
    return root


@pytest.fixture(scope="module")
def root(spark, tmp_path_factory):
    """Storage root with gold.examples (1600/400/400 rows) tokenized into shards."""
    return _tokenized(spark, tmp_path_factory.mktemp("training"))


@pytest.fixture(scope="module")
def grouped(spark, tmp_path_factory):
    """The same examples tokenized for a listwise loss: each target's group of 4 rows whole."""
    return _tokenized(spark, tmp_path_factory.mktemp("listwise"), *LISTWISE, apart=True)


def score_with_saved_model(model_dir: str, base: str, manifest: dict, split: str):
    """Scores a split with the saved model in plain PyTorch (no llmrec training code)."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    AutoTokenizer.from_pretrained(model_dir)  # saved beside the weights
    scores, labels = [], []
    with torch.no_grad():
        for b in open_reader("pyarrow", base, manifest, split, batch_size=64):
            out = model(**{k: torch.as_tensor(b[k], dtype=torch.long)
                           for k in ("input_ids", "attention_mask", "token_type_ids")})
            scores.append(out.logits.squeeze(-1).numpy())
            labels.append(b["label"])
    return np.concatenate(labels), np.concatenate(scores)


def check_run(result: dict, cfg):
    assert result["status"] == "finished" and result["world_size"] == 2
    assert len(result["epochs"]) == 2
    steps = sum(e["train_rows"] for e in result["epochs"]) / (8 * 2)
    assert steps >= 200  # a few hundred optimizer steps
    best = result["best"]
    assert best["val_loss"] < result["initial"]["loss"] - 0.05, (result["initial"], best)
    digests = result["param_sha256_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]  # replicas identical
    base = os.path.dirname(tokens.manifest_path(cfg))
    manifest = tokens.read_manifest(tokens.manifest_path(cfg))
    labels, scores = score_with_saved_model(result["model_dir"], base, manifest, "val")
    assert len(labels) == 400
    assert auc(labels, scores) == pytest.approx(best["val_auc"], abs=1e-6)
    out = os.path.dirname(result["model_dir"])
    assert os.path.getsize(os.path.join(out, "training_curves.png")) > 1000
    saved_cfg = json.load(open(os.path.join(result["model_dir"], "llmrec_config.json")))
    assert saved_cfg["train"]["backend"] == result["backend"]


def test_horovod_two_processes_learn_and_stay_in_sync(spark, root):
    cfg = make_config(root, *SETTINGS, "train.backend=horovod", "train.reader=petastorm",
                      f"train.output_dir={root}/hvd")
    result = launch.run(spark, cfg)
    assert result["backend"] == "horovod" and result["reader"] == "petastorm"
    check_run(result, cfg)
    # a second run with the same shards and settings finds the finished model
    again = launch.run(spark, cfg)
    assert again["run_id"] == result["run_id"]


def test_horovod_two_processes_learn_listwise_with_lora_and_stay_in_sync(spark, grouped):
    cfg = make_config(grouped, *SETTINGS, *LISTWISE, "train.backend=horovod", "train.reader=petastorm",
                      "model.lora.enabled=true", "model.lora.target_modules=query,key,value,dense",
                      "train.lr=2e-3", f"train.output_dir={grouped}/hvd")
    result = launch.run(spark, cfg)
    assert result["backend"] == "horovod" and result["reader"] == "petastorm"
    check_run(result, cfg)
    assert result["best"]["val_auc"] > 0.8  # a softmax over each group learned which item is the positive


def test_torch_distributor_two_processes_learn_listwise_and_stay_in_sync(spark, grouped):
    # grad_accum=2: DDP skips the allreduce (no_sync) on every other micro-batch
    cfg = make_config(grouped, *SETTINGS, *LISTWISE, "train.backend=torch_distributor", "train.reader=pyarrow",
                      "train.grad_accum=2", "train.lr=1e-3", f"train.output_dir={grouped}/tdist")
    result = launch.run(spark, cfg)
    assert result["backend"] == "torch_distributor" and result["reader"] == "pyarrow"
    check_run(result, cfg)
    assert result["best"]["val_auc"] > 0.8


@pytest.mark.parametrize("kind", ["petastorm", "pyarrow"])
def test_readers_deal_whole_groups_positive_first(spark, grouped, kind):
    cfg = make_config(grouped, *SETTINGS, *LISTWISE)
    base, manifest = os.path.dirname(tokens.manifest_path(cfg)), tokens.read_manifest(tokens.manifest_path(cfg))
    assert manifest["group_size"] == 4
    seen = 0
    for rank in (0, 1):
        reader = open_reader(kind, base, manifest, "train", rank=rank, size=2, batch_size=8, shuffle=True, seed=3)
        reader.set_epoch(1)
        for batch in reader:
            labels, users = batch["label"].reshape(-1, 4), batch["user_idx"].reshape(-1, 4)
            assert (labels[:, 0] == 1).all() and (labels[:, 1:] == 0).all()
            assert (users == users[:, :1]).all()
            seen += len(batch["label"])
    assert seen == manifest["splits"]["train"]["rows"] == 1600


def test_a_batch_that_splits_a_group_is_an_error():
    trainer = loop.Trainer.__new__(loop.Trainer)
    trainer.group_size = 4
    logits = torch.zeros(8)
    ok = torch.tensor([1, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float32)
    assert trainer._loss(logits, ok).shape == (2,)
    assert trainer._loss(logits, ok)[0].item() == pytest.approx(np.log(4))
    with pytest.raises(ShardError, match="whole groups"):
        trainer._loss(logits, torch.tensor([0, 1, 0, 0, 1, 0, 0, 0], dtype=torch.float32))
    with pytest.raises(ShardError, match="whole groups"):
        trainer._loss(logits[:6], ok[:6])


def test_early_stopping_keeps_the_best_epoch(spark, root):
    """A learning rate too small to change anything: no epoch beats the first by more than
    train.min_delta (their AUCs differ only in floating-point noise, which depends on the
    CPU), so the run stops after `patience` more and the saved model is epoch 1's."""
    cfg = make_config(root, *SETTINGS, "train.backend=torch_distributor", "train.num_proc=1",
                      "train.epochs=5", "train.patience=1", "train.lr=1e-12", "train.min_delta=0.001",
                      f"train.output_dir={root}/early")
    result = launch.run(spark, cfg)
    assert result["stopped_early"] and [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert result["best"]["epoch"] == 1 and result["world_size"] == 1
    assert abs(result["epochs"][1]["val_auc"] - result["epochs"][0]["val_auc"]) < 0.001


@pytest.mark.parametrize("auc, best, better", [(0.8, None, True), (0.8002, 0.8, True), (0.80005, 0.8, False),
                                               (0.8, 0.8, False), (0.7, 0.8, False)])
def test_an_epoch_improves_only_by_more_than_min_delta(auc, best, better):
    assert loop.improves(auc, best, 1e-4) is better


def test_training_failure_is_judged_by_rank0_outputs(spark, root, tmp_path):
    """TorchDistributor exits 0 whatever happened; a rank that raises must still fail the job."""
    cfg = make_config(root, *SETTINGS, "train.backend=torch_distributor", "train.epochs=1",
                      f"train.output_dir={tmp_path}/out")
    manifest = tokens.read_manifest(tokens.manifest_path(cfg))
    broken = json.loads(json.dumps(manifest))
    broken["splits"]["train"]["rows"] += 8  # the ranks will count fewer rows than promised
    path = tokens.manifest_path(cfg)
    os.replace(path, path + ".ok")
    try:
        with open(path, "w") as fh:
            json.dump(broken, fh)
        with pytest.raises(launch.TrainingFailed, match="rank 0 wrote no finished metrics.json"):
            launch.run(spark, cfg)
    finally:
        os.replace(path + ".ok", path)


def test_corrupt_shard_fails_before_launch_naming_the_file(spark, root, tmp_path):
    cfg = make_config(root, *SETTINGS, f"train.output_dir={tmp_path}/out")
    manifest = tokens.read_manifest(tokens.manifest_path(cfg))
    victim = os.path.join(os.path.dirname(tokens.manifest_path(cfg)),
                          manifest["splits"]["val"]["files"][0]["path"])
    original = open(victim, "rb").read()
    try:
        with open(victim, "wb") as fh:
            fh.write(original[: len(original) // 2])
        with pytest.raises(ShardError, match=f"unreadable: {victim}"):
            launch.run(spark, cfg)
    finally:
        with open(victim, "wb") as fh:
            fh.write(original)


def _kill_tree(proc: subprocess.Popen, marker: str) -> None:
    import psutil

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for p in psutil.process_iter(["pid"]):  # training processes Spark or Horovod detached
        try:
            if p.environ().get("LLMREC_TEST_RUN") == marker:
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def test_killed_run_resumes_from_its_checkpoint(spark, root, tmp_path):
    out = tmp_path / "resume"
    settings = [*SETTINGS, "train.epochs=3", "train.backend=horovod", "train.reader=pyarrow",
                f"train.output_dir={out}"]
    cfg = make_config(root, *settings)
    marker = f"resume-{os.getpid()}-{time.time()}"
    args = [str(ROOT / "submit.sh"), "train", "--conf", str(ROOT / "conf" / "local.yaml")]
    for s in ["spark.master=local[2]", "spark.shuffle_partitions=4", "spark.driver_memory=2g", *PINNED,
              f"storage.root={root}", *settings]:
        args += ["--set", s]
    env = dict(os.environ, LLMREC_TEST_RUN=marker, OMP_NUM_THREADS="1")
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ckpt = out / "checkpoints" / "checkpoint.pt"
    deadline = time.time() + 300
    try:
        while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert ckpt.exists(), open(tmp_path / "killed.log").read()[-3000:]
    finally:
        _kill_tree(proc, marker)
    killed_at = torch.load(ckpt, weights_only=False)
    assert 1 <= killed_at["epoch"] < 3
    assert not (out / "metrics.json").exists()

    result = launch.run(spark, cfg)
    assert result["resumed_from_epoch"] == killed_at["epoch"]
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3]
    # the epochs before the kill are the killed run's own records, not redone
    assert result["epochs"][: killed_at["epoch"]] == killed_at["history"]
    assert result["param_sha256_by_rank"][0] == result["param_sha256_by_rank"][1]
