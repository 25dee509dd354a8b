"""Shared fixtures: tiny manifests built on the fly, and the optional reference data."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cryoet_monai.data.picks import make_picks, write_picks
from cryoet_monai.data.readers import write_mrc

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def log_handlers_on_a_live_stream():
    """MONAI's ``get_logger`` gives a logger a handler on the ``sys.stdout`` of the moment, once per process; under
    pytest that may be an earlier test's capture stream, closed since, and every later record fails to print with
    a traceback. Such handlers write to the current ``sys.stdout`` instead."""
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    for handler in (h for lg in loggers for h in lg.handlers):
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            handler.stream = sys.stdout
    yield


@pytest.fixture
def shared_data():
    """The reference data beside the development checkout; tests using it skip elsewhere."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def generalist_pool(tmp_path_factory):
    """Four small tomograms of the generalist pre-training pool (three training, one validation) at their own voxel
    sizes, synthesised once per test session from the reference templates."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    from cryoet_monai.data.acquisition_spread import synthesize_spread

    small = {"extent_xy": (1500.0, 1800.0), "ice_thickness": (600.0, 800.0)}
    return synthesize_spread(tmp_path_factory.mktemp("generalist_pool"), 3, 1, seed=0, templates=SHARED_DATA / "templates_10A", species="generalist", spread=small)


@pytest.fixture
def pretrain_generalist(generalist_pool):
    """``pretrain_generalist(bundle, out, *options)``: the bundle's train.yaml + pretrain_generalist.yaml on the
    generalist pool, two epochs of two iterations through a smart cache of two tomograms, in a fresh process (as
    ``python -m monai.bundle run``); returns the ``model_info.json`` it wrote."""
    import os
    import subprocess

    from cryoet_monai.bundles import bundle_dir

    def run(bundle: str, out: Path, *options: str) -> dict:
        configs = bundle_dir(bundle) / "configs"
        files = str([str(configs / "train.yaml"), str(configs / "pretrain_generalist.yaml")])
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--manifest", str(generalist_pool), "--output_dir", str(out),
               *options, "--max_epochs", "2", "--epoch_length", "2", "--val_interval", "0", "--cache_num", "2"]
        result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert "cache_num: 2" in result.stdout + result.stderr
        return json.loads((out / "models" / "model_info.json").read_text())

    return run


@pytest.fixture
def make_manifest(tmp_path):
    """Build a tiny 3D manifest: ``make_manifest(items={split: [(id, picks_rows, boxes)]})``.

    ``picks_rows`` is a list of ``(class, x, y, z)`` in Å; tomograms are 40 × 50 × 60 voxels (z, y, x) at 10 Å.
    """

    def build(items, classes=None, shape=(40, 50, 60), voxel_size=10.0, extra=None):
        classes = classes or [{"name": "ribosome", "radius": 100, "weight": 1}, {"name": "ferritin", "radius": 60, "weight": 2}]
        raw = {"name": "toy", "ndim": 3, "voxel_size": voxel_size, "classes": classes}
        for split, entries in items.items():
            raw[split] = []
            for item_id, rows, boxes in entries:
                image = tmp_path / "tomograms" / f"{item_id}.mrc"
                if not image.exists():
                    write_mrc(image, np.zeros(shape, np.float32), voxel_size)
                entry = {"id": item_id, "image": f"tomograms/{item_id}.mrc"}
                if rows is not None:
                    picks = make_picks(item_id, [r[0] for r in rows], np.array([r[1:] for r in rows]).reshape(-1, 3))
                    write_picks(picks, tmp_path / "picks" / f"{item_id}.csv")
                    entry["picks"] = f"picks/{item_id}.csv"
                if boxes is not None:
                    entry["annotated"] = boxes
                raw[split].append(entry)
        raw.update(extra or {})
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps(raw))
        return path

    return build


@pytest.fixture
def assert_cache_untouched():
    """``assert_cache_untouched(parser, ["train", ...])``: draws every batch of ``<name>#dataloader`` a few times,
    writes into each batch in place, and checks that the tensors cached by ``<name>#dataset`` did not change.

    Training datasets cache whole tomograms without copying them per draw (``copy_cache: false``), so neither
    a transform nor a consumer of the batches may write into them.
    """

    def check(parser, names, rounds=4):
        for name in names:
            dataset = parser.get_parsed_content(f"{name}#dataset")
            before = [{k: v.clone() for k, v in item.items() if isinstance(v, torch.Tensor)} for item in dataset._cache]
            for _ in range(rounds):
                for batch in parser.get_parsed_content(f"{name}#dataloader"):
                    for value in batch.values():
                        if isinstance(value, torch.Tensor):
                            value.mul_(-1.0).add_(7.0)
            for cached, snapshot in zip(dataset._cache, before):
                for key, value in snapshot.items():
                    assert torch.equal(cached[key], value), f"{name}: cached '{key}' changed"

    return check
