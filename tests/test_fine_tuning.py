"""Fine-tuning weights to another class list: the backbone is loaded, the output head starts afresh or from the
trained channels of the nearest particle radius."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cryoet_monai.handlers import load_weights, write_model_info
from cryoet_monai.losses import HeatmapBCELoss
from cryoet_monai.networks import HeatmapNet
from cryoet_monai.transforms import render_heatmap

FILTERS = (8, 16, 32)
HEAD = "output_block"


@pytest.fixture
def trained_for_three_classes(tmp_path):
    """Weights of a 3-class network (their model_info.json says so), initialised from another seed than the test's."""
    torch.manual_seed(1)
    network = HeatmapNet(3, filters=FILTERS)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    write_model_info(tmp_path, ["ribosome", "proteasome", "ferritin"], 20.0)
    return tmp_path / "model.pt", network.state_dict()


def test_other_classes_load_the_backbone_and_a_fresh_head(trained_for_three_classes):
    path, trained = trained_for_three_classes
    torch.manual_seed(2)
    network = HeatmapNet(2, filters=FILTERS)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    load_weights(network, path, class_names=["ball", "dot"], voxel_size=20.0, head=HEAD)
    loaded = network.state_dict()
    backbone = [k for k in loaded if not k.startswith(f"{HEAD}.")]
    assert backbone and all(torch.equal(loaded[k], trained[k]) for k in backbone)
    head = [k for k in loaded if k.startswith(f"{HEAD}.")]
    assert head and all(torch.equal(loaded[k], fresh[k]) for k in head)
    assert loaded[f"{HEAD}.conv.conv.weight"].shape[0] == 2
    assert torch.allclose(loaded[f"{HEAD}.conv.conv.bias"], torch.full((2,), -math.log(99.0)))  # the prior, not trained


def test_other_classes_are_refused_without_a_head_and_the_same_classes_load_whole(trained_for_three_classes):
    path, trained = trained_for_three_classes
    with pytest.raises(ValueError, match="trained for the classes"):
        load_weights(HeatmapNet(2, filters=FILTERS), path, class_names=["ball", "dot"])
    same = load_weights(HeatmapNet(3, filters=FILTERS), path, class_names=["ribosome", "proteasome", "ferritin"], head=HEAD)
    assert all(torch.equal(v, trained[k]) for k, v in same.state_dict().items())
    with pytest.raises(ValueError, match="add --target_voxel_size 20"):
        load_weights(HeatmapNet(2, filters=FILTERS), path, class_names=["ball", "dot"], voxel_size=10.0, head=HEAD)


def test_weights_without_a_record_get_a_fresh_head_when_the_head_does_not_fit(trained_for_three_classes):
    path, trained = trained_for_three_classes
    (path.parent / "model_info.json").unlink()
    network = load_weights(HeatmapNet(2, filters=FILTERS), path, class_names=["ball", "dot"], head=HEAD)
    assert torch.equal(network.state_dict()["input_block.conv1.conv.weight"], trained["input_block.conv1.conv.weight"])


