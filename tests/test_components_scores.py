"""SaSi post-processing scores: the mean softmax probability of a component's class, computed without every class's map."""

import cc3d
import torch

from cryoet_monai.inference.components import SegmentationToPicks


def test_scores_are_the_mean_class_probability_over_each_component():
    logits = torch.randn(3, 12, 16, 16, generator=torch.Generator().manual_seed(0)) * 2
    logits[1, 2:6, 3:8, 3:8] += 6.0
    logits[2, 7:11, 8:14, 6:12] += 6.0
    picks = SegmentationToPicks(["a", "b"], [20.0, 20.0], min_size_fraction=0.0)(logits, "t", 10.0)
    probabilities = torch.softmax(logits, dim=0).numpy()
    labels = probabilities.argmax(0)
    expected = []
    for c, name in enumerate(["a", "b"]):
        components = cc3d.connected_components(labels == c + 1, connectivity=26)
        for component in range(1, components.max() + 1):
            expected.append((name, probabilities[c + 1][components == component].mean()))
    assert len(picks) == len(expected) >= 2
    for (name, score), (_, row) in zip(expected, picks.iterrows()):
        assert row["particle_type"] == name
        assert abs(row["score"] - score) < 1e-5


def test_per_class_thresholds_drop_only_the_faint_components_of_their_class():
    logits = torch.zeros(3, 12, 24, 24)
    logits[1, 2:6, 2:6, 2:6] = 8.0  # confident a
    logits[1, 2:6, 14:18, 14:18] = 0.8  # faint a
    logits[2, 7:11, 2:6, 14:18] = 0.8  # faint b
    everything = SegmentationToPicks(["a", "b"], [20.0, 20.0], min_size_fraction=0.0)(logits, "t", 10.0)
    assert sorted(everything["particle_type"]) == ["a", "a", "b"]
    faint = everything["score"][everything["score"] < 0.9]
    assert len(faint) == 2 and float(faint.max()) < 0.6  # the faint ones score e^0.8 / (e^0.8 + 2) ≈ 0.53
    kept = SegmentationToPicks(["a", "b"], [20.0, 20.0], min_size_fraction=0.0, thresholds=[0.6, 0.0])(logits, "t", 10.0)
    assert sorted(kept["particle_type"]) == ["a", "b"]
    assert float(kept.loc[kept["particle_type"] == "a", "score"].iloc[0]) > 0.99
    assert float(kept.loc[kept["particle_type"] == "a", "x"].iloc[0]) == 35.0  # centroid of x 2..5 at 10 Å
