"""Procedural families and the generalist species set: the pre-training data never holds a CZII species."""

import numpy as np
import pandas as pd
import pytest

from cryoet_monai.data import phantoms
from cryoet_monai.data.acquisition_spread import synthesize_spread
from cryoet_monai.data.families import CZII_LOOK_ALIKES, FAMILIES, SIZE_MARGIN, draw_family
from cryoet_monai.data.manifest import load_manifest
from cryoet_monai.data.species import CZII_SPECIES, GENERALIST_SPECIES, SPECIES_SETS
from cryoet_monai.data.synthetic import synthesize

CZII_NAMES = {s.name for s in CZII_SPECIES}


def test_families_are_drawn_the_same_way_every_time_and_fill_their_radius():
    for k, family in enumerate(FAMILIES):
        assert draw_family(k) == family
        voxel_size = 10.0
        box = phantoms.procedural_particle(family.name, voxel_size, np.eye(3))
        centre = (np.asarray(box.shape) - 1) / 2
        inside = np.argwhere(box > 0.5)
        extent = np.linalg.norm(inside - centre, axis=1).max() * voxel_size
        assert family.radius - 2 * voxel_size <= extent <= family.radius + voxel_size, (family, extent)


def test_families_keep_away_from_the_czii_look_alikes_of_their_kind():
    for kind, look_alikes in CZII_LOOK_ALIKES.items():
        for name, extent in look_alikes.items():
            assert phantoms.PROCEDURAL[name][1] == extent  # the table follows the built-in look-alikes
        for family in (f for f in FAMILIES if f.kind == kind):
            assert all(abs(family.radius / extent - 1) > SIZE_MARGIN for extent in look_alikes.values()), family
    assert len({f.kind for f in FAMILIES}) == 6 and len({f.name for f in FAMILIES}) == len(FAMILIES)


def test_generalist_species_hold_no_czii_species():
    assert SPECIES_SETS["generalist"] == GENERALIST_SPECIES
    assert not CZII_NAMES & {s.name for s in GENERALIST_SPECIES}
    assert not {s.pdb for s in CZII_SPECIES} & {s.pdb for s in GENERALIST_SPECIES}
    with pytest.raises(ValueError, match="needs --templates: a folder with 1bxn.mrc"):
        synthesize("unused", preset="generalist", shape=(32, 32, 16), n_tomograms=1)
    with pytest.raises(ValueError, match="generalist species include the SHREC templates"):
        synthesize_spread("unused", 1, 0, species="generalist")


def test_generalist_spread_emits_only_pretraining_species(shared_data, tmp_path):
    """Two small tomograms of the generalist spread: every pick is a SHREC species or a family, at random packing."""
    small = {"extent_xy": (1200.0, 1500.0), "ice_thickness": (500.0, 700.0), "crowding": (1.5, 1.5)}
    path = synthesize_spread(tmp_path, 1, 1, seed=3, templates=shared_data / "templates_10A", layout=shared_data / "czii_picks",
                             spread=small, species="generalist")
    manifest = load_manifest(path)
    assert manifest.class_names == [s.name for s in GENERALIST_SPECIES]
    picks = pd.concat([manifest.read_item_picks(it) for s in ("training", "validation") for it in manifest.items(s)])
    names = set(picks["particle_type"])
    assert names <= {s.name for s in GENERALIST_SPECIES} and not names & CZII_NAMES
    assert any(n.startswith("family-") for n in names) and any(not n.startswith("family-") for n in names)
    assert (tmp_path / "spread.json").read_text().count('"layout_run": null') == 2  # CZII layouts are not replayed
