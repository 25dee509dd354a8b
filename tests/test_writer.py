"""PicksWriter on a bare engine: what it writes for micrographs and tomograms."""

import numpy as np
import pytest
import starfile
import torch
from ignite.engine import Engine

from cryoet_monai.data.picks import empty_picks, make_picks, read_picks
from cryoet_monai.data.star import CENTRED_COLUMNS, MICROGRAPH_COLUMN
from cryoet_monai.inference.writer import PicksWriter


def run_writer(writer: PicksWriter, items: list[dict]) -> None:
    """Run ``writer`` on an engine whose output for each item is the item's ``picks``, one item per iteration."""
    engine = Engine(lambda e, batch: [{"pred_picks": item["picks"]} for item in batch])
    writer.attach(engine)
    engine.run([[item] for item in items])


def micrograph(name: str, picks) -> dict:
    return {"id": name, "image": torch.zeros(1, 32, 32), "voxel_size": 1.0, "picks": picks}


def tomogram(name: str, image, voxel_size: float, position, **extra) -> dict:
    """A tomogram item with one ribosome at ``position`` (Å, x-y-z)."""
    return {"id": name, "image": image, "voxel_size": voxel_size, "picks": make_picks(name, "ribosome", [position]), **extra}


def test_micrograph_without_picks_writes_empty_micrograph_tables(tmp_path):
    run_writer(PicksWriter(tmp_path, formats=["csv", "star"]), [micrograph("mic_1", empty_picks(2))])
    assert len(read_picks(tmp_path / "picks.csv", ndim=2)) == 0
    assert MICROGRAPH_COLUMN in starfile.read(tmp_path / "picks.star").columns


def test_copick_output_for_micrographs_is_rejected_before_anything_is_written(tmp_path):
    picks = make_picks("mic_1", "particle", [[10.0, 12.0]])
    with pytest.raises(ValueError, match="copick overlays are for tomograms"):
        run_writer(PicksWriter(tmp_path, formats=["csv", "star", "copick"]), [micrograph("mic_1", picks)])
    assert list(tmp_path.iterdir()) == []


def test_star_centres_each_tomogram_with_its_own_voxel_size_and_original_shape(tmp_path):
    """Both picks lie at their tomogram's centre: half of (30, 20, 10) voxels × 10 Å, and half of (30, 20, 10)
    voxels × 4 Å of a tomogram rescaled to half its size for picking."""
    items = [
        tomogram("TS_1", torch.zeros(1, 10, 20, 30), 10.0, [150.0, 100.0, 50.0]),
        tomogram("TS_2", torch.zeros(1, 5, 10, 15), 4.0, [60.0, 40.0, 20.0], image_original_shape=(10, 20, 30)),
    ]
    run_writer(PicksWriter(tmp_path, formats=["csv", "star"]), items)
    centred = starfile.read(tmp_path / "picks.star")[CENTRED_COLUMNS].to_numpy()
    np.testing.assert_allclose(centred, 0.0)


def test_star_class_numbers_follow_the_given_class_order_whichever_classes_were_picked(tmp_path):
    classes = ["apo-ferritin", "beta-amylase", "beta-galactosidase", "ribosome", "thyroglobulin", "virus-like-particle"]
    picks = make_picks("TS_1", ["ribosome", "virus-like-particle"], [[150.0, 100.0, 50.0], [100.0, 100.0, 50.0]])
    item = {"id": "TS_1", "image": torch.zeros(1, 10, 20, 30), "voxel_size": 10.0, "picks": picks}
    run_writer(PicksWriter(tmp_path, formats=["csv", "star"], class_names=classes), [item])
    assert starfile.read(tmp_path / "picks.star")["rlnClassNumber"].tolist() == [4, 6]


@pytest.mark.parametrize(
    "bundle, config, writer_id",
    [
        ("semietpicker", "inference", "picks_writer"),
        ("semietpicker", "evaluate", "picks_writer"),
        ("semietpicker", "train", "validate#picks_writer"),
        ("semietpicker", "train_semi", "validate#picks_writer"),
        ("sasi", "inference", "picks_writer"),
        ("sasi", "evaluate", "picks_writer"),
        ("sasi", "train", "validate#picks_writer"),
        ("cryomae", "pick", "picks_writer"),
        ("cryomae", "pick_3d", "picks_writer"),
    ],
)
def test_bundle_writers_number_classes_in_manifest_order(make_manifest, tmp_path, bundle, config, writer_id):
    from monai.bundle import ConfigParser

    from cryoet_monai.bundles import bundle_dir

    manifest = make_manifest({"test": [("TS_1", [("ribosome", 100, 100, 100)], None)]})
    parser = ConfigParser()
    parser.read_config(bundle_dir(bundle) / "configs" / f"{config}.yaml")
    parser.update({"manifest": str(manifest), "output_dir": str(tmp_path / "out")})
    assert parser.get_parsed_content(f"{writer_id}#class_names") == ["ribosome", "ferritin"]
