"""Pick overlays: a slab through a tomogram (or a micrograph) with picks circled by class.

Given the truth, each class's picks are split into true positives (solid circles), false positives
(dashed circles) and misses (crosses), with the same hit rule as the score.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from cryoet_monai.data.picks import coord_columns, item_column

CLASS_COLOURS = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff")


def slab_image(volume: np.ndarray, z: int | None = None, thickness: int = 5, sigma: float = 0.0) -> tuple[np.ndarray, int]:
    """Mean of ``thickness`` slices around ``z`` (default the middle) of a ``[z, y, x]`` volume; 2D images pass through.

    Args:
        volume: ``[z, y, x]`` tomogram or ``[y, x]`` image.
        z: slab centre (voxel index); the middle slice by default.
        thickness: slices averaged.
        sigma: Gaussian low-pass of the result for display (pixels; 0 = none), as viewers such as IMOD's 3dmod offer.
    """
    if volume.ndim == 2:
        image = volume
        z = 0
    else:
        z = volume.shape[0] // 2 if z is None else int(z)
        if not 0 <= z < volume.shape[0]:
            raise ValueError(f"slice z={z} is outside the volume (0..{volume.shape[0] - 1})")
        lo, hi = max(z - thickness // 2, 0), min(z + thickness // 2 + 1, volume.shape[0])
        image = volume[lo:hi].mean(axis=0)
    return (gaussian_filter(image.astype(np.float32), sigma) if sigma > 0 else image), z


def classify_picks(pred_xyz: np.ndarray, true_xyz: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Which predictions hit a true particle, and which true particles were hit (the score's rule)."""
    pred_hit = np.zeros(len(pred_xyz), bool)
    true_hit = np.zeros(len(true_xyz), bool)
    if len(pred_xyz) and len(true_xyz):
        for p, found in enumerate(cKDTree(true_xyz).query_ball_point(pred_xyz, r=max_distance * (1 + 1e-9))):
            if found:
                pred_hit[p] = True
                true_hit[found] = True
    return pred_hit, true_hit


def overlay_figure(
    image: np.ndarray,
    picks: pd.DataFrame,
    z: int | None = None,
    voxel_size: float = 1.0,
    radii: dict[str, float] | None = None,
    truth: pd.DataFrame | None = None,
    thickness: int = 5,
    title: str = "",
    hit_fraction: float = 0.5,
    dpi: int = 110,
):
    """A matplotlib figure of a 2D image with picks circled by class colour.

    Args:
        image: ``[y, x]`` slab of a tomogram (see :func:`slab_image`) or a micrograph.
        picks: picks of this item (Å for 3D, px for 2D).
        z: slab centre (voxel index) for a tomogram; None for a micrograph.
        voxel_size: Å per voxel (1 for 2D px).
        radii: class radius (Å / px) for the circle size and the hit rule; 10 voxels when absent.
        truth: true picks of this item; enables TP / FP / miss marking.
        thickness: slab thickness in voxels; picks within a radius of the slab are drawn.
        title: figure title.
        hit_fraction: hit rule, as in the score.
        dpi: figure resolution.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    ndim = 2 if z is None else 3
    xyz = coord_columns(ndim)
    radii = radii or {}
    classes = sorted(set(picks["particle_type"]) | (set(truth["particle_type"]) if truth is not None else set()))
    lo, hi = np.percentile(image, [1, 99])
    fig = Figure(figsize=(11, 8 * image.shape[0] / image.shape[1] + 0.6), dpi=dpi)
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, origin="lower")
    handles = []
    for i, name in enumerate(classes):
        colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
        radius = radii.get(name, 10 * voxel_size)
        pred = picks.loc[picks["particle_type"] == name, xyz].to_numpy() / voxel_size
        true = truth.loc[truth["particle_type"] == name, xyz].to_numpy() / voxel_size if truth is not None else np.zeros((0, ndim))
        pred_hit, true_hit = classify_picks(pred * voxel_size, true * voxel_size, hit_fraction * radius)
        r_vox = radius / voxel_size

        def near_slab(points):
            return np.ones(len(points), bool) if ndim == 2 else np.abs(points[:, 2] - z) <= max(r_vox, thickness / 2)

        for p, hit in zip(pred[near_slab(pred)], pred_hit[near_slab(pred)]):
            ax.add_patch(Circle((p[0], p[1]), r_vox, fill=False, color=colour, lw=1.2, ls="-" if hit or truth is None else "--"))
        misses = true[near_slab(true) & ~true_hit]
        ax.plot(misses[:, 0], misses[:, 1], "x", color=colour, ms=7, mew=1.5)
        label = name if truth is None else f"{name}: TP {int(true_hit.sum())}, FP {int((~pred_hit).sum())}, miss {int((~true_hit).sum())}"
        handles.append(Line2D([], [], color=colour, marker="o", mfc="none", ls="", label=label))
    if truth is not None:
        handles += [
            Line2D([], [], color="k", ls="-", label="solid: true positive"),
            Line2D([], [], color="k", ls="--", label="dashed: false positive"),
            Line2D([], [], color="k", marker="x", ls="", label="x: missed particle"),
        ]
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(-0.5, image.shape[0] - 0.5)
    ax.set_title(title or (f"slab z={z} ± {thickness // 2}" if ndim == 3 else "micrograph"), fontsize=10)
    unit = "voxels" if ndim == 3 else "pixels"
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def figure_to_rgb(fig) -> np.ndarray:
    """The figure as saved to PNG (legend never clipped), as an ``(H, W, 3)`` uint8 array."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def draw_overlay(
    volume: np.ndarray,
    picks: pd.DataFrame,
    out,
    voxel_size: float = 1.0,
    radii: dict[str, float] | None = None,
    truth: pd.DataFrame | None = None,
    z: int | None = None,
    thickness: int = 5,
    title: str = "",
    hit_fraction: float = 0.5,
    sigma: float = 0.0,
) -> Path:
    """Write a PNG of a slab with picks circled by class colour.

    Args:
        volume: ``[z, y, x]`` tomogram or ``[y, x]`` micrograph.
        picks: picks of this item (Å for 3D, px for 2D).
        out: PNG path.
        voxel_size: Å per voxel (1 for 2D px).
        radii: class radius (Å / px) for the circle size and the hit rule; 10 voxels when absent.
        truth: true picks of this item; enables TP / FP / miss marking.
        z: slab centre (voxel index); the middle slice by default.
        thickness: slab thickness in voxels; picks within a radius of the slab are drawn.
        title: figure title.
        hit_fraction: hit rule, as in the score.
        sigma: Gaussian low-pass of the slab for display (voxels; 0 = none).
    """
    image, z = slab_image(volume, z, thickness, sigma)
    fig = overlay_figure(image, picks, z if volume.ndim == 3 else None, voxel_size, radii, truth, thickness, title, hit_fraction)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    return out


def item_picks(picks: pd.DataFrame, item_id: str, ndim: int = 3) -> pd.DataFrame:
    """Rows of one tomogram / micrograph."""
    return picks[picks[item_column(ndim)] == item_id]
