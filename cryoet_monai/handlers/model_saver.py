"""Ignite handlers that write the trained model files: the final weights only when training completes, and
the weights of the best validation run."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from monai.handlers import CheckpointSaver
from monai.utils import min_version, optional_import

from cryoet_monai.data.atomic import atomic_path
from cryoet_monai.engines.distributed import is_main_process, unwrap_model

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")


class CompletedCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose final file (``save_final``) is written only when the run completes.

    MONAI's saver also writes the final file when the run raises (a crash, Ctrl-C): a half-trained
    ``model.pt`` would then look like a finished model to inference and to scripts that skip finished runs.
    Here an interrupted run leaves only its interval checkpoints, from which training resumes.
    Arguments as ``monai.handlers.CheckpointSaver``.
    """

    def exception_raised(self, engine, e: BaseException) -> None:
        raise e


class BestModelSaver:
    """After each validation run, keeps the network's weights when ``metric`` is the best so far.

    Attach it to the evaluator after the handler that puts ``metric`` into ``engine.state.metrics``
    (``ThresholdTuner``, ``PicksScorer``). Writes ``<save_dir>/<filename>`` (a plain state dict, loadable
    like ``model.pt``) and beside it a JSON record of the metric, its value and the training epoch. The record
    on disk is the reference, so training resumed after an interruption only replaces weights that a later
    validation beats. Only rank 0 writes.

    Args:
        save_dir: folder of the model files (the bundle's ``ckpt_dir``).
        network: the network the evaluator runs (a DDP wrapper is unwrapped).
        metric: key of ``engine.state.metrics`` to maximise.
        filename: name of the weights file.
    """

    def __init__(self, save_dir: str | Path, network: torch.nn.Module, metric: str = "score", filename: str = "model_best.pt"):
        self.save_dir = Path(save_dir)
        self.network = network
        self.metric = metric
        self.path = self.save_dir / filename
        self.record_path = self.path.with_suffix(".json")
        self.logger = logging.getLogger(__name__)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def best(self) -> float | None:
        """The best value recorded so far (None before the first validation run)."""
        if not (self.record_path.is_file() and self.path.is_file()):
            return None
        return json.loads(self.record_path.read_text())["value"]

    def __call__(self, engine) -> None:
        if self.metric not in engine.state.metrics:
            raise KeyError(f"BestModelSaver: the evaluator has no metric {self.metric!r} (it has {sorted(engine.state.metrics)}); attach it after the handler that computes it")
        value = float(engine.state.metrics[self.metric])
        best = self.best()
        if math.isnan(value) or (best is not None and value <= best) or not is_main_process():
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save(unwrap_model(self.network).state_dict(), tmp)
        record = {"metric": self.metric, "value": value, "epoch": int(engine.state.epoch)}
        with atomic_path(self.record_path) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
        self.logger.info(f"best {self.metric} so far {value:.4f} at epoch {record['epoch']}: saved {self.path}")
