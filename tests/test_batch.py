"""Batch picking: kill half-way and resume (each tomogram exactly once), corrupt tomograms reported and skipped."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoet_monai.batch import BatchPicker, parse_shard
from cryoet_monai.cli import main
from cryoet_monai.data.picks import read_picks
from cryoet_monai.data.readers import write_mrc

BLOB_BUNDLE = """
imports: ["$import os", "$import json", "$import time", "$import cryoet_monai", "$import cryoet_monai.inference.blobs", "$import cryoet_monai.data.picks"]
manifest: manifest.json
split: test
output_dir: out
sleep: 0.0
log: null
item_id: "$json.load(open(@manifest))[@split][0]['id']"
run:
  - "$open(@log, 'a').write(@item_id + '\\\\n') if @log else None"
  - "$time.sleep(@sleep)"
  - "$cryoet_monai.data.picks.write_picks(cryoet_monai.inference.blobs.pick_with_blobs(@manifest, @split), os.path.join(@output_dir, 'picks.csv'))"
"""


@pytest.fixture
def blob_bundle(tmp_path):
    configs = tmp_path / "blob_bundle" / "configs"
    configs.mkdir(parents=True)
    (configs / "inference.yaml").write_text(BLOB_BUNDLE)
    return configs.parent


@pytest.fixture
def noisy_manifest(make_manifest, tmp_path):
    ids = [f"TS_{i}" for i in range(5)]
    path = make_manifest({"test": [(i, [("ribosome", 100, 100, 100)], None) for i in ids]})
    rng = np.random.default_rng(0)
    for i in ids:
        volume = rng.normal(size=(40, 50, 60)).astype(np.float32)
        volume[5:15, 5:15, 5:15] += 3
        write_mrc(tmp_path / "tomograms" / f"{i}.mrc", volume, 10.0)
    return path, ids


def test_shard_parsing(monkeypatch):
    assert parse_shard("2/4") == (2, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_shard(None) == (1, 3)
    with pytest.raises(ValueError, match="need 0 <= i < n"):
        parse_shard("4/4")


def test_kill_and_resume_picks_each_tomogram_once(blob_bundle, noisy_manifest, tmp_path):
    manifest, ids = noisy_manifest
    out, log = tmp_path / "batch", tmp_path / "calls.log"
    cmd = [sys.executable, "-m", "cryoet_monai.cli", "batch", str(blob_bundle), "--manifest", str(manifest), "--out", str(out), "--formats", "--log", str(log)]
    proc = subprocess.Popen(cmd + ["--sleep", "1.0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "items").glob("*.csv"))) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = sorted(p.stem for p in (out / "items").glob("*.csv"))
    assert 2 <= len(finished_before) < len(ids), "the batch should be interrupted half-way"
    assert not (out / "picks.csv").exists()

    subprocess.run(cmd + ["--sleep", "1.0"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)  # the same settings
    calls = log.read_text().split()
    for item_id in finished_before:
        assert calls.count(item_id) == 1, f"{item_id} was picked again after it had finished"
    merged = pd.read_csv(out / "picks.csv")
    assert sorted(set(merged["experiment"])) == ids
    per_item = sum(len(pd.read_csv(out / "items" / f"{i}.csv")) for i in ids)
    assert len(merged) == per_item
    assert not [p for p in (out / "items").iterdir() if p.name.startswith(".")], "temporary work left behind"


def test_corrupt_tomogram_is_reported_and_skipped(blob_bundle, noisy_manifest, tmp_path, capsys):
    manifest, ids = noisy_manifest
    broken = tmp_path / "tomograms" / "TS_2.mrc"
    broken.write_bytes(broken.read_bytes()[:3000])
    counts = BatchPicker(str(blob_bundle), manifest, tmp_path / "batch", formats=("star",)).run()
    assert counts == {"done": 4, "skipped": 0, "failed": 1, "pending": 0}
    failures = json.loads((tmp_path / "batch" / "failures.json").read_text())
    assert [f["id"] for f in failures] == ["TS_2"] and "truncated MRC" in failures[0]["error"]
    assert sorted(set(pd.read_csv(tmp_path / "batch" / "picks.csv")["experiment"])) == [i for i in ids if i != "TS_2"]
    assert (tmp_path / "batch" / "picks.star").stat().st_size > 0
    assert main(["batch", str(blob_bundle), "--manifest", str(manifest), "--out", str(tmp_path / "batch"), "--formats", "star"]) == 2  # the scheduler sees it
    assert "1 tomogram(s) failed" in capsys.readouterr().err


def test_cryomae_batch_takes_its_exemplars_from_the_training_micrograph(tmp_path):
    """Exemplar-based bundles read the manifest's training item: each one-item manifest must keep it."""
    from cryoet_monai.data.manifest import load_manifest
    from cryoet_monai.data.synthetic_2d import synthesize_micrographs

    path = synthesize_micrographs(tmp_path / "mics", num_micrographs=3, shape=(160, 160), radius=10, num_particles=15, seed=3)
    test_ids = {it.id for it in load_manifest(path).items("test")}
    picker = BatchPicker("cryomae", path, tmp_path / "batch", config="pick", overrides={"num_exemplars": 8}, formats=("relion",))
    counts = picker.run()  # the shipped model
    assert counts == {"done": len(test_ids), "skipped": 0, "failed": 0, "pending": 0}
    picks = pd.read_csv(tmp_path / "batch" / "picks.csv")
    assert set(picks["micrograph"]) == test_ids and len(picks) >= len(test_ids)
    listing = starfile.read(tmp_path / "batch" / "relion" / "autopick.star")  # micrographs named as in the manifest
    assert sorted(listing["rlnMicrographName"]) == sorted(Path(it.image).relative_to(path.parent).as_posix() for it in picker.items)
    assert len(read_picks(tmp_path / "batch" / "relion" / "autopick.star", particle_type="particle")) == len(picks)
    with pytest.raises(ValueError, match="copick overlays are for tomograms"):
        BatchPicker("cryomae", path, tmp_path / "batch_copick", config="pick", formats=("copick",))  # refused before any picking


def test_a_rerun_with_other_settings_does_not_mix_results(blob_bundle, noisy_manifest, tmp_path):
    manifest, ids = noisy_manifest
    out = tmp_path / "batch"
    BatchPicker(str(blob_bundle), manifest, out, shard=(0, 2)).run()
    BatchPicker(str(blob_bundle), manifest, out, shard=(1, 2)).run()  # another shard, same settings: fine
    with pytest.raises(ValueError, match=r"other settings \(overrides differ"):
        BatchPicker(str(blob_bundle), manifest, out, overrides={"threshold": 0.99}).run()
