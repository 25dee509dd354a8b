"""The CZII score checked against hand-counted cases."""

import numpy as np
import pytest

from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.picks import make_picks
from cryoet_monai.metrics import MetricError, count_hits, ratios, score_picks


def preds(rows, item="TS_1"):
    return make_picks([r[0] for r in rows] if rows else [], [r[1] for r in rows] if rows else [], np.array([r[2:] for r in rows]).reshape(-1, 3), ndim=3)


def test_count_hits_duplicates_are_false_positives():
    true = np.array([[0.0, 0, 0], [100, 0, 0]])
    pred = np.array([[10.0, 0, 0], [-10, 0, 0], [300, 0, 0]])  # two on particle 0, one far away
    assert count_hits(true, pred, 50) == {"tp": 1, "fp": 2, "fn": 1}


def test_count_hits_boundary_is_inclusive():
    true = np.array([[0.0, 0, 0]])
    assert count_hits(true, np.array([[30.0, 40, 0]]), 50)["tp"] == 1  # distance exactly 50
    assert count_hits(true, np.array([[30.0, 40.01, 0]]), 50)["tp"] == 0


def test_one_prediction_hitting_two_particles_never_gives_negative_fp():
    true = np.array([[0.0, 0, 0], [20, 0, 0]])
    assert count_hits(true, np.array([[10.0, 0, 0]]), 15) == {"tp": 2, "fp": 0, "fn": 0}


def test_ratios_hand_computed():
    r = ratios(tp=3, fp=1, fn=2, beta=4)
    p, rec = 0.75, 0.6
    assert r["precision"] == pytest.approx(p) and r["recall"] == pytest.approx(rec)
    assert r["f1"] == pytest.approx(2 * p * rec / (p + rec))
    assert r["fbeta"] == pytest.approx(17 * p * rec / (16 * p + rec))
    assert ratios(0, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "fbeta": 0.0}


def test_score_hand_counted_over_two_tomograms(make_manifest):
    # ribosome radius 100 Å → hit within 50 Å; ferritin radius 60 Å → hit within 30 Å, weight 2.
    manifest = load_manifest(
        make_manifest(
            {
                "test": [
                    ("TS_1", [("ribosome", 100, 100, 100), ("ribosome", 300, 300, 100), ("ferritin", 200, 200, 200)], None),
                    ("TS_2", [("ribosome", 400, 200, 150)], None),
                ],
                "training": [("TS_9", [("ribosome", 100, 100, 100)], None)],
            }
        )
    )
    pred = preds(
        [
            ("TS_1", "ribosome", 110, 100, 100),  # hit
            ("TS_1", "ribosome", 100, 110, 100),  # duplicate → FP
            ("TS_1", "ferritin", 300, 300, 100),  # wrong class on a ribosome → FP for ferritin
            ("TS_1", "ferritin", 200, 200, 229),  # hit at 29 Å
            ("TS_2", "ribosome", 400, 200, 201),  # 51 Å away → FP
            ("TS_9", "ribosome", 100, 100, 100),  # tomogram not in the split: ignored
            ("TS_77", "ribosome", 1, 1, 1),  # unknown tomogram: ignored
        ]
    )
    result = score_picks(pred, manifest, "test")
    ribo, ferr = result["classes"]["ribosome"], result["classes"]["ferritin"]
    assert (ribo["tp"], ribo["fp"], ribo["fn"]) == (1, 2, 2)
    assert (ferr["tp"], ferr["fp"], ferr["fn"]) == (1, 1, 0)
    f_ribo = 17 * (1 / 3) * (1 / 3) / (16 / 3 + 1 / 3)
    f_ferr = 17 * 0.5 * 1.0 / (16 * 0.5 + 1.0)
    assert ribo["fbeta"] == pytest.approx(f_ribo)
    assert result["score"] == pytest.approx((1 * f_ribo + 2 * f_ferr) / 3)
    assert result["mean_f1"] == pytest.approx((ribo["f1"] + ferr["f1"]) / 2)


def test_empty_predictions_score_zero_and_count_all_misses(make_manifest):
    manifest = load_manifest(make_manifest({"test": [("TS_1", [("ribosome", 100, 100, 100)], None)]}))
    result = score_picks(preds([]), manifest, "test")
    assert result["score"] == 0.0
    assert result["classes"]["ribosome"]["fn"] == 1
    assert result["classes"]["ferritin"] == {"tp": 0, "fp": 0, "fn": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "fbeta": 0.0}


def test_points_outside_annotated_boxes_are_neither_counted_nor_penalised(make_manifest):
    boxes = [[0, 0, 0, 250, 250, 250]]
    manifest = load_manifest(
        make_manifest({"test": [("TS_1", [("ribosome", 100, 100, 100), ("ribosome", 400, 400, 300)], boxes)]})
    )
    pred = preds([("TS_1", "ribosome", 100, 100, 100), ("TS_1", "ribosome", 500, 100, 100)])
    ribo = score_picks(pred, manifest, "test")["classes"]["ribosome"]
    assert (ribo["tp"], ribo["fp"], ribo["fn"]) == (1, 0, 0)


def test_undeclared_predicted_class_is_an_error(make_manifest):
    manifest = load_manifest(make_manifest({"test": [("TS_1", [("ribosome", 100, 100, 100)], None)]}))
    with pytest.raises(MetricError, match="proteasome"):
        score_picks(preds([("TS_1", "proteasome", 1, 1, 1)]), manifest, "test")
