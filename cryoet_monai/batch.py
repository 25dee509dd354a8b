"""Sharded, resumable batch picking of many tomograms with any bundle.

Every tomogram is picked by the bundle's own inference config through the common ids of the
contract (``manifest``, ``split``, ``output_dir``), using a one-item manifest, and its picks are
renamed into ``<out>/items/<id>.csv`` only when complete. A rerun skips finished tomograms, so an
interrupted batch resumes where it stopped and never counts a half-written result. A tomogram that
fails (corrupt file, NaNs, ...) is recorded in ``<out>/failures/<id>.json`` and the batch goes on.
When every tomogram of the split is done (by all shards), the merged ``picks.csv`` (and optionally
``picks.star`` and a copick overlay) is written.

Sharding: ``shard=(i, n)`` takes items ``i, i+n, i+2n, ...``; under ``torchrun`` the shard is taken
from ``RANK`` / ``WORLD_SIZE`` when none is given (each process on the GPU of its ``LOCAL_RANK``), so
SLURM arrays and torchrun both split the work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from cryoet_monai.data.atomic import atomic_path
from cryoet_monai.data.manifest import Manifest, load_manifest
from cryoet_monai.data.picks import empty_picks, read_picks, write_picks


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n``; None → the torchrun rank, or ``(0, 1)``."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        index, count = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like 'i/n' (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def use_local_gpu() -> None:
    """Under torchrun, make ``cuda`` mean this process's GPU (``LOCAL_RANK``)."""
    import torch

    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())


def single_item_manifest(manifest: Manifest, item, path: Path) -> Path:
    """Write a manifest whose ``test`` split holds only ``item``, beside the ``training`` items (exemplar-based
    bundles such as CryoMAE take their exemplars from the first one); absolute paths."""
    one = Manifest(manifest.name, manifest.ndim, manifest.voxel_size, manifest.classes, {"training": manifest.items("training"), "test": [item]})
    return one.save(path)


