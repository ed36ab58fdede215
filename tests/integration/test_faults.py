"""Faults, for real: a worker (and its executors) killed in the middle of the interactions
stage and again of the embedding backfill, in one application on a standalone cluster; two
runs of the same stage at once; a full disk; an unreadable input file. Each job either
completes with the same results as an undisturbed run, or fails with one clear line and
leaves every table as it was. (A training process killed mid-run resuming from its
checkpoint is tests/train/test_training.py::test_killed_run_resumes_from_its_checkpoint.)"""
import gzip
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from helpers import PINNED, ROOT, SHOP, fresh, make_config, tiny
from llmrec import cli, tables
from llmrec.tables.schemas import (
    BRONZE, INTERACTIONS, ITEM_EMBEDDINGS, ITEM_INDEX, SILVER, USER_EMBEDDINGS, USER_INDEX,
)
from standalone import submit_cmd



def sets(cfg_root, *extra):
    return [x for s in (*PINNED, *SHOP, *extra, f"storage.root={cfg_root}") for x in ("--set", s)]


class Running:
    """submit.sh in the background, its output collected line by line."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def wait_for_line(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r}:\n{''.join(self.lines)[-3000:]}")
            time.sleep(0.2)

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code, "".join(self.lines)


def pairs(spark, cfg):
    """gold.interactions by ids, not indexes: comparable between two builds."""
    inter = tables.read(spark, cfg, INTERACTIONS)
    return inter.join(tables.read(spark, cfg, USER_INDEX), "user_idx") \
        .join(tables.read(spark, cfg, ITEM_INDEX), "item_idx") \
        .select("user_id", "item_id", F.round("weight", 9).alias("weight"), "n", "split")


def same_rows(a, b) -> bool:
    return a.count() == b.count() and a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0


@pytest.fixture(scope="module")
def cluster(master):
    """The shared master; the test adds 1-core workers: one can be lost while another carries on."""
    yield master
    master.remove_workers()


@pytest.mark.timeout(1500)
def test_worker_lost_mid_job(spark, shop, served, tiny_dir, cluster, tmp_path):
    """One application (each costs about a minute of start-up) runs interactions, then the
    embedding backfill in chunks, on two 1-core workers; one worker is killed in each stage."""
    cfg = fresh(shop, tmp_path)
    reference = make_config(shop, *SHOP)  # the undisturbed build (local mode)
    doomed, survivor = cluster.add_worker(1, "1500m"), cluster.add_worker(1, "1500m")
    models = (*tiny(tiny_dir), "embed.chunk_rows=50")
    run = Running(submit_cmd("pipeline", "--stages", "interactions,embed", "--force",
                             *sets(cfg.storage.root, *models), master=cluster.url))
    # interactions: kill one worker once the stage's Spark work has started
    run.wait_for_line("stage interactions: started")
    time.sleep(3)
    cluster.kill(doomed)
    cluster.add_worker(1, "1500m")  # the application's next executor: embed must outlive the survivor
    # embed: kill the worker that carried interactions on, once the first chunk committed
    run.wait_for_line("chunk 1/")
    cluster.kill(survivor)
    code, output = run.finish()
    assert code == 0, output[-3000:]
    during_interactions, during_embed = output.split("stage embed: started")
    assert "Lost executor" in during_interactions and "job pipeline finished" in output
    assert "Lost executor" in during_embed.split("chunk 1/", 1)[1] and "chunk 3/3" in during_embed
    assert same_rows(pairs(spark, cfg), pairs(spark, reference))
    assert tables.read(spark, cfg, INTERACTIONS).groupBy("user_idx", "item_idx").count() \
        .where("count > 1").count() == 0
    for table in (ITEM_EMBEDDINGS, USER_EMBEDDINGS):
        key = table.key[0]
        got, want = tables.read(spark, cfg, table), tables.read(spark, served, table)
        assert got.count() == want.count() == got.select(key).distinct().count()
        worst = got.alias("g").join(want.alias("w"), key) \
            .select(F.expr("aggregate(zip_with(g.vector, w.vector, (a, b) -> abs(a - b)), 0D, "
                           "(m, x) -> greatest(m, x))").alias("diff")).agg(F.max("diff")).first()[0]
        assert worst < 1e-4, f"{table.qualified}: vectors differ by {worst}"


@pytest.mark.timeout(900)
def test_concurrent_runs_of_a_stage(spark, shop, served, tiny_dir, tmp_path):
    """Two embed jobs on the same tables at once (local mode, separate JVMs): both finish,
    a lost commit race is retried, and the tables end with one row per key."""
    cfg = fresh(shop, tmp_path)
    args = sets(cfg.storage.root, *tiny(tiny_dir), "embed.chunk_rows=60", "spark.master=local[1]")
    runs = [Running(submit_cmd("embed", *args)) for _ in range(2)]
    results = [r.finish() for r in runs]
    for code, output in results:
        assert code == 0 or "was changed by another writer at the same time" in output.splitlines()[-1], \
            output[-3000:]
    assert any(code == 0 for code, _ in results)
    assert not any((Path(cfg.storage.root) / "_staging").iterdir())  # the loser's chunk too
    for table in (ITEM_EMBEDDINGS, USER_EMBEDDINGS):
        key = table.key[0]
        got = tables.read(spark, cfg, table)
        assert got.count() == got.select(key).distinct().count() == \
            tables.read(spark, served, table).count()


def test_full_disk_fails_clearly_and_leaves_tables(spark, shop, tmp_path):
    """The storage root on a small tmpfs (a private mount namespace: no privileges
    needed), just big enough for the shop: interactions cannot write its output."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for the full-disk test")
    copy = fresh(shop, tmp_path / "copy")
    # tmpfs charges whole 4 KiB pages per file and nothing for folders
    size_kb = sum(-(-p.stat().st_size // 4096) * 4 for p in Path(copy.storage.root).rglob("*") if p.is_file()) + 16
    mnt, out = tmp_path / "small", tmp_path / "after"
    mnt.mkdir()
    job = shlex.join(submit_cmd("interactions", *sets(mnt / "root", "interactions.half_life_days=9")))
    script = (f"mount -t tmpfs -o size={size_kb}k tmpfs {mnt} && cp -a {copy.storage.root} {mnt}/root && "
              f"{{ {job}; echo \"exit=$?\"; }}; cp -a {mnt}/root {out}")
    done = subprocess.run(["unshare", "-Urm", "bash", "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    output = done.stdout + done.stderr
    assert "exit=1" in output, output[-3000:]
    last = [line for line in output.splitlines() if line.startswith("llmrec interactions failed")]
    assert last and "No space left on device" in last[0], output[-3000:]
    # each table has the rows it had (new weights, half-life 9 days, were never committed)
    after = make_config(out, *SHOP)
    for table in (INTERACTIONS, USER_INDEX, ITEM_INDEX):
        assert same_rows(tables.read(spark, after, table), tables.read(spark, copy, table))


def test_unreadable_input_file_fails_clearly_and_leaves_tables(spark, shop, tmp_path, capsys):
    cfg = fresh(shop, tmp_path)
    before = {t.qualified: tables.version(spark, cfg, t) for t in (*BRONZE.values(), *SILVER.values())}
    day = sorted((tmp_path / "root" / "raw" / "events").iterdir())[-1].name.replace("dt=", "")
    new_day = f"dt={day[:8]}{int(day[8:]) + 1:02d}"
    (tmp_path / "root" / "raw" / "events" / new_day).mkdir()
    bad = tmp_path / "root" / "raw" / "events" / new_day / "part-1.json.gz"
    whole = gzip.compress("".join(f'{{"event_id": "x{i}", "user_id": "U{i * 7919 % 1000}"}}\n'
                                  for i in range(2000)).encode())
    bad.write_bytes(whole[:len(whole) // 2])  # cut short, as by an interrupted copy
    argv = [x for s in (*SHOP, f"storage.root={cfg.storage.root}", "spark.master=local[2]")
            for x in ("--set", s)]
    assert cli.main("ingest", argv) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("llmrec ingest failed:") and "part-1.json.gz" in line, line
    after = {t.qualified: tables.version(spark, cfg, t) for t in (*BRONZE.values(), *SILVER.values())}
    assert after == before
