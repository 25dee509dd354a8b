"""Figures for docs/realism.md: XY and XZ slices and the central XZ plane of the 3D FFT of a synthetic tomogram.

    python benchmarks/realism/make_figures.py --templates ../shared/data/templates_10A \
        --layout ../shared/data/czii_picks --out docs/figures

Generates one czii-bin2 tomogram (the first training run) into a scratch folder (or reads ``--tomogram``)
and writes ``realism_xy.png``, ``realism_xz.png`` and ``realism_fft.png``; circles mark the true particles.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402
from scipy import ndimage, signal  # noqa: E402

from cryoet_monai.data.manifest import load_manifest  # noqa: E402
from cryoet_monai.data.phantoms import particle_density  # noqa: E402
from cryoet_monai.data.picks import read_picks  # noqa: E402
from cryoet_monai.data.readers import read_image  # noqa: E402
from cryoet_monai.data.species import CZII_SPECIES  # noqa: E402
from cryoet_monai.data.synthetic import synthesize  # noqa: E402

COLOURS = dict(
    zip([s.name for s in CZII_SPECIES], ["tab:orange", "tab:pink", "tab:cyan", "tab:green", "tab:purple", "tab:red"])
)


def _display(image: np.ndarray, sigma: float) -> tuple[np.ndarray, float, float]:
    """Lightly smoothed image with a robust grey range (what a person does in IMOD / napari)."""
    smooth = ndimage.gaussian_filter(image, sigma) if sigma > 0 else image
    lo, hi = np.percentile(smooth, [1, 99.5])
    return smooth, lo, hi


def _mark(ax, picks, keep, u, v, voxel_size):
    for row in picks[keep].itertuples(index=False):
        radius = next(s.radius for s in CZII_SPECIES if s.name == row.particle_type) / voxel_size
        ax.add_patch(
            Circle(
                (getattr(row, u) / voxel_size, getattr(row, v) / voxel_size),
                radius,
                fill=False,
                lw=0.7,
                color=COLOURS[row.particle_type],
            )
        )


def _legend(fig):
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", mfc="none", label=n) for n, c in COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)


def slice_figures(tomogram: np.ndarray, picks, voxel_size: float, out: Path, sigma: float) -> None:
    nz, ny, nx = tomogram.shape
    z0, y0 = nz // 2, ny // 2
    smooth, lo, hi = _display(tomogram[z0 - 1 : z0 + 2].mean(0), sigma)
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.6))
    for ax, marked in zip(axes, (False, True)):
        ax.imshow(smooth, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        ax.set_title(f"XY slice z={z0} (3-slice average)" + (", true particles circled" if marked else ""), fontsize=9)
        ax.set_xlabel("x (voxels)")
        if marked:
            _mark(ax, picks, np.abs(picks["z"] / voxel_size - z0) < 4, "x", "y", voxel_size)
    _legend(fig)
    fig.savefig(out / "realism_xy.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    smooth, lo, hi = _display(tomogram[:, y0 - 1 : y0 + 2].mean(1), sigma)
    fig, axes = plt.subplots(2, 1, figsize=(12, 7.5))
    for ax, marked in zip(axes, (False, True)):
        ax.imshow(smooth, cmap="gray", vmin=lo, vmax=hi, origin="lower")
        ax.set_title(
            f"XZ slice y={y0} (3-slice average); tilt axis = Y, beam along Z"
            + (", true particles circled" if marked else ""),
            fontsize=9,
        )
        ax.set_ylabel("z (voxels)")
        if marked:
            _mark(ax, picks, np.abs(picks["y"] / voxel_size - y0) < 4, "x", "z", voxel_size)
    _legend(fig)
    fig.savefig(out / "realism_xz.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def fft_figure(tomogram: np.ndarray, voxel_size: float, tilt_max: float, out: Path) -> None:
    nz, ny, nx = tomogram.shape
    power = np.abs(np.fft.fftshift(np.fft.fftn(tomogram)))[:, ny // 2] ** 2  # central XZ plane (k_y = 0)
    fig, ax = plt.subplots(figsize=(7, 6))
    nyquist = 0.5 / voxel_size
    ax.imshow(
        np.log10(power + 1e-6),
        cmap="magma",
        origin="lower",
        aspect="auto",
        extent=(-nyquist, nyquist, -nyquist, nyquist),
    )
    k = np.linspace(-nyquist, nyquist, 2)
    slope = np.tan(np.deg2rad(90 - tilt_max))
    for sign in (1, -1):
        ax.plot(k, sign * k / slope, "c--", lw=0.8)
    ax.set_xlim(-nyquist, nyquist)
    ax.set_ylim(-nyquist, nyquist)
    ax.set_xlabel("k_x (1/Å)")
    ax.set_ylabel("k_z (1/Å)")
    ax.set_title(
        f"log power, central XZ plane of the 3D FFT; dashed: ±{tilt_max:g}° tilt limits (wedge around k_z)", fontsize=9
    )
    fig.savefig(out / "realism_fft.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def detectability(tomogram: np.ndarray, picks, voxel_size: float, templates=None) -> dict[str, float]:
    """Per class: matched-filter score at the true centres, in standard deviations of the score at particle-free spots.

    The filter is the class's spherically averaged density (zero mean), so orientation does not matter; an ideal
    observer that knows where to look. Values of 3-4 are reached by chance somewhere in any tomogram.
    """
    rng = np.random.default_rng(0)
    xyz = picks[["x", "y", "z"]].to_numpy()
    spots = rng.uniform(0, 1, (4000, 3)) * (np.asarray(tomogram.shape[::-1]) - 1) * voxel_size
    scores = {}
    for species in CZII_SPECIES:
        box = particle_density(species.name, voxel_size, np.eye(3), templates=templates)
        shell = np.round(
            np.linalg.norm(np.indices(box.shape) - (np.asarray(box.shape)[:, None, None, None] - 1) / 2, axis=0)
        ).astype(int)
        kernel = ndimage.mean(box, shell, np.arange(shell.max() + 1))[shell]
        score = signal.fftconvolve(tomogram, (kernel - kernel.mean())[::-1, ::-1, ::-1], mode="same")
        free = spots[np.all(np.linalg.norm(spots[:, None] - xyz[None], axis=-1) > species.radius + 150, axis=1)]
        background = score[tuple(np.round(free[:, ::-1] / voxel_size).astype(int).T)]
        centres = np.round(xyz[picks["particle_type"] == species.name][:, ::-1] / voxel_size).astype(int)
        scores[species.name] = float((np.median(score[tuple(centres.T)]) - background.mean()) / background.std())
    return scores


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--templates", default=None, help="folder of <pdb>.mrc density maps")
    parser.add_argument("--layout", default=None, help="folder of CZII runs <run>/<class>.json")
    parser.add_argument("--out", default="docs/figures", help="where the PNGs go")
    parser.add_argument("--work", default=None, help="folder for the generated data (default: a temporary one)")
    parser.add_argument("--preset", default="czii-bin2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sigma", type=float, default=1.0, help="display smoothing in voxels")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        start = time.perf_counter()
        manifest = load_manifest(synthesize(work, args.preset, args.seed, args.templates, args.layout, n_tomograms=1))
        print(f"generated in {time.perf_counter() - start:.1f} s")
        item = manifest.items("training")[0]
        tomogram, voxel_size = read_image(item.image)
        picks = read_picks(item.picks)
    slice_figures(tomogram, picks, voxel_size, out, args.sigma)
    fft_figure(tomogram, voxel_size, 60.0, out)
    print(f"wrote {sorted(p.name for p in out.glob('realism_*.png'))} for {item.id}")
    print(
        "matched-filter detectability (σ):",
        {k: round(v, 1) for k, v in detectability(tomogram, picks, voxel_size, args.templates).items()},
    )


if __name__ == "__main__":
    main()
