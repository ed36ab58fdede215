"""Config loading and validation: every environment's YAML loads; bad keys fail clearly."""
import re
import subprocess
import sys

import pytest

from llmrec import conf
from helpers import ROOT


@pytest.mark.parametrize("name", ["local", "cluster", "databricks"])
def test_shipped_configs_load(name):
    cfg = conf.load(ROOT / "conf" / f"{name}.yaml")
    assert cfg.spark.mode == name
    assert cfg.storage.root


def test_defaults_without_file():
    cfg = conf.load(None)
    assert cfg.interactions.event_weights["purchase"] == 5.0
    assert cfg.raw_root == "./data/raw"


def test_override_parses_yaml_values():
    cfg = conf.load(ROOT / "conf/local.yaml", [
        "synthetic.users=123", "interactions.half_life_days=7.5", "spark.master=local[1]",
        "interactions.event_weights={view: 2, purchase: 9}", "storage.raw=s3a://b/raw"])
    assert cfg.synthetic.users == 123
    assert cfg.interactions.half_life_days == 7.5
    assert cfg.spark.master == "local[1]"
    assert cfg.interactions.event_weights == {"view": 2.0, "purchase": 9.0}
    assert cfg.raw_root == "s3a://b/raw"


@pytest.mark.parametrize("override, message", [
    ("synthetic.userz=5", "unknown config key 'synthetic.userz'"),
    ("nosuchsection.a=1", "unknown config key 'nosuchsection'"),
    ("synthetic.users=many", "config key 'synthetic.users' must be an integer, got 'many'"),
    ("synthetic.users=0", "config key 'synthetic.users' must be > 0"),
    ("synthetic.bad_row_rate=1.5", "config key 'synthetic.bad_row_rate' must be in [0, 1]"),
    ("spark.mode=yarn", "config key 'spark.mode' must be one of local, cluster, databricks"),
    ("interactions.split.method=random", "config key 'interactions.split.method' must be one of"),
    ("synthetic.start_date=yesterday", "config key 'synthetic.start_date' must be a date"),
    ("interactions.event_weights.view=heavy", "config key 'interactions.event_weights.view' must be a number"),
    ("synthetic=3", "config key 'synthetic' must be a section"),
    ("nokeyvalue", "--set expects key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(conf.ConfigError) as err:
        conf.load(ROOT / "conf/local.yaml", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark: [unclosed\n")
    with pytest.raises(conf.ConfigError, match="not valid YAML"):
        conf.load(bad)
    with pytest.raises(conf.ConfigError, match="config file not found"):
        conf.load(tmp_path / "missing.yaml")


def test_cli_get_and_error_exit_code():
    run = lambda *a: subprocess.run([sys.executable, "-m", "llmrec.conf", *a], capture_output=True,  # noqa: E731
                                    text=True, env={"PYTHONPATH": str(ROOT / "lib")})
    ok = run(str(ROOT / "conf/local.yaml"), "--set", "spark.master=local[3]", "--get", "spark.master")
    assert ok.returncode == 0 and ok.stdout.strip() == "local[3]"
    bad = run(str(ROOT / "conf/local.yaml"), "--set", "spark.shuffle_partitions=x")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("config error: config key 'spark.shuffle_partitions' "
                                  "must be an integer, got 'x'")


def test_training_sections_validate_and_round_trip():
    cfg = conf.load(ROOT / "conf/local.yaml", ["train.lr=1e-3", "train.backend=torch_distributor"])
    assert cfg.train.lr == 0.001  # YAML 1.1 reads 1e-3 as a string; still a number here
    assert conf.from_dict(cfg.to_dict()) == cfg  # how settings reach training processes
    for bad, message in [("train.backend=mpi", "'train.backend' must be one of horovod, torch_distributor"),
                         ("train.warmup_ratio=1.5", "'train.warmup_ratio' must be in [0, 1]"),
                         ("examples.negatives=random", "'examples.negatives' takes shares >= 0"),
                         ("tokenize.rows_per_file=10", "'tokenize.rows_per_file' must be >= row_group_rows"),
                         ("train.lr=fast", "'train.lr' must be a number"),
                         ("model.lora.r=0", "'model.lora.r' must be > 0")]:
        with pytest.raises(conf.ConfigError, match=re.escape(message)):
            conf.load(ROOT / "conf/local.yaml", [bad])


@pytest.mark.parametrize("overrides, message", [
    (["train.loss=listwise", "examples.neg_ratio=3", "tokenize.row_group_rows=30"],
     "'tokenize.row_group_rows' must be a multiple of 4 with train.loss listwise"),
    (["train.loss=listwise", "examples.neg_ratio=3", "train.batch_size=10"],
     "'train.batch_size' must be a multiple of 4"),
    (["ranker.pool=50", "ranker.pool_depths=20,100"], "'ranker.pool_depths' must list depths in 1..pool"),
    (["examples.negatives={candidates: -1}"], "'examples.negatives' takes shares >= 0"),
    (["recommend.ranker=xgb"], "'recommend.ranker' must be one of learned, blend, none"),
])
def test_second_stage_settings_are_checked(overrides, message):
    with pytest.raises(conf.ConfigError, match=re.escape(message)):
        conf.load(ROOT / "conf/local.yaml", overrides)
    ok = conf.load(ROOT / "conf/local.yaml", ["train.loss=listwise", "examples.neg_ratio=3"])
    assert ok.group_size == 4 and conf.load(ROOT / "conf/local.yaml", ["train.loss=pointwise"]).group_size == 1
