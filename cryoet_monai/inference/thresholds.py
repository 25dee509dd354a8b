"""Per-class pick thresholds: tune them on a validation split and store them with the bundle.

A bundle's ``configs/thresholds.json`` maps class names to probabilities; inference reads it with
:func:`load_thresholds`. Tuning keeps, for each class, the threshold with the best F-beta of the
CZII score, so classes whose heatmaps are confident and classes that stay faint each get their own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from monai.utils import min_version, optional_import

from cryoet_monai.data.atomic import atomic_path
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.metrics import score_picks

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

DEFAULT_CANDIDATES = tuple(np.round(np.arange(0.05, 0.96, 0.025), 3))


def load_thresholds(path: str | Path, class_names: Sequence[str], default: float = 0.5) -> list[float]:
    """Thresholds of ``class_names`` from a JSON file, ``default`` for a class it lacks or a missing file."""
    path = Path(path)
    stored = json.loads(path.read_text()) if path.is_file() else {}
    return [float(stored.get(name, default)) for name in class_names]


def save_thresholds(thresholds: dict[str, float], path: str | Path) -> Path:
    """Write ``{class name: threshold}`` as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({k: round(float(v), 4) for k, v in thresholds.items()}, indent=2) + "\n")
    return path


def apply_thresholds(picks: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    """Keep the picks whose score reaches their class's threshold."""
    floor = picks["particle_type"].map(thresholds).fillna(np.inf)
    return picks[picks["score"] >= floor].reset_index(drop=True)


def _class_stats_by_threshold(picks: pd.DataFrame, manifest, split: str, candidates: Sequence[float], beta: float = 4.0):
    """``(threshold, per-class score stats)`` of the picks kept at each candidate threshold, in the given order."""
    for t in candidates:
        yield float(t), score_picks(picks[picks["score"] >= t], manifest, split, beta=beta)["classes"]


def tune_thresholds(
    picks: pd.DataFrame, manifest, split: str = "validation", candidates: Sequence[float] = DEFAULT_CANDIDATES, beta: float = 4.0
) -> tuple[dict[str, float], dict]:
    """Per-class thresholds that maximise each class's F-beta on ``split``.

    Args:
        picks: picks with scores, extracted at a threshold no higher than the lowest candidate.
        manifest: a loaded manifest or its path.
        split: the split whose truth scores the picks.
        candidates: thresholds tried for every class.
        beta: the F-beta of the score (4 for CZII).

    Returns:
        the thresholds and the :func:`~cryoet_monai.metrics.score_picks` result with them applied.
    """
    manifest = load_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest
    best = {name: (-1.0, float(candidates[0])) for name in manifest.class_names}
    for t, classes in _class_stats_by_threshold(picks, manifest, split, candidates, beta):
        for name, stats in classes.items():
            if stats["fbeta"] > best[name][0]:
                best[name] = (stats["fbeta"], t)
    thresholds = {name: t for name, (_, t) in best.items()}
    return thresholds, score_picks(apply_thresholds(picks, thresholds), manifest, split, beta=beta)


def precision_thresholds(
    picks: pd.DataFrame, manifest, split: str = "validation", min_precision: float = 0.5, candidates: Sequence[float] = DEFAULT_CANDIDATES
) -> dict[str, float | None]:
    """Per class, the lowest threshold whose picks on ``split`` reach ``min_precision`` with at least one hit.

    Pseudo-labels need precision more than recall: a class that never reaches it (the model has not learned it)
    gets None, meaning "no pseudo-particles of this class".

    Args:
        picks: picks with scores, extracted at a threshold no higher than the lowest candidate.
        manifest: a loaded manifest or its path.
        split: the split whose truth scores the picks.
        min_precision: the share of picks that must be hits.
        candidates: thresholds tried for every class.
    """
    manifest = load_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest
    chosen: dict[str, float | None] = {name: None for name in manifest.class_names}
    for t, classes in _class_stats_by_threshold(picks, manifest, split, sorted(candidates, reverse=True)):
        for name, stats in classes.items():
            if stats["tp"] > 0 and stats["precision"] >= min_precision:
                chosen[name] = t
    return chosen


class ThresholdTuner:
    """At the end of a validation run, tunes per-class thresholds on the collected picks and saves them.

    Writes the thresholds to ``thresholds_path`` (the bundle's ``configs/thresholds.json``) and to
    ``<output_dir>/thresholds.json``, and the score to ``<output_dir>/metrics.json``.

    Args:
        writer: the :class:`~cryoet_monai.inference.writer.PicksWriter` that collected the picks.
        manifest: path of the manifest holding the truth.
        split: the split scored.
        thresholds_path: where inference reads the thresholds from.
        output_dir: folder for the run's copies.
        candidates: thresholds tried for every class.
        beta: the F-beta of the score.
    """

    def __init__(
        self,
        writer,
        manifest: str | Path,
        split: str,
        thresholds_path: str | Path,
        output_dir: str | Path,
        candidates: Sequence[float] = DEFAULT_CANDIDATES,
        beta: float = 4.0,
    ):
        self.writer = writer
        self.manifest = manifest
        self.split = split
        self.thresholds_path = Path(thresholds_path)
        self.output_dir = Path(output_dir)
        self.candidates = candidates
        self.beta = beta
        self.logger = logging.getLogger(__name__)

    def attach(self, engine) -> None:
        # EPOCH_COMPLETED (an evaluator runs one epoch): the stats handlers attached after it log this run's score
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine=None) -> None:
        picks = self.writer.gathered()[0]
        thresholds, result = tune_thresholds(picks, self.manifest, self.split, self.candidates, self.beta)
        save_thresholds(thresholds, self.thresholds_path)
        save_thresholds(thresholds, self.output_dir / "thresholds.json")
        with atomic_path(self.output_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps({"thresholds": thresholds, **result}, indent=2) + "\n")
        self.logger.info(f"{self.split}: score {result['score']:.4f}, mean F1 {result['mean_f1']:.4f}; thresholds {thresholds}")
        if engine is not None:
            engine.state.metrics["score"] = result["score"]
            engine.state.metrics["mean_f1"] = result["mean_f1"]