def test_the_fine_tuning_loss_drops_on_a_tiny_volume(trained_for_three_classes):
    """A few steps on two dark balls of each of two new classes: the loss of the new head falls."""
    path, _ = trained_for_three_classes
    torch.manual_seed(0)
    network = load_weights(HeatmapNet(2, filters=FILTERS), path, class_names=["ball", "dot"], head=HEAD)
    shape = (16, 32, 32)
    centres = np.array([[8, 8, 8], [8, 24, 24], [8, 8, 24], [8, 24, 8]], dtype=float)
    labels = np.array([0, 0, 1, 1])
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    volume = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.3
    for (z, y, x), label in zip(centres, labels):
        volume[torch.from_numpy((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= (4.0 if label == 0 else 2.0) ** 2)] -= 1.5
    target = render_heatmap(centres, labels, [2.0, 1.0], shape, 2)[None]
    loss_fn = HeatmapBCELoss()
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(network(volume[None, None]), target, torch.ones_like(target))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
    info = json.loads((path.parent / "model_info.json").read_text())
    assert info["class_names"] == ["ribosome", "proteasome", "ferritin"]  # loading never rewrites the source's record


def test_a_sasi_unet_of_other_classes_keeps_all_but_final_conv(tmp_path):
    """SaSi's whole U-Net (not only its contrastive encoder) fine-tunes the same way: final_conv starts afresh."""
    from cryoet_monai.networks.segmentation import segmentation_unet

    features = (4, 4, 8, 8, 16, 4)
    torch.manual_seed(1)
    trained = segmentation_unet(3, features).state_dict()
    torch.save(trained, tmp_path / "model.pt")
    write_model_info(tmp_path, ["ribosome", "proteasome", "ferritin"], 20.0)
    torch.manual_seed(2)
    network = segmentation_unet(2, features)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    loaded = load_weights(network, tmp_path / "model.pt", class_names=["ball", "dot"], voxel_size=20.0, head="final_conv").state_dict()
    head = [k for k in loaded if k.startswith("final_conv.")]
    assert head and all(torch.equal(loaded[k], fresh[k]) for k in head)
    assert loaded["final_conv.weight"].shape[0] == 3  # background and the two new classes
    decoder = [k for k in loaded if k.startswith("upcat_")]
    assert decoder and all(torch.equal(loaded[k], trained[k]) for k in decoder)


def test_shipped_generalist_records_its_provenance_and_fine_tunes(tmp_path):
    """ship_generalist.py on a finished run: the weights alone, a model_info.json naming the 24 species with the
    pool, schedule and training hours; loading them for two new classes gives the backbone and a fresh head."""
    import runpy
    import sys

    from cryoet_monai.data.species import GENERALIST_SPECIES

    work = tmp_path / "work"
    names = [s.name for s in GENERALIST_SPECIES]
    (work / "pool").mkdir(parents=True)
    radii = [40.0 + 5 * i for i in range(len(names))]
    (work / "pool" / "manifest.json").write_text(json.dumps({"ndim": 3, "classes": [{"name": n, "radius": r} for n, r in zip(names, radii)], "training": [{}] * 3, "validation": [{}]}))
    (work / "pool" / "spread.json").write_text(json.dumps({"seed": 0, "items": [{"overrides": {"voxel_size": v}} for v in (12.5, 24.0, 20.0, 18.0)]}))
    models = work / "semietpicker" / "models"
    models.mkdir(parents=True)
    torch.manual_seed(1)
    network = HeatmapNet(len(names), filters=FILTERS)
    torch.save({"model": network.state_dict(), "trainer": {"iteration": 150, "epoch_length": 50, "max_epochs": 3}}, models / "checkpoint_epoch=3.pt")
    torch.save(network.state_dict(), models / "model.pt")
    write_model_info(models, names, 20.024)
    log = [f"2026-12-07 10:00:{s:02d},000 - INFO - Epoch: 1/3, Iter: {i}/50 -- train_loss: 1.0" for i, s in enumerate((0, 3, 6), 1)]
    log += ["2026-12-07 11:00:00,000 - INFO - Epoch: 2/3, Iter: 1/50 -- train_loss: 1.0"]  # after a pause: not counted
    (work / "semietpicker.log").write_text("\n".join(log) + "\n")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pretraining" / "ship_generalist.py"
    dest = tmp_path / "shipped"
    argv = sys.argv
    sys.argv = [str(script), "--bundle", "semietpicker", "--work", str(work), "--dest", str(dest), "--note", "schedule shortened"]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    info = json.loads((dest / "model_info.json").read_text())
    assert info["class_names"] == names and info["voxel_size"] == 20.024 and info["contrast"] == "dark" and info["class_radii"] == radii
    provenance = info["provenance"]
    assert provenance["note"] == "schedule shortened"
    assert provenance["data"]["voxel_size_range"] == [12.5, 24.0] and provenance["data"]["tomograms"] == {"training": 3, "validation": 1}
    assert provenance["schedule"]["epochs_done"] == 3 and provenance["schedule"]["max_epochs"] == 3
    assert provenance["training_hours_one_cpu_core"] == round(6 / 3600, 2)
    tuned = load_weights(HeatmapNet(2, filters=FILTERS), dest / "model.pt", class_names=["ball", "dot"], voxel_size=20.024, head=HEAD)
    assert torch.equal(tuned.state_dict()["input_block.conv1.conv.weight"], network.state_dict()["input_block.conv1.conv.weight"])


def test_each_new_class_starts_from_the_trained_channel_of_the_nearest_radius(tmp_path):
    """Weights recording class_radii 40, 90, 150 Å: new classes of 50 and 140 Å get the head channels of the 40 and
    150 Å classes (weights and bias; a segmentation's background channel stays the background's); without this
    run's radii the head starts afresh."""
    from cryoet_monai.networks.segmentation import segmentation_unet

    networks = {HEAD: (lambda n: HeatmapNet(n, filters=FILTERS), 0), "final_conv": (lambda n: segmentation_unet(n, (4, 4, 8, 8, 16, 4)), 1)}
    for head, (build, leading) in networks.items():
        folder = tmp_path / head
        folder.mkdir()
        torch.manual_seed(1)
        trained = build(3).state_dict()
        torch.save(trained, folder / "model.pt")
        write_model_info(folder, ["a", "b", "c"], 20.0, class_radii=[40.0, 90.0, 150.0])
        loaded = load_weights(build(2), folder / "model.pt", class_names=["small", "large"], voxel_size=20.0, head=head, class_radii=[50.0, 140.0]).state_dict()
        keys = [k for k in loaded if k.startswith(f"{head}.")]
        rows = list(range(leading)) + [leading + 0, leading + 2]
        assert keys and all(torch.equal(loaded[k], trained[k][rows]) for k in keys), head
        torch.manual_seed(2)
        network = build(2)
        fresh = {k: v.clone() for k, v in network.state_dict().items()}
        afresh = load_weights(network, folder / "model.pt", class_names=["small", "large"], voxel_size=20.0, head=head).state_dict()
        assert all(torch.equal(afresh[k], fresh[k]) for k in keys), head