class BatchPicker:
    """Pick every tomogram of a manifest split with a bundle, one result file per tomogram.

    Args:
        bundle: bundle name or folder.
        manifest: manifest path.
        out: output folder.
        split: split to pick.
        config: inference config name of the bundle.
        shard: ``(index, count)`` of this worker.
        overrides: extra ``--key value`` overrides for the bundle config.
        formats: merged outputs besides ``picks.csv``: ``"star"``, ``"copick"`` (tomograms) and / or ``"relion"``
            (micrographs: ``relion/autopick.star`` and a coordinate file per micrograph, paths relative to the
            manifest's folder).
    """

    def __init__(self, bundle, manifest, out, split="test", config="inference", shard=(0, 1), overrides=None, formats=()):
        self.bundle, self.config, self.split = bundle, config, split
        self.manifest = load_manifest(manifest, check_points=False)
        self.out = Path(out).resolve()
        self.shard = shard
        self.overrides = dict(overrides or {})
        self.formats = tuple(formats)
        if "copick" in self.formats and self.manifest.ndim == 2:
            raise ValueError(f"{manifest}: copick overlays are for tomograms and this manifest holds micrographs; leave copick out of --formats")
        if "relion" in self.formats and self.manifest.ndim == 3:
            raise ValueError(f"{manifest}: RELION coordinate files are for micrographs and this manifest holds tomograms (their RELION picks are 'star'); leave relion out of --formats")
        self.items = self.manifest.items(split)

    def result_path(self, item_id: str) -> Path:
        return self.out / "items" / f"{item_id}.csv"

    def failure_path(self, item_id: str) -> Path:
        return self.out / "failures" / f"{item_id}.json"

    def shard_items(self) -> list:
        index, count = self.shard
        return self.items[index::count]

    def pick_item(self, item) -> None:
        """Run the bundle on one tomogram; the result appears only when complete."""
        from cryoet_monai.runner import run_bundle

        work = Path(tempfile.mkdtemp(prefix=f".{item.id}.", dir=self.out / "items"))
        try:
            manifest = single_item_manifest(self.manifest, item, work / "manifest.json")
            run_bundle(self.bundle, self.config, {**self.overrides, "manifest": str(manifest), "split": "test", "output_dir": str(work)})
            picks = read_picks(work / "picks.csv", ndim=self.manifest.ndim)
            write_picks(picks, self.result_path(item.id))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def settings(self) -> dict:
        """What makes a result: the bundle, config, manifest, split and overrides (not the shard)."""
        return {"bundle": str(self.bundle), "config": self.config, "manifest": str(self.manifest.path), "split": self.split,
                "overrides": {k: self.overrides[k] for k in sorted(self.overrides)}}

    def check_settings(self) -> None:
        """Record the settings in ``OUT/settings.json``; a rerun with other settings would mix results, so it stops."""
        path = self.out / "settings.json"
        current = json.loads(json.dumps(self.settings()))
        if not path.is_file():
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(current, indent=2))
            return
        recorded = json.loads(path.read_text())
        if recorded != current:
            changed = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
            raise ValueError(f"{self.out} holds results made with other settings ({', '.join(changed)} differ; see {path}); use a new --out, or delete it to start over")

    def run(self) -> dict:
        """Pick this shard's unfinished tomograms, then merge if the whole split is done.

        Returns:
            counts: ``{"done", "skipped", "failed", "pending"}`` for this shard.
        """
        for sub in ("items", "failures"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.check_settings()
        use_local_gpu()
        todo = self.shard_items()
        for item in todo:  # work folders of a killed run of this shard; never counted as results
            for stale in (self.out / "items").glob(f".{item.id}.*"):
                shutil.rmtree(stale, ignore_errors=True)
        counts = {"done": 0, "skipped": 0, "failed": 0}
        start = time.time()
        for n, item in enumerate(todo, 1):
            if self.result_path(item.id).is_file():
                counts["skipped"] += 1
                continue
            try:
                self.pick_item(item)
                self.failure_path(item.id).unlink(missing_ok=True)
                counts["done"] += 1
            except Exception as err:  # one bad tomogram must not stop the batch
                from cryoet_monai.runner import root_cause

                err = root_cause(err)
                counts["failed"] += 1
                with atomic_path(self.failure_path(item.id)) as tmp:
                    tmp.write_text(json.dumps({"id": item.id, "image": str(item.image), "error": f"{type(err).__name__}: {err}"}, indent=2))
                print(f"batch: {item.id} FAILED: {err}", flush=True)
            hours = (time.time() - start) / 3600
            rate = counts["done"] / hours if hours > 0 and counts["done"] else 0.0
            print(f"batch: {n}/{len(todo)} {item.id} — done {counts['done']}, skipped {counts['skipped']}, failed {counts['failed']}, {rate:.1f} items/hour", flush=True)
        counts["pending"] = sum(not self.result_path(it.id).is_file() and not self.failure_path(it.id).is_file() for it in self.items)
        if counts["pending"] == 0:
            self.merge()
        return counts

    def merge(self) -> Path:
        """Merge the per-item results into ``picks.csv`` (+ STAR / copick overlay / RELION picking output) and a failures report."""
        tables = [read_picks(self.result_path(it.id), ndim=self.manifest.ndim) for it in self.items if self.result_path(it.id).is_file()]
        merged = pd.concat(tables, ignore_index=True) if tables else empty_picks(self.manifest.ndim)
        path = write_picks(merged, self.out / "picks.csv")
        failures = [json.loads(p.read_text()) for p in sorted((self.out / "failures").glob("*.json"))]
        with atomic_path(self.out / "failures.json") as tmp:
            tmp.write_text(json.dumps(failures, indent=2) + "\n")
        if "star" in self.formats:
            from cryoet_monai.data.star import star_geometry

            picked = Manifest(self.manifest.name, 3, self.manifest.voxel_size, self.manifest.classes)
            picked.splits["test"] = [it for it in self.items if self.result_path(it.id).is_file()]
            write_picks(merged, self.out / "picks.star", **star_geometry(picked, "test"))
        if "copick" in self.formats:
            from cryoet_monai.data.copick_io import write_copick_overlay

            write_copick_overlay(merged, self.out / "copick_overlay")
        if "relion" in self.formats:
            from cryoet_monai.data.relion_picking import write_relion_picking

            micrographs = {it.id: str(it.image) for it in self.items}
            write_relion_picking(merged, self.out / "relion", micrographs, self.manifest.path.parent, self.manifest.class_names)
        print(f"batch: merged {len(tables)} items ({len(merged)} picks) into {path}; {len(failures)} failed (see failures.json)")
        return path
