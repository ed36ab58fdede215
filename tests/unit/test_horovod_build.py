"""bin/build-horovod and its patch, without building anything.

The patch test needs the horovod 0.28.1 sdist: it takes the one bin/build-horovod keeps
in .cache/sdist/ (checked against the sha256 pinned in the script), else downloads it with
pip (pip's own cache makes a second download cheap) and keeps it there. It is skipped
only when PyPI cannot be reached.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bin" / "build-horovod"
PATCH = ROOT / "deps" / "horovod" / "horovod-0.28.1-torch2.patch"
SDIST_NAME = "horovod-0.28.1.tar.gz"
SDIST_CACHE = ROOT / ".cache" / "sdist" / SDIST_NAME


def _pinned_sha256() -> str:
    m = re.search(r"^SDIST_SHA256=([0-9a-f]{64})$", SCRIPT.read_text(), re.M)
    assert m, "bin/build-horovod must pin SDIST_SHA256"
    return m.group(1)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
        return True
    except OSError:
        return False


def _pip_python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    sha = _pinned_sha256()
    if SDIST_CACHE.exists() and _sha256(SDIST_CACHE) == sha:
        return SDIST_CACHE
    dest = tmp_path_factory.mktemp("sdist")
    proc = subprocess.run(
        [_pip_python(), "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--no-deps", "--no-binary", ":all:", "horovod==0.28.1", "-d", str(dest)],
        capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        if not _pypi_reachable():
            pytest.skip("network unavailable: cannot download the horovod 0.28.1 sdist from PyPI")
        pytest.fail(f"pip download horovod==0.28.1 failed:\n{proc.stdout}\n{proc.stderr}")
    got = dest / SDIST_NAME
    assert got.exists(), f"pip download left no {SDIST_NAME} in {dest}: {os.listdir(dest)}"
    assert _sha256(got) == sha, "downloaded sdist does not match the sha256 pinned in bin/build-horovod"
    SDIST_CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = SDIST_CACHE.with_suffix(f".{os.getpid()}.part")
    shutil.copyfile(got, tmp)
    tmp.replace(SDIST_CACHE)  # same cache bin/build-horovod uses
    return SDIST_CACHE


def test_help_exits_0():
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--python" in proc.stdout and "--out" in proc.stdout


def test_unknown_argument_is_one_clear_line():
    proc = subprocess.run([str(SCRIPT), "--no-such-flag"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "[build-horovod] error: unknown argument: --no-such-flag (see --help)"]


def test_patch_applies_cleanly(sdist, tmp_path):
    assert shutil.which("patch"), "the `patch` tool is needed (apt-get install patch)"
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    src = tmp_path / "horovod-0.28.1"
    proc = subprocess.run(["patch", "-p1", "--forward", "--batch", "--fuzz=0",
                           "--no-backup-if-mismatch", "-i", str(PATCH)],
                          cwd=src, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"patch does not apply:\n{proc.stdout}\n{proc.stderr}"
    # Exact application: no hunk may need an offset or fuzz.
    assert "offset" not in proc.stdout and "fuzz" not in proc.stdout, proc.stdout
    torch_cmake = (src / "horovod" / "torch" / "CMakeLists.txt").read_text()
    assert "set(CMAKE_CXX_STANDARD ${Pytorch_CXX_STANDARD})" in torch_cmake
    assert "distutils" not in torch_cmake
    assert "Pytorch_CXX_STANDARD" in (src / "CMakeLists.txt").read_text()
