"""README "On a cluster" / "On Databricks" against the code, and bin/pack's outputs.

The recipes may only name config keys that exist, jobs that exist, files that exist and
bin/pack flags that bin/pack takes. bin/pack builds real wheels (checked entry by entry
against their RECORD) and packs a real, small venv that runs after unpacking.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import subprocess
import sys
import tarfile
import typing
import venv
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT
from llmrec import conf as conf_mod
from llmrec.cli import JOBS

PACK = ROOT / "bin" / "pack"


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


SECTIONS = readme_section("On a cluster") + readme_section("On Databricks")


def config_key_exists(key: str) -> bool:
    node: typing.Any = conf_mod.Config
    for part in key.split("."):
        if not (dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}):
            return False
        node = typing.get_type_hints(node)[part]
    return True


def test_readme_names_only_real_config_keys():
    sections = {f.name for f in dataclasses.fields(conf_mod.Config)}
    keys = set(re.findall(r"`(?:--set )?([a-z_]+(?:\.[a-z_]+)+)(?:[:=][^`]*)?`", SECTIONS))
    keys |= set(re.findall(r"--set ([a-z_]+(?:\.[a-z_]+)+)=", SECTIONS))
    ours = {f.name for f in dataclasses.fields(conf_mod.SparkConf)}
    # spark.pyspark.python and the like are Spark's properties; spark.mode etc. are ours.
    keys = {k for k in keys if k.split(".")[0] in sections
            and not (k.startswith("spark.") and k.split(".")[1] not in ours)}
    assert {"train.backend", "train.num_proc", "infer.batch_size", "infer.device"} <= keys
    assert not [k for k in keys if not config_key_exists(k)], "README names config keys that do not exist"


def test_readme_names_only_real_jobs_files_and_flags():
    for job in re.findall(r"\./submit\.sh ([a-z_]+)", SECTIONS):
        assert job in JOBS, job
    paths = re.findall(r"\b((?:conf|notebooks|resources|bin)/[\w./-]+\.(?:yaml|yml|sh|py)|bin/pack)\b", SECTIONS)
    for path in set(paths):
        assert (ROOT / path).exists(), path
    accepted = set(re.findall(r"^\s+(--[a-z-]+)\)", PACK.read_text(), re.M))
    used = {f for line in re.findall(r"bin/pack[^\n`]*", SECTIONS) for f in re.findall(r"--[a-z-]+", line)}
    assert used and used <= accepted, f"bin/pack does not take {used - accepted}"


def check_record(wheel: Path) -> zipfile.ZipFile:
    """Every file of the wheel is in its RECORD with the right sha256 and size."""
    z = zipfile.ZipFile(wheel)
    record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    rows = {line.split(",")[0]: line.split(",")[1:] for line in z.read(record).decode().splitlines() if line}
    assert set(rows) == set(z.namelist())
    for name, (digest, size) in rows.items():
        if name == record:
            continue
        data = z.read(name)
        expected = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert (digest, size) == (expected, str(len(data))), name
    return z


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([str(PACK), "--wheel-only", "--databricks", "--dist", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "built" in run.stdout
    return out


def test_pack_builds_the_wheel_with_the_console_script(dist):
    [wheel] = dist.glob("llmrec-*-py3-none-any.whl")
    z = check_record(wheel)
    names = set(z.namelist())
    sources = {str(p.relative_to(ROOT / "lib")) for p in (ROOT / "lib" / "llmrec").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)[:5]}"
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "llmrec = llmrec.cli:console" in z.read(entry).decode()
    meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: pyspark==" in meta


def test_pack_databricks_wheel_has_no_pins(dist):
    [wheel] = (dist / "databricks").glob("llmrec-*-py3-none-any.whl")
    z = check_record(wheel)
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "Name: llmrec" in meta and "Requires-Dist" not in meta
    assert "# llmrec" in meta  # the long description is still there


def test_pack_reruns_are_cheap(dist):
    run = subprocess.run([str(PACK), "--wheel-only", "--databricks", "--dist", str(dist)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "wheel up to date" in run.stdout and "Databricks wheel up to date" in run.stdout


def test_pack_packs_a_venv_that_runs_elsewhere(dist, tmp_path):
    pytest.importorskip("venv_pack", reason="pip install venv-pack (requirements/dev.txt)")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False, symlinks=True)
    [site] = env_dir.glob("lib/python*/site-packages")
    (site / "demo_pkg.py").write_text("VALUE = 42\n")
    (site / "demo_pkg-1.0.dist-info").mkdir()
    # What bin/setup's editable install of llmrec leaves: it must stay out of the archive.
    (site / "__editable__.llmrec-0.1.0.pth").write_text(str(ROOT / "lib") + "\n")
    (site / "llmrec-0.1.0.dist-info").mkdir()
    (site / "llmrec-0.1.0.dist-info" / "METADATA").write_text("Name: llmrec\n")
    out = tmp_path / "env.tar.gz"
    run = subprocess.run([str(PACK), "--dist", str(dist), "--venv", str(env_dir), "--out", str(out),
                          "--python-prefix", sys.base_prefix], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert names.count("pyvenv.cfg") == 1
        assert not [n for n in names if "llmrec" in n]
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym() and m.name.startswith("bin/")}
        absolute = {n: t for n, t in links.items() if t.startswith("/")}
        assert absolute and all(t == f"{sys.base_prefix}/bin/{Path(t).name}" for t in absolute.values()), links
        tar.extractall(tmp_path / "unpacked")
    python = tmp_path / "unpacked" / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import sys, demo_pkg; print(sys.prefix, demo_pkg.VALUE)"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == [str(tmp_path / "unpacked"), "42"]
    again = subprocess.run([str(PACK), "--dist", str(dist), "--venv", str(env_dir), "--out", str(out),
                            "--python-prefix", sys.base_prefix], capture_output=True, text=True, timeout=120)
    assert "environment up to date" in again.stdout
