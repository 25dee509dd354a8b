"""An ignite handler that scores the picks of an evaluation run with the CZII score."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.utils import min_version, optional_import

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.engines.distributed import is_main_process
from cryoet_monai.metrics import score_picks, write_score

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")


class PicksScorer:
    """Scores the picks a :class:`~cryoet_monai.inference.writer.PicksWriter` collected against the truth.

    Runs at ``EPOCH_COMPLETED`` of the evaluator, so handlers attached after it (``StatsHandler``,
    ``TensorBoardStatsHandler``, ``MLFlowHandler``) log ``score`` and ``mean_f1`` of this run from
    ``engine.state.metrics``. Picks are scored as they are (no threshold tuning, see
    :class:`~cryoet_monai.inference.thresholds.ThresholdTuner` for that).

    Args:
        writer: the picks writer attached to the same evaluator (before this handler).
        manifest: path of the manifest holding the truth.
        split: the split scored.
        metrics_path: where the full score (per class) is written as JSON (by rank 0); None writes nothing.
        beta: the F-beta of the score.
    """

    def __init__(self, writer, manifest: str | Path, split: str = "validation", metrics_path: str | Path | None = None, beta: float = 4.0):
        self.writer = writer
        self.manifest = manifest
        self.split = split
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        self.beta = beta
        self.logger = logging.getLogger(__name__)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine=None) -> dict:
        picks = self.writer.gathered()[0]
        result = score_picks(picks, load_manifest(self.manifest), self.split, beta=self.beta)
        if self.metrics_path is not None and is_main_process():
            write_score(result, self.metrics_path)
        self.logger.info(f"{self.split}: score {result['score']:.4f}, mean F1 {result['mean_f1']:.4f}")
        if engine is not None:
            engine.state.metrics["score"] = result["score"]
            engine.state.metrics["mean_f1"] = result["mean_f1"]
        return result
