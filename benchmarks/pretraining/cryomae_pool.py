"""The micrograph pool of CryoMAE's generalist pre-training (configs/pretrain_generalist.yaml).

Real: the unlabeled EMPIAR-10017 micrographs (``--empiar DIR/unlabeled``; never the four annotated ones, which the
CryoMAE benchmark trains and tests on). Synthetic: micrographs of each SHREC template of the generalist species set
(never β-galactosidase, the benchmark's particle) at the real micrographs' pixel size, with a decoy of another
template, over a spread of defocus. One manifest lists them all under ``training`` with one particle class of the real
data's radius (54 px), so every micrograph is rescaled alike and the synthetic particles span 0.4–1.6 times it.
Resumable: a finished synthetic set is kept.

    python benchmarks/pretraining/cryomae_pool.py --empiar ../shared/data/empiar10017_micrographs \
        --templates ../shared/data/templates_10A --out POOL
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cryoet_monai.data.species import GENERALIST_SPECIES
from cryoet_monai.data.synthetic_2d import synthesize_micrographs

PIXEL_SIZE = 1.77  # Å, EMPIAR-10017
RADIUS_PX = 54.0  # the real particle's radius, the pool's one class


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--empiar", type=Path, required=True, help="EMPIAR-10017 folder (its unlabeled/ micrographs are used)")
    parser.add_argument("--templates", type=Path, required=True, help="density templates (templates_10A)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-template", type=int, default=2, help="synthetic micrographs per template")
    parser.add_argument("--size", type=int, default=1536, help="synthetic micrograph side (px)")
    args = parser.parse_args(argv)

    items = [{"id": path.stem, "image": str(path.resolve())} for path in sorted((args.empiar / "unlabeled").iterdir())]
    shrec = [s.name for s in GENERALIST_SPECIES if (args.templates / f"{s.name}.mrc").is_file()]
    for index, name in enumerate(shrec):
        folder = args.out / "synthetic" / name
        if not (folder / "manifest.json").is_file():
            synthesize_micrographs(
                folder, num_micrographs=args.per_template, shape=(args.size, args.size), templates=args.templates, template=f"{name}.mrc",
                pixel_size=PIXEL_SIZE, defocus_um=(1.0, 3.0), num_particles=60, num_decoys=20, decoy_template=f"{shrec[(index + 1) % len(shrec)]}.mrc", seed=index,
            )
        manifest = json.loads((folder / "manifest.json").read_text())
        items += [{"id": f"{name}_{item['id']}", "image": str((folder / item["image"]).resolve())} for split in ("training", "test") for item in manifest.get(split, [])]
    pool = {
        "name": "cryomae-generalist-pool", "ndim": 2, "voxel_size": PIXEL_SIZE, "contrast": "dark",
        "classes": [{"name": "particle", "radius": RADIUS_PX, "weight": 1}], "training": items,
    }
    (args.out / "manifest.json").write_text(json.dumps(pool, indent=1) + "\n")
    print(f"{args.out / 'manifest.json'}: {len(items)} micrographs ({len(items) - len(shrec) * args.per_template} real)")


if __name__ == "__main__":
    main()
