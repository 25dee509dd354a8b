"""Label budgets: covered fraction, every scored class labelled, shots boxes, untouched splits, relative paths."""

import numpy as np
import pytest

from cryoet_monai.data.budgets import SHOT_BOX_FACTOR, BudgetError, budget_manifest
from cryoet_monai.data.manifest import load_manifest

CLASSES = [
    {"name": "ribosome", "radius": 100, "weight": 1},
    {"name": "ferritin", "radius": 60, "weight": 2},
    {"name": "amylase", "radius": 50, "weight": 0},
]
SHAPE, VOXEL = (40, 100, 100), 10.0  # z, y, x voxels -> 1000 x 1000 x 400 Å


def crowd(seed, counts):
    """Picks rows ``(class, x, y, z)`` in Å spread over the tomogram."""
    rng = np.random.default_rng(seed)
    extent = (np.array(SHAPE[::-1]) - 1) * VOXEL
    return [(name, *rng.uniform(0, extent)) for name, n in counts.items() for _ in range(n)]


@pytest.fixture
def manifest_path(make_manifest):
    counts = {"ribosome": 60, "ferritin": 80, "amylase": 40}
    return make_manifest(
        {
            "training": [("t1", crowd(1, counts), None), ("t2", crowd(2, counts), None)],
            "unlabeled": [("u1", None, None)],
            "validation": [("v1", crowd(3, counts), None)],
            "test": [("x1", crowd(4, counts), [[0, 0, 0, 500, 500, 300]])],
        },
        classes=CLASSES,
        shape=SHAPE,
        voxel_size=VOXEL,
    )


def labelled(manifest):
    """Particles per class inside the training boxes."""
    return dict(zip(manifest.class_names, manifest.labeled_counts("training")))


@pytest.mark.parametrize("fraction", [0.01, 0.05])
def test_fraction_covers_the_share_and_every_scored_class(manifest_path, fraction):
    out = budget_manifest(manifest_path, manifest_path.parent / f"budget_{fraction}.json", fraction=fraction, seed=0)
    budget = load_manifest(out)
    volume = float(np.prod(np.array(SHAPE) * VOXEL))
    for item in budget.items("training"):
        boxes = np.array(item.annotated)
        assert len(boxes) >= 1 and np.all(boxes[:, :3] >= 0) and np.all(boxes[:, 3:] <= np.array(SHAPE[::-1]) * VOXEL)
        assert np.prod(boxes[:, 3:] - boxes[:, :3], axis=1).sum() / volume == pytest.approx(fraction, rel=0.01)
    assert {"ribosome", "ferritin"} <= set(labelled(budget))
    original = load_manifest(manifest_path)
    for split in ("validation", "test", "unlabeled"):
        assert [(i.id, i.image, i.picks, i.annotated) for i in budget.items(split)] == [
            (i.id, i.image, i.picks, i.annotated) for i in original.items(split)
        ]


def test_fraction_boxes_do_not_overlap(manifest_path):
    budget = load_manifest(budget_manifest(manifest_path, manifest_path.parent / "b.json", fraction=0.1, seed=3))
    boxes = np.array(budget.items("training")[0].annotated)
    assert len(boxes) > 1
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            overlap = np.minimum(boxes[a, 3:], boxes[b, 3:]) - np.maximum(boxes[a, :3], boxes[b, :3])
            assert np.any(overlap <= 0)


def test_same_seed_same_boxes_other_seed_differs(manifest_path):
    first = load_manifest(budget_manifest(manifest_path, manifest_path.parent / "a.json", fraction=0.02, seed=5))
    again = load_manifest(budget_manifest(manifest_path, manifest_path.parent / "b.json", fraction=0.02, seed=5))
    other = load_manifest(budget_manifest(manifest_path, manifest_path.parent / "c.json", fraction=0.02, seed=6))
    assert first.items("training")[0].annotated == again.items("training")[0].annotated
    assert first.items("training")[0].annotated != other.items("training")[0].annotated


@pytest.mark.parametrize("shots", [1, 5])
def test_shots_boxes_hold_n_particles_per_class(manifest_path, shots):
    budget = load_manifest(budget_manifest(manifest_path, manifest_path.parent / "shots.json", shots=shots, seed=1))
    counts = labelled(budget)
    assert all(counts.get(c["name"], 0) >= shots for c in CLASSES)
    boxes = [b for item in budget.items("training") for b in item.annotated]
    assert len(boxes) == shots * len(CLASSES)
    sides = sorted({round(max(np.subtract(b[3:], b[:3])), 3) for b in boxes})
    assert set(sides) <= {SHOT_BOX_FACTOR * c["radius"] for c in CLASSES}  # boxes clipped at edges only shrink


def test_budget_written_elsewhere_resolves_paths(manifest_path, tmp_path):
    out = budget_manifest(manifest_path, tmp_path / "elsewhere" / "budget.json", shots=2, seed=0)
    budget, original = load_manifest(out), load_manifest(manifest_path)
    assert [i.image for i in budget.items("training")] == [i.image for i in original.items("training")]


def test_impossible_budgets_raise_clear_errors(make_manifest, tmp_path):
    rare = make_manifest(
        {"training": [("t1", [("ribosome", 500.0, 500.0, 200.0)] + crowd(1, {"ferritin": 1}), None)]},
        classes=CLASSES[:2],
        shape=SHAPE,
        voxel_size=VOXEL,
    )
    with pytest.raises(BudgetError, match="every scored class"):
        budget_manifest(rare, tmp_path / "b.json", fraction=0.001)
    with pytest.raises(BudgetError, match="fewer than 3 shots"):
        budget_manifest(rare, tmp_path / "b.json", shots=3)
    with pytest.raises(BudgetError, match="exactly one"):
        budget_manifest(rare, tmp_path / "b.json", fraction=0.1, shots=2)
