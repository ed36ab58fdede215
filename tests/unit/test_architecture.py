"""The code's shape: one declaration of the stages, no import cycles, a clean lint."""
from __future__ import annotations

import architecture
from helpers import ROOT
from llmrec import args as args_mod, cli, stages


def test_the_import_graph_has_no_cycle():
    assert architecture.cycles(architecture.import_graph(ROOT / "lib")) == []


def test_the_cycle_finder_finds_one_inside_a_function_and_through_a_package(tmp_path):
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from p.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from p.sub import c\n")
    (pkg / "sub" / "b.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import p.a\n")
    assert architecture.cycles(architecture.import_graph(tmp_path)) == [["p.a", "p.sub", "p.sub.c"]]


def test_the_stage_list_is_declared_once(tmp_path):
    lines = (ROOT / "lib/llmrec/stages.py").read_text().splitlines()
    declared = next(i for i, line in enumerate(lines, 1) if line.startswith("STAGES"))
    assert architecture.stage_registries(ROOT, list(stages.NAMES)) == [f"lib/llmrec/stages.py:{declared}"]
    # what the count would find: a hand-written copy in code or in a bundle file
    (tmp_path / "copy.py").write_text(f"ORDER = {list(stages.NAMES)!r}\n")
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "job.yml").write_text("".join(f"- task_key: {n}\n" for n in stages.NAMES))
    assert architecture.stage_registries(tmp_path, list(stages.NAMES)) == ["copy.py:1", "resources/job.yml"]


def test_every_job_comes_from_the_registry_and_parses_its_arguments():
    assert list(cli.JOBS) == [*stages.NAMES, "pipeline"]
    for name, job in cli.JOBS.items():
        assert job.doc and not job.doc.endswith(("the", "and", ",")), f"{name}: its one-line doc is cut"
        args_mod.build_parser(name, job.add_args).parse_args([])
    for stage in stages.STAGES:
        assert stage.sections and cli.JOBS[stage.name].stage is stage


def test_ruff_finds_nothing():
    assert architecture.ruff_errors(ROOT) == 0
