"""MLflow tracking of stage runs, training and evaluation: active when the `mlflow`
package is installed and a tracking URI is configured (tracking.mlflow_uri, or the
MLFLOW_TRACKING_URI environment variable); otherwise every call here does nothing."""
from __future__ import annotations

import contextlib
import json
import os

from llmrec.conf import Config
from llmrec.progress import log


def client(cfg: Config):
    """The mlflow module pointed at the configured server and experiment, or None."""
    uri = cfg.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return None
    try:
        import mlflow
    except ImportError:
        log.warning("tracking: a tracking URI is set but mlflow is not installed; not tracking")
        return None
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(cfg.tracking.experiment)
    return mlflow


@contextlib.contextmanager
def pipeline_run(cfg: Config, run_id: str):
    """The pipeline's MLflow run (the stages' runs nest under it), with the config as
    parameters and the run summary as an artifact afterwards."""
    mlflow = client(cfg)
    if mlflow is None:
        yield None
        return
    with mlflow.start_run(run_name=f"pipeline {run_id}") as run:
        mlflow.set_tag("llmrec.run_id", run_id)
        flat = {f"{section}.{k}": v for section, values in cfg.to_dict().items()
                for k, v in values.items() if not isinstance(v, dict)}
        mlflow.log_params({k: str(v)[:500] for k, v in sorted(flat.items())})
        yield run


def log_stage(cfg: Config, record: dict, summary: dict) -> str | None:
    """One MLflow run per stage run (nested under the pipeline's run when there is one):
    its counters and duration; training's curves and test metrics; evaluation's metrics
    table and report. Returns the MLflow run id."""
    mlflow = client(cfg)
    if mlflow is None:
        return None
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=record["stage"], nested=nested) as run:
        mlflow.set_tags({"llmrec.stage": record["stage"], "llmrec.fingerprint": record["fingerprint"]})
        mlflow.log_metrics({k: float(record[k]) for k in ("rows_in", "rows_out", "quarantined", "seconds")
                            if record.get(k) is not None})
        if record["stage"] == "train":
            _log_training(mlflow, cfg, summary)
        elif record["stage"] == "evaluate":
            _log_evaluation(mlflow, summary)
        return run.info.run_id


def _log_training(mlflow, cfg: Config, summary: dict) -> None:
    from llmrec.train.launch import output_dir

    path = os.path.join(output_dir(cfg), "metrics.json")
    if not os.path.exists(path):
        return
    with open(path) as fh:
        metrics = json.load(fh)
    mlflow.log_params({"backend": metrics.get("backend"), "world_size": metrics.get("world_size"),
                       "base_model": metrics.get("base_model"), "device": metrics.get("device")})
    for i, epoch in enumerate(metrics.get("epochs", []), start=1):
        mlflow.log_metrics({k: float(v) for k, v in epoch.items()
                            if isinstance(v, (int, float)) and k != "epoch"}, step=i)
    if metrics.get("test"):
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in metrics["test"].items()
                            if isinstance(v, (int, float))})
    mlflow.log_artifact(path)
    curves = os.path.join(output_dir(cfg), "training_curves.png")
    if os.path.exists(curves):
        mlflow.log_artifact(curves)


def _log_evaluation(mlflow, summary: dict) -> None:
    for model, values in (summary.get("headline") or {}).items():
        mlflow.log_metrics({f"{model}.{name.replace('@', '_at_')}": float(v) for name, v in values.items()})
    if summary.get("auc") is not None:
        mlflow.log_metric("cross_encoder_auc", float(summary["auc"]))
    report = summary.get("report")
    if report and os.path.isdir(os.path.dirname(report)):
        mlflow.log_artifacts(os.path.dirname(report), artifact_path="report")
