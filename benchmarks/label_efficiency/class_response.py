"""Per class: how visible its particles are, and how much a trained SemiETPicker model answers at their centres.

For one tomogram of a manifest split, prints per class the ball-filter contrast d' (mean of a ball of the class
radius at the true centres minus its mean at random positions, in units of the latter's spread) and, given a
model, the model's probability at the true centres (median, max) beside the 99.9th percentile of the whole
channel. A class whose centres score below its channel's 99.9th percentile is not learned, whatever its contrast.

    python benchmarks/label_efficiency/class_response.py --manifest DATA/manifest.json --split validation \
        [--model RUN/models/model.pt]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from monai.bundle import ConfigParser
from scipy import ndimage

from cryoet_monai.bundles import bundle_dir
from cryoet_monai.data.picks import read_picks


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--item", type=int, default=0, help="which tomogram of the split")
    parser.add_argument("--model", default=None, help="weights to probe (bundle inference.yaml network)")
    args = parser.parse_args(argv)

    config = ConfigParser()
    config.read_config(str(bundle_dir("semietpicker") / "configs" / "inference.yaml"))
    config.update({"manifest": args.manifest, "split": args.split, "device": "$torch.device('cpu')"})
    item = config.get_parsed_content("manifest_info").data_dicts(args.split)[args.item]
    image = config.get_parsed_content("preprocessing")(item)["image"]
    names, radii = config.get_parsed_content("class_names"), config.get_parsed_content("radii_angstrom")
    voxel_size = config.get_parsed_content("voxel_size")
    picks = read_picks(item["picks"], ndim=3)
    volume = image[0].numpy()
    shape = np.array(volume.shape)
    random_centres = tuple(np.random.default_rng(0).integers(0, n, 3000) for n in shape)

    probability = None
    if args.model:
        network = config.get_parsed_content("network")
        state = torch.load(args.model, map_location="cpu", weights_only=True)
        network.load_state_dict(state.get("model", state))
        network.eval()
        with torch.no_grad():
            probability = torch.sigmoid(config.get_parsed_content("inferer")(image[None], network))[0].numpy()

    print(f"{item['id']} ({args.split}), {volume.shape} voxels at {voxel_size} Å")
    for c, (name, radius) in enumerate(zip(names, radii)):
        centres = picks.loc[picks["particle_type"] == name, ["z", "y", "x"]].to_numpy() / voxel_size
        if not len(centres):
            continue
        index = tuple(np.clip(np.round(centres).astype(int), 0, shape - 1).T)
        r = radius / voxel_size
        grid = np.mgrid[tuple(slice(-int(np.ceil(r)), int(np.ceil(r)) + 1) for _ in range(3))]
        ball = (grid**2).sum(0) <= r**2
        filtered = ndimage.correlate(volume, ball / ball.sum(), mode="nearest")
        background = filtered[random_centres]
        line = f"{name:22s} n={len(centres):3d} radius {r:4.1f} vox  d'={(filtered[index].mean() - background.mean()) / background.std():5.2f}"
        if probability is not None:
            at = probability[c][index]
            line += f"  p at centres median {np.median(at):.4f} max {at.max():.4f}; channel 99.9 % {np.quantile(probability[c], 0.999):.4f}"
        print(line)


if __name__ == "__main__":
    main()
