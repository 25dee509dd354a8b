"""The CZII particle-picking score (DESIGN.md §2), with precision, recall and F1 per class.

Per class, a prediction hits every true particle of that class within ``hit_fraction × radius``
(distance ≤, inclusive). TP is the number of distinct true particles hit, FP = predictions − TP
(never below zero, so duplicates are false positives), FN = true − TP. Counts are summed over the
items of the split before the ratios are taken. The score is the weight-averaged F-β (β = 4) over
all declared classes; ``mean_f1`` is the plain mean F1 over the scored classes (weight > 0).
Points outside an item's ``annotated`` boxes and predictions for items outside the split are
neither counted nor penalised.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from cryoet_monai.data.manifest import Manifest, inside_boxes
from cryoet_monai.data.picks import coord_columns, item_column, validate_picks

COUNT_KEYS = ("tp", "fp", "fn")


class MetricError(ValueError):
    """Predictions that cannot be scored against a manifest."""


def count_hits(true_xyz: np.ndarray, pred_xyz: np.ndarray, max_distance: float) -> dict[str, int]:
    """TP / FP / FN of one class in one item.

    Args:
        true_xyz: ``(N, d)`` true positions.
        pred_xyz: ``(M, d)`` predicted positions, same units.
        max_distance: a prediction hits a true particle at distance ≤ this.
    """
    n_true, n_pred = len(true_xyz), len(pred_xyz)
    tp = 0
    if n_true and n_pred:
        hits = cKDTree(true_xyz).query_ball_point(pred_xyz, r=max_distance * (1 + 1e-9))
        tp = len({i for found in hits for i in found})
    return {"tp": tp, "fp": max(n_pred - tp, 0), "fn": n_true - tp}


def ratios(tp: int, fp: int, fn: int, beta: float = 4.0) -> dict[str, float]:
    """Precision, recall, F1 and F-β from counts (0 where undefined, as in the CZII challenge)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0

    def f(b):
        denom = b * b * precision + recall
        return (1 + b * b) * precision * recall / denom if denom else 0.0

    return {"precision": precision, "recall": recall, "f1": f(1.0), "fbeta": f(beta)}


def score_picks(
    pred: pd.DataFrame,
    manifest: Manifest,
    split: str,
    beta: float = 4.0,
    hit_fraction: float = 0.5,
    truth: pd.DataFrame | None = None,
) -> dict:
    """Score predicted picks against the truth of a manifest split.

    Args:
        pred: predicted picks table (contract columns; Å for 3D, px for 2D).
        manifest: the manifest that declares classes, radii, weights, items and annotated boxes.
        split: which split to score (``test``, ``validation``, ...).
        beta: β of the per-class F-β (4 in the CZII challenge).
        hit_fraction: a hit lies within ``hit_fraction × radius`` of a true particle.
        truth: true picks; read from the manifest's picks files when omitted.

    Returns:
        ``{"score", "mean_f1", "classes": {name: {"tp","fp","fn","precision","recall","f1","fbeta"}}}``.

    Raises:
        MetricError: predictions for a class the manifest does not declare.
    """
    ndim = manifest.ndim
    pred = validate_picks(pred, source="predictions", ndim=ndim)
    truth = manifest.truth(split) if truth is None else validate_picks(truth, source="truth", ndim=ndim)
    undeclared = sorted(set(pred["particle_type"]) - set(manifest.class_names))
    if undeclared:
        raise MetricError(f"predictions name class(es) {undeclared} not declared in {manifest.path} ({manifest.class_names})")
    key, xyz = item_column(ndim), coord_columns(ndim)
    counts = {c.name: dict.fromkeys(COUNT_KEYS, 0) for c in manifest.classes}
    for item in manifest.items(split):
        item_true = truth[truth[key] == item.id]
        item_pred = pred[pred[key] == item.id]
        item_true = item_true[inside_boxes(item_true[xyz].to_numpy(), item.annotated)]
        item_pred = item_pred[inside_boxes(item_pred[xyz].to_numpy(), item.annotated)]
        for c in manifest.classes:
            found = count_hits(
                item_true.loc[item_true["particle_type"] == c.name, xyz].to_numpy(),
                item_pred.loc[item_pred["particle_type"] == c.name, xyz].to_numpy(),
                hit_fraction * c.radius,
            )
            for k in COUNT_KEYS:
                counts[c.name][k] += found[k]
    classes = {name: {**n, **ratios(n["tp"], n["fp"], n["fn"], beta)} for name, n in counts.items()}
    weights = np.array([c.weight for c in manifest.classes], dtype=float)
    fbetas = np.array([classes[c.name]["fbeta"] for c in manifest.classes])
    scored = [classes[c.name]["f1"] for c in manifest.classes if c.weight > 0]
    return {
        "score": float((weights * fbetas).sum() / weights.sum()) if weights.sum() else 0.0,
        "mean_f1": float(np.mean(scored)) if scored else 0.0,
        "classes": classes,
    }


def format_score_table(result: dict, manifest: Manifest | None = None) -> str:
    """The result of :func:`score_picks` as a readable fixed-width table."""
    weights = {c.name: c.weight for c in manifest.classes} if manifest is not None else {}
    width = max([len(n) for n in result["classes"]] + [5])
    header = f"{'class':<{width}}  weight    tp    fp    fn  precision  recall     f1  f-beta"
    lines = [header, "-" * len(header)]
    for name, r in result["classes"].items():
        w = weights.get(name, float("nan"))
        lines.append(
            f"{name:<{width}}  {w:6.1f} {r['tp']:5d} {r['fp']:5d} {r['fn']:5d}  {r['precision']:9.3f}"
            f"  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['fbeta']:6.3f}"
        )
    lines.append("-" * len(header))
    lines.append(f"CZII score (weighted F-beta): {result['score']:.4f}    mean F1 (scored classes): {result['mean_f1']:.4f}")
    return "\n".join(lines)


def write_score(result: dict, path) -> dict:
    """Write a :func:`score_picks` result as JSON (atomically); returns the result."""
    import json
    from pathlib import Path

    from cryoet_monai.data.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result
