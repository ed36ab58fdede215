"""A Spark standalone master and workers on 127.0.0.1 (from the pip package), and
submit.sh runs against it: shared by the integration tests."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

from helpers import ROOT

PYTHON = str(ROOT / ".venv" / "bin" / "python")
SPARK_CLASS = str(ROOT / ".venv" / "bin" / "spark-class")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


class Cluster:
    """Master and workers bound to loopback only; each worker in its own process group,
    so that killing it (SIGKILL) also kills the executors it launched."""

    def __init__(self, work):
        self.work = work
        self.port, self.ui = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(work / "logs"),
                        PYSPARK_PYTHON=PYTHON)
        self.logs = open(work / "daemons.log", "w")
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self._spawn("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port",
                    str(self.port), "--webui-port", str(self.ui))
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), 1).close() is None, "master")
        # the web UI (worker counts) comes up after the RPC port, later still on a busy machine
        wait_for(lambda: "aliveworkers" in self.state(), "master web UI")

    def _spawn(self, cls: str, *args: str, env=None) -> subprocess.Popen:
        proc = subprocess.Popen([SPARK_CLASS, cls, *args], env=env or self.env, stdout=self.logs,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui}/json", timeout=5) as resp:
            return json.load(resp)

    def add_worker(self, cores: int, memory: str) -> subprocess.Popen:
        alive = self.state()["aliveworkers"]
        env = dict(self.env, SPARK_WORKER_DIR=str(self.work / f"worker{len(self.procs)}"))
        worker = self._spawn("org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                             "--webui-port", str(free_port()), "--cores", str(cores), "--memory",
                             memory, self.url, env=env)
        wait_for(lambda: self.state()["aliveworkers"] > alive, "worker registration")
        self.workers.append(worker)
        return worker

    def remove_workers(self) -> None:
        """Stops every worker (and its executors), leaving the master to the next test."""
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(20)
        self.workers.clear()
        wait_for(lambda: self.state()["aliveworkers"] == 0, "workers to leave the master")

    def kill(self, worker: subprocess.Popen) -> None:
        """Kills a worker and its executors at once, as a lost machine would."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(20)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.logs.close()


def submit_cmd(job: str, *args: str, master: str | None = None, cores: int = 2) -> list[str]:
    cmd = [str(ROOT / "submit.sh"), job, *args]
    if master:
        cmd += ["--", "--master", master, "--executor-memory", "1g", "--total-executor-cores", str(cores)]
    return cmd


def submit(job: str, *args: str, master: str | None = None, timeout: float = 600, cores: int = 2):
    """Runs submit.sh; spark-submit merges the Python driver's stderr into stdout, so
    `output` is both, in order."""
    done = subprocess.run(submit_cmd(job, *args, master=master, cores=cores), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    done.output = done.stdout
    return done
