"""PicksWriter on a bare engine: what it writes for micrographs and tomograms."""

import pytest
import starfile
import torch
from ignite.engine import Engine

from cryoet_monai.data.picks import empty_picks, make_picks, read_picks
from cryoet_monai.data.star import MICROGRAPH_COLUMN
from cryoet_monai.inference.writer import PicksWriter


def run_writer(writer: PicksWriter, items: list[dict]) -> None:
    """Run ``writer`` on an engine whose output for each item is the item's ``picks``, one item per iteration."""
    engine = Engine(lambda e, batch: [{"pred_picks": item["picks"]} for item in batch])
    writer.attach(engine)
    engine.run([[item] for item in items])


def micrograph(name: str, picks) -> dict:
    return {"id": name, "image": torch.zeros(1, 32, 32), "voxel_size": 1.0, "picks": picks}


def test_micrograph_without_picks_writes_empty_micrograph_tables(tmp_path):
    run_writer(PicksWriter(tmp_path, formats=["csv", "star"]), [micrograph("mic_1", empty_picks(2))])
    assert len(read_picks(tmp_path / "picks.csv", ndim=2)) == 0
    assert MICROGRAPH_COLUMN in starfile.read(tmp_path / "picks.star").columns


def test_copick_output_for_micrographs_is_rejected_before_anything_is_written(tmp_path):
    picks = make_picks("mic_1", "particle", [[10.0, 12.0]])
    with pytest.raises(ValueError, match="copick overlays are for tomograms"):
        run_writer(PicksWriter(tmp_path, formats=["csv", "star", "copick"]), [micrograph("mic_1", picks)])
    assert list(tmp_path.iterdir()) == []
