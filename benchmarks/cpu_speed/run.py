"""CPU speed of the two choices behind SemiETPicker 0.1.12 / SaSi 0.1.9: channels-last weights (`memory_format`) and
3×3×3 local maxima one axis at a time (`neighbourhood_max`) instead of PyTorch's `max_pool3d`.

    OMP_NUM_THREADS=1 python benchmarks/cpu_speed/run.py

Each measurement alternates the two variants (``--rounds`` times ``--repeats`` calls each) in one process on one
thread, so that drifting machine load hits both alike, and reports the mean seconds per call. The networks are the
bundles' defaults at random initialisation; outputs of the two variants are compared too. Writes `results.md` here
(or `--results`).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cryoet_monai.inference.peaks import neighbourhood_max
from cryoet_monai.networks import HeatmapNet
from cryoet_monai.networks.segmentation import segmentation_unet

HERE = Path(__file__).resolve().parent


def alternate(variants: dict, rounds: int, repeats: int) -> dict:
    """Mean seconds per call of each ``{name: callable}``, the variants taking turns."""
    totals = dict.fromkeys(variants, 0.0)
    for fn in variants.values():
        fn()  # warm-up: oneDNN picks its kernels on the first call
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            totals[name] += time.perf_counter() - start
    return {name: total / (rounds * repeats) for name, total in totals.items()}


def layouts(network: torch.nn.Module, batch: torch.Tensor, train: bool, rounds: int, repeats: int) -> tuple[dict, float]:
    """Seconds per training step (forward, backward) or per forward pass, default vs channels-last weights, and the
    largest difference between the two outputs."""
    default, channels_last = network, copy.deepcopy(network).to(memory_format=torch.channels_last_3d)
    for net in (default, channels_last):
        net.train(train)

    def step(net):
        if not train:
            with torch.no_grad():
                return net(batch)
        net.zero_grad()
        out = net(batch)
        out.float().mean().backward()
        return out.detach()

    difference = float((step(default) - step(channels_last)).abs().max())
    times = alternate({"default": lambda: step(default), "channels-last": lambda: step(channels_last)}, rounds, repeats)
    return times, difference


def local_maxima(shape: tuple, rounds: int, repeats: int) -> tuple[dict, bool]:
    """Seconds per 3×3×3 local maximum of a random ``shape`` volume, max pooling vs :func:`neighbourhood_max`."""
    volume = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    batched = volume.reshape(-1, *shape[-3:])

    def pooled():
        return F.max_pool3d(batched, kernel_size=3, stride=1, padding=1).reshape(shape)

    times = alternate({"max_pool3d": pooled, "neighbourhood_max": lambda: neighbourhood_max(volume)}, rounds, repeats)
    return times, bool(torch.equal(pooled(), neighbourhood_max(volume)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    rows = []
    cases = [
        ("SemiETPicker HeatmapNet, training step", HeatmapNet(num_classes=6, filters=[8, 16, 32, 64]), (4, 1, 32, 48, 48), True),
        ("SemiETPicker HeatmapNet, forward", HeatmapNet(num_classes=6, filters=[8, 16, 32, 64]), (4, 1, 32, 64, 64), False),
        ("SaSi U-Net, training step", segmentation_unet(num_classes=6), (2, 1, 32, 64, 64), True),
        ("SaSi U-Net, forward", segmentation_unet(num_classes=6), (4, 1, 32, 64, 64), False),
    ]
    for name, network, shape, train in cases:
        times, difference = layouts(network, torch.randn(shape), train, args.rounds, args.repeats)
        rows.append(f"| {name}, input {shape} | default layout | channels-last | {times['default']:.3f} | {times['channels-last']:.3f} | "
                    f"{times['default'] / times['channels-last']:.2f}× | outputs differ by ≤ {difference:.1e} |")
        print(rows[-1], flush=True)
    for shape in [(4, 6, 32, 48, 48), (92, 315, 315)]:
        times, equal = local_maxima(shape, args.rounds, args.repeats)
        rows.append(f"| 3×3×3 local maxima of {shape} | max_pool3d | neighbourhood_max | {times['max_pool3d']:.3f} | "
                    f"{times['neighbourhood_max']:.3f} | {times['max_pool3d'] / times['neighbourhood_max']:.1f}× | equal: {equal} |")
        print(rows[-1], flush=True)

    text = [
        "# CPU speed: weight layout and local maxima",
        "",
        f"One thread, torch {torch.__version__}; mean seconds per call over {args.rounds} alternating rounds of {args.repeats} calls.",
        "",
        "| what | A | B | A (s) | B (s) | A / B | check |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Reproduce: `OMP_NUM_THREADS=1 python benchmarks/cpu_speed/run.py`",
    ]
    args.results.write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
