"""Local file helpers and progress formatting (no Spark needed for local paths)."""
import logging
import os
import time
from pathlib import Path

import pytest

from llmrec import progress, storage


def test_publish_folder_replaces_whole_folder(tmp_path):
    dest = tmp_path / "export" / "csr"
    src1 = tmp_path / "s1"
    (src1 / "train").mkdir(parents=True)
    (src1 / "train" / "a.npz").write_text("1")
    (src1 / "stale.json").write_text("old")
    storage.publish_folder(None, str(src1), str(dest))
    assert (dest / "train" / "a.npz").read_text() == "1"
    src2 = tmp_path / "s2"
    src2.mkdir()
    (src2 / "manifest.json").write_text("{}")
    storage.publish_folder(None, str(src2), f"file:{dest}")
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json"]  # nothing stale left
    assert not (tmp_path / "export" / "csr.tmp").exists()


def test_staging_folders_are_the_runs_own_and_removed_even_on_failure(tmp_path):
    root = f"file:{tmp_path}"
    with storage.staging(root, "lists") as a, storage.staging(root, "lists") as b:
        assert a != b and a.startswith(f"{tmp_path}/_staging/lists-")  # two runs at once
        Path(a).mkdir(parents=True)
        (Path(a) / "part-0.parquet").write_text("x")
    with pytest.raises(RuntimeError):
        with storage.staging(root, "chunk") as c:
            Path(c).mkdir(parents=True)
            (Path(c) / "part-0.parquet").write_text("x")
            raise RuntimeError("the MERGE failed")
    assert not any((tmp_path / "_staging").iterdir())


def test_staging_removes_what_killed_runs_left_and_keeps_live_folders(tmp_path):
    parent = tmp_path / "_staging"
    killed, live = parent / "eval_lists-aaaaaaaaaaaa", parent / "chunk-bbbbbbbbbbbb"
    for folder in (killed, live):
        folder.mkdir(parents=True)
        (folder / "part-0.parquet").write_text("x")
    week_ago = time.time() - storage.STAGING_STALE_AFTER_S - 60
    os.utime(killed, (week_ago, week_ago))
    with storage.staging(str(tmp_path), "lists"):
        assert sorted(p.name for p in parent.iterdir()) == [live.name]


def test_text_roundtrip_and_missing(tmp_path):
    target = tmp_path / "a" / "b.json"
    assert storage.read_text(None, str(target)) is None
    storage.write_text(None, str(target), "x")
    storage.write_text(None, str(target), "y")
    assert storage.read_text(None, str(target)) == "y"
    assert storage.is_local("/x") and storage.is_local("file:/x") and not storage.is_local("s3a://b/x")


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (59, "59s"), (61, "1m01s"), (3725, "1h02m")])
def test_fmt_duration(seconds, text):
    assert progress.fmt_duration(seconds) == text


@pytest.mark.parametrize("counts, rated", [({"rows_in": 1000, "rows_out": 990}, True),
                                           ({"rows": 1000}, True), ({"users": 1000}, False)])
def test_timed_logs_counts_and_rate(caplog, counts, rated):
    progress.setup_logging()
    progress.log.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="llmrec"):
            with progress.timed("unit") as st:
                st.count(**counts)
    finally:
        progress.log.propagate = False
    done = [r.getMessage() for r in caplog.records if "done" in r.getMessage()][0]
    assert done.startswith("stage unit: done in")
    assert " ".join(f"{k}={v:,}" for k, v in counts.items()) in done
    assert ("rows/s" in done) == rated
