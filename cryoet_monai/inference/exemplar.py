"""Exemplar matching: dense ViT token similarity to a few annotated particles, then peaks above a
density-based threshold.

Positions. A ViT token summarises one ``patch``-sized cell; its position is the cell's centre
(pixel-centre convention, see :mod:`cryoet_monai.transforms.rescale`). :func:`similarity_map` encodes
the image in windows of the network's ``img_size`` whose origins are shifted by every multiple of
``stride`` below the patch size, so token centres fall on a grid of spacing ``stride`` starting at
``-0.5`` (the image edge): grid index ``g`` is at pixel ``g · stride − 0.5`` on every axis. The
image is padded with zeros (its mean after intensity normalisation) where windows reach past it.

Exemplars. :class:`ExemplarSet` cuts one window per annotated particle, placed so the particle lies
at the centre of the window's middle token (windows of an odd number of patches are symmetric, so
flips and 90° rotations keep that token in place); the exemplar embedding is that token.

Similarity. Each token's cosine similarity to the exemplar embeddings is reduced over the exemplars
with ``mean`` (default: an average of many weak matches is steadier than one), ``max`` (best single
match: for heterogeneous views) or ``prototype`` (cosine to the normalised mean embedding).

Threshold (density-based, :func:`density_threshold`). Candidate picks are the local maxima of the
similarity map at least ``nms_radius_scale × radius`` apart, each moved to the vertex of the parabola
through it and its neighbours along every axis (sub-grid position, :func:`refine_peaks`). Their scores mix two populations,
particles (high) and background maxima (low). ``otsu`` picks the cut that maximises the between-class
variance of the score histogram (Otsu 1979); ``valley`` the lowest point of a Gaussian kernel-density
estimate of the scores between its two highest modes (falls back to Otsu for a unimodal density);
``min_error`` the cut of the best fit by two Gaussians of their own weights and spreads (Kittler and
Illingworth 1986), which stays between the populations when particles are a small minority of the candidates,
as in a tomogram. A number instead of a method name is used as a fixed similarity threshold.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from cryoet_monai.data.manifest import Manifest, picks_reader_args
from cryoet_monai.data.picks import coord_columns, item_column, make_picks, read_picks, within_border
from cryoet_monai.inference.peaks import find_peaks
from cryoet_monai.inference.sliding_window import Autocast
from cryoet_monai.transforms.rescale import to_original, to_rescaled
from cryoet_monai.transforms.views import NUM_VIEWS, invert_view_volume, view_indices, view_volume

logger = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0  # least time between two progress lines of one view-averaged map

REDUCTIONS = ("mean", "max", "prototype")
THRESHOLD_METHODS = ("otsu", "valley", "min_error")
# below this two_population_gain the candidates look like one population and picking warns (czii-bin2 tomograms:
# ≤ 0.02 for classes not found, ≥ 0.07 for found ones; 40 particles among 2000 background maxima: 0.05)
MIN_TWO_POPULATION_GAIN = 0.04


def select_exemplars(
    picks,
    item_id: str,
    num: int,
    seed: int = 0,
    particle_type: str | None = None,
    margin: float = 0.0,
    image_shape=None,
    manifest: Manifest | None = None,
) -> pd.DataFrame:
    """A reproducible random choice of ``num`` exemplars among the picks of one micrograph / tomogram.

    Args:
        picks: a picks table or a picks file (CSV, STAR, copick JSON; see :func:`read_exemplars`).
        item_id: the micrograph / tomogram whose picks are drawn from.
        num: how many exemplars (all picks when fewer exist).
        seed: seed of the random choice.
        particle_type: draw only picks of this class (all classes when None).
        margin: keep only picks at least this far (same units as the picks) from the image border
            (needs ``image_shape``, array order, in the same units).
        image_shape: extent of the image for ``margin``.
        manifest: the manifest of ``item_id``, for reading a STAR file (see :func:`read_exemplars`).
    """
    table = read_exemplars(picks, item_id, particle_type, manifest) if not isinstance(picks, pd.DataFrame) else picks
    ndim = len([c for c in ("x", "y", "z") if c in table.columns])
    table = table[table[item_column(ndim)].astype(str) == str(item_id)]
    if particle_type is not None:
        table = table[table["particle_type"].astype(str) == str(particle_type)]
    if margin > 0 and image_shape is not None:
        # margin counts from the centres of the first and last pixel, within_border from the image edges
        table = table[within_border(table[coord_columns(ndim)].to_numpy(float), image_shape, margin + 0.5)]
    if len(table) == 0:
        raise ValueError(f"{picks if not isinstance(picks, pd.DataFrame) else 'picks'}: no picks of '{item_id}'"
                         f"{'' if particle_type is None else f' (class {particle_type})'} to choose exemplars from")
    rows = np.random.default_rng(seed).choice(len(table), size=min(num, len(table)), replace=False)
    return table.iloc[np.sort(rows)].reset_index(drop=True)


def read_exemplars(path, item_id: str, particle_type: str | None = None, manifest: Manifest | None = None) -> pd.DataFrame:
    """Read a picks file of exemplars of one training item; RELION STAR files need not name the class or the item.

    A STAR file without ``cryoetParticleType`` (RELION's ``rlnClassNumber`` numbers classification classes, not
    species) holds particles of ``particle_type``, else of the manifest's only class. One without
    ``rlnMicrographName`` / ``rlnTomoName`` (RELION's per-micrograph manual picks) holds particles of ``item_id``
    when that is the manifest's only training item. A tomogram's STAR positions are converted with the voxel size
    and image shape of ``item_id``, a micrograph's Å origin shifts with its pixel size.

    Args:
        path: the picks file (CSV, STAR, copick JSON).
        item_id: the training micrograph / tomogram the exemplars are for.
        particle_type: the class the exemplars are for.
        manifest: the manifest of ``item_id``; needed for the defaults above and for tomograms.

    Raises:
        ValueError: a STAR file whose class or item cannot be decided, naming the file and the column to add.
    """
    path = Path(path)
    if path.suffix.lower() != ".star":
        return read_picks(path)
    from cryoet_monai.data.star import CENTRED_COLUMNS, MICROGRAPH_COLUMN, NAME_COLUMN, PIXEL_COLUMNS, TOMO_COLUMN, _particle_block

    columns = set(_particle_block(path).columns)
    ndim = manifest.ndim if manifest is not None else (3 if {PIXEL_COLUMNS[2], CENTRED_COLUMNS[2]} & columns else 2)
    image_word, item_column_name = ("tomogram", TOMO_COLUMN) if ndim == 3 else ("micrograph", MICROGRAPH_COLUMN)
    reader_args = {}
    if NAME_COLUMN not in columns:
        classes = manifest.class_names if manifest is not None else []
        if particle_type is None and len(classes) != 1:
            declared = f" and the manifest declares {classes}" if classes else ""
            raise ValueError(f"{path}: the exemplars name no class (no {NAME_COLUMN} column){declared}; add a column {NAME_COLUMN} naming it")
        reader_args["particle_type"] = particle_type if particle_type is not None else classes[0]
    if not {TOMO_COLUMN, MICROGRAPH_COLUMN} & columns:
        training = [it.id for it in manifest.items("training")] if manifest is not None else []
        if training != [str(item_id)]:
            several = f" and the manifest has {len(training)} training items" if len(training) > 1 else ""
            raise ValueError(
                f"{path}: the exemplars name no {image_word} (no {item_column_name} column){several}; "
                f"add a column {item_column_name} naming the {image_word} '{item_id}'"
            )
        reader_args["experiment"] = str(item_id)
    if manifest is not None:
        item = manifest.item(str(item_id))
        reader_args.update(picks_reader_args(path, ndim, item.voxel_size, item.image, item.voxel_size_declared))
    return read_picks(path, ndim=ndim, **reader_args)


def token_centre_offset(window: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """Pixel position (array order) of the centre of the middle token inside a window."""
    window, patch = np.asarray(window), np.asarray(patch)
    return (window // patch // 2) * patch + (patch - 1) / 2.0


def crop_windows(image: torch.Tensor, centres: np.ndarray, window: Sequence[int], patch: Sequence[int]) -> torch.Tensor:
    """Windows ``(N, C, *window)`` of a channel-first image whose middle token is centred on each point.

    Args:
        image: ``(C, *spatial)``.
        centres: ``(N, d)`` positions in array order (``[z,] y, x``), pixels of ``image``.
        window: window size (the network's ``img_size``).
        patch: the network's patch size.
    """
    window = tuple(int(w) for w in window)
    starts = np.rint(np.asarray(centres, dtype=float) - token_centre_offset(window, patch)).astype(int)
    pad = max(window)
    padded = F.pad(image, [pad] * (2 * len(window)))
    crops = []
    for start in starts:
        index = tuple(slice(s + pad, s + pad + w) for s, w in zip(start, window))
        crops.append(padded[(slice(None),) + index])
    return torch.stack(crops) if crops else image.new_zeros((0, image.shape[0], *window))


def centre_tokens(encoded: torch.Tensor) -> torch.Tensor:
    """``(N, D, *grid)`` token maps → ``(N, D)`` embeddings of the middle token."""
    index = tuple(g // 2 for g in encoded.shape[2:])
    return encoded[(slice(None), slice(None)) + index]


class ExemplarSet:
    """The exemplar windows of one training image: what pre-training pulls together and picking matches.

    Args:
        image: the preprocessed (normalised, rescaled) channel-first image ``(C, *spatial)``.
        exemplars: picks table of the exemplars (2D: pixels of the ORIGINAL image; 3D: Å).
        original_shape: spatial shape (array order) of the original image.
        window: the network's ``img_size``.
        patch: the network's patch size.
        voxel_size: Å per voxel of the original tomogram (3D picks are in Å); 1 for micrographs.
        jitter: in training views, each window is cut at a uniformly random offset of up to ± ``jitter`` pixels
            per axis, so the exemplar embedding tolerates particles off a token centre (as on a coarse grid).
    """

    def __init__(
        self, image, exemplars: pd.DataFrame, original_shape: Sequence[int], window, patch, voxel_size: float = 1.0, jitter: float = 0.0
    ) -> None:
        image = torch.as_tensor(image, dtype=torch.float32)
        ndim = image.ndim - 1
        self.window = tuple(int(w) for w in np.broadcast_to(window, (ndim,)))
        self.patch = tuple(int(p) for p in np.broadcast_to(patch, (ndim,)))
        if len(exemplars) < 2:
            raise ValueError(f"need at least 2 exemplars, got {len(exemplars)}")
        coords = exemplars[coord_columns(ndim)].to_numpy(float) / (voxel_size if ndim == 3 else 1.0)
        self.image, self.jitter = image, float(jitter)
        self.centres = to_rescaled(coords, tuple(original_shape), tuple(image.shape[1:]))[:, ::-1]
        self.windows = crop_windows(image, self.centres, self.window, self.patch)

    def __len__(self) -> int:
        return len(self.windows)

    def embeddings(self, network, views: bool = False, view: int = 0) -> torch.Tensor:
        """``(E, D)`` middle-token embeddings; with ``views`` each window is cut with a random jitter and gets a
        random flip / 90° rotation (training); ``view`` turns every window by that fixed view (:func:`view_volume`,
        test-time views)."""
        windows = self.windows
        if views and self.jitter > 0:
            shift = np.random.default_rng(int(torch.randint(2**31, ()))).uniform(-self.jitter, self.jitter, self.centres.shape)
            windows = crop_windows(self.image, self.centres + shift, self.window, self.patch)
        windows = view_volume(windows, view).to(next(network.parameters()).device)
        if views:
            windows = torch.stack([random_dihedral(w) for w in windows])
        return centre_tokens(network.encode(windows))


def random_dihedral(window: torch.Tensor) -> torch.Tensor:
    """A random 90° rotation in the last two axes and random flips of every spatial axis of ``(C, *spatial)``."""
    spatial = list(range(1, window.ndim))
    out = torch.rot90(window, int(torch.randint(4, ())), dims=spatial[-2:])
    flips = [a for a in spatial if bool(torch.randint(2, ()))]
    return torch.flip(out, flips) if flips else out


def similarity_grid_shape(spatial: Sequence[int], stride: int) -> tuple[int, ...]:
    """Size of the similarity grid of an image: token centres ``g · stride − 0.5`` up to the far edge."""
    return tuple(int(n // stride) + 1 for n in spatial)


def grid_to_pixels(grid_index: np.ndarray, stride: int) -> np.ndarray:
    """Similarity-grid indices → pixel positions of the (rescaled) image."""
    return np.asarray(grid_index, dtype=float) * stride - 0.5


@torch.no_grad()
def similarity_map(
    network, image: torch.Tensor, exemplar_embeddings: torch.Tensor, stride: int = 4, reduction: str = "mean", batch_size: int = 16, amp: bool = False
) -> torch.Tensor:
    """Cosine similarity of every token position to the exemplars, on a grid of spacing ``stride``.

    Args:
        network: a :class:`~cryoet_monai.networks.mae.CryoMAE` (``encode``, ``img_size``, ``patch_size``).
        image: preprocessed channel-first image ``(C, *spatial)``.
        exemplar_embeddings: ``(E, D)``.
        stride: grid spacing in pixels; must divide the patch size.
        reduction: ``mean``, ``max`` or ``prototype`` over the exemplars.
        batch_size: windows encoded at once.
        amp: encode under autocast (float16 on CUDA, bfloat16 on the CPU; similarities in float32).

    Returns:
        ``(*grid)`` similarities in [-1, 1]; index ``g`` is at pixel ``g · stride − 0.5`` (see :func:`grid_to_pixels`).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    patch, window = tuple(network.patch_size), tuple(network.img_size)
    if any(p % stride for p in patch):
        raise ValueError(f"stride {stride} must divide the patch size {patch}")
    device = next(network.parameters()).device
    encode = Autocast(network.encode, device.type) if amp else network.encode
    spatial = tuple(image.shape[1:])
    targets = F.normalize(exemplar_embeddings.to(device), dim=-1)
    if reduction == "prototype":
        targets = F.normalize(targets.mean(dim=0, keepdim=True), dim=-1)
    shifts = [p // stride for p in patch]
    grid = similarity_grid_shape(spatial, stride)
    tokens_per_axis = [math.ceil(g / s) for g, s in zip(grid, shifts)]
    windows_per_axis = [math.ceil(t / (w // p)) for t, w, p in zip(tokens_per_axis, window, patch)]
    # padding p // 2 in front puts the centre of every token at image pixel (multiple of stride) − 0.5
    lead = [p // 2 for p in patch]
    tail = [n_w * w + p - n - l for n_w, w, p, n, l in zip(windows_per_axis, window, patch, spatial, lead)]
    padding = [v for l, t in zip(lead[::-1], tail[::-1]) for v in (l, max(t, 0))]
    padded = F.pad(image.float()[None], padding)[0].to(device)
    fine = torch.full([n_w * (w // p) * s for n_w, w, p, s in zip(windows_per_axis, window, patch, shifts)], float("nan"), device=device)
    for shift in itertools.product(*[range(s) for s in shifts]):
        starts = list(itertools.product(*[range(n) for n in windows_per_axis]))
        for chunk in range(0, len(starts), batch_size):
            block = starts[chunk : chunk + batch_size]
            crops = torch.stack(
                [padded[(slice(None),) + tuple(slice(k * stride + i * w, k * stride + (i + 1) * w) for k, i, w in zip(shift, st, window))] for st in block]
            )
            tokens = F.normalize(encode(crops), dim=1)
            sims = torch.einsum("bd...,ed->be...", tokens, targets)
            sims = sims.mean(dim=1) if reduction == "mean" else sims.max(dim=1).values
            for st, sim in zip(block, sims):
                index = tuple(
                    slice(k + i * (w // p) * s, k + (i + 1) * (w // p) * s, s)
                    for k, i, w, p, s in zip(shift, st, window, patch, shifts)
                )
                fine[index] = sim
    return fine[tuple(slice(0, g) for g in grid)]


def refine_peaks(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Sub-grid peak positions: per axis, the vertex of the parabola through a peak and its two neighbours.

    Args:
        volume: the map the integer ``points`` (``(N, d)``, array order) are maxima of.
        points: integer peak positions.
    """
    points = np.asarray(points, dtype=int).reshape(-1, volume.ndim)
    refined = points.astype(float)
    for axis in range(volume.ndim):
        lower, upper = points.copy(), points.copy()
        lower[:, axis] = np.maximum(points[:, axis] - 1, 0)
        upper[:, axis] = np.minimum(points[:, axis] + 1, volume.shape[axis] - 1)
        left, mid, right = (volume[tuple(p.T)] for p in (lower, points, upper))
        curvature = left - 2 * mid + right
        inside = (lower[:, axis] != points[:, axis]) & (upper[:, axis] != points[:, axis]) & (curvature < 0)
        offset = np.where(inside, 0.5 * (left - right) / np.where(inside, curvature, 1.0), 0.0)
        refined[:, axis] += np.clip(offset, -0.5, 0.5)
    return refined


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of a 1D sample: the cut maximising the between-class variance of its histogram."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return float(values.min()) if len(values) else 0.0
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _two_gaussian_criterion(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Kittler and Illingworth's criterion ``(w₀ ln σ₀² + w₁ ln σ₁²)/2 − w₀ ln w₀ − w₁ ln w₁`` of every histogram cut
    (cut ``i`` at ``edges[i + 1]``), the edges, and the same criterion for one Gaussian (``ln σ²/2``). Each variance
    includes the within-bin variance ``h²/12`` of the histogram (bin width ``h``)."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    p = counts / counts.sum()
    bin_var = (edges[1] - edges[0]) ** 2 / 12
    w_low = np.cumsum(p)[:-1]
    w_high = 1.0 - w_low
    first, second = np.cumsum(p * centres)[:-1], np.cumsum(p * centres**2)[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low, mean_high = first / w_low, (first[-1] + p[-1] * centres[-1] - first) / w_high
        var_low = second / w_low - mean_low**2
        var_high = (second[-1] + p[-1] * centres[-1] ** 2 - second) / w_high - mean_high**2
        criterion = (w_low * np.log(np.maximum(var_low, 0) + bin_var) + w_high * np.log(np.maximum(var_high, 0) + bin_var)) / 2 - (
            w_low * np.log(w_low) + w_high * np.log(w_high)
        )
    criterion[(w_low <= 0) | (w_high <= 0)] = np.inf
    return criterion, edges, float(np.log(values.var() + bin_var) / 2)


def min_error_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Kittler and Illingworth's minimum-error threshold of a 1D sample: the cut that best fits the histogram with
    two Gaussians of their own weight and spread. Unlike Otsu's cut it is not pulled into the larger class when one
    class is rare (a few particles among many background maxima)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return float(values.min()) if len(values) else 0.0
    criterion, edges, _ = _two_gaussian_criterion(values, bins)
    return float(edges[int(np.argmin(criterion)) + 1])


def two_population_gain(values: np.ndarray, bins: int = 128) -> float:
    """How much better two Gaussians fit a 1D sample than one: the single-Gaussian criterion minus the minimum-error
    cut's (nats per candidate, near 0 for a single population). Candidate scores of a class the exemplars do not
    single out stay near 0 (≤ 0.02 on the czii-bin2 tomograms); found classes reach 0.07 and more."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return 0.0
    criterion, _, single = _two_gaussian_criterion(values, bins)
    return max(single - float(criterion.min()), 0.0)


def valley_threshold(values: np.ndarray, bandwidth: float | None = None, points: int = 512) -> float:
    """Lowest point of a Gaussian KDE between its two highest modes (Otsu when there is one mode).

    Args:
        values: the 1D sample.
        bandwidth: KDE σ; Silverman's rule when None.
        points: evaluation points of the density.
    """
    values = np.asarray(values, dtype=float)
    if len(values) < 3 or np.ptp(values) == 0:
        return otsu_threshold(values)
    sigma = bandwidth or 1.06 * values.std() * len(values) ** (-0.2)
    axis = np.linspace(values.min(), values.max(), points)
    step = axis[1] - axis[0]
    counts = np.histogram(values, bins=points, range=(axis[0] - step / 2, axis[-1] + step / 2))[0].astype(float)
    density = ndimage.gaussian_filter1d(counts, sigma / step, mode="constant")
    maxima = [i for i in range(1, points - 1) if density[i] >= density[i - 1] and density[i] > density[i + 1]]
    if len(maxima) < 2:
        return otsu_threshold(values)
    low, high = sorted(sorted(maxima, key=lambda i: density[i])[-2:])
    return float(axis[low + int(np.argmin(density[low : high + 1]))])


def density_threshold(scores: np.ndarray, method: str | float = "otsu") -> float:
    """Threshold of candidate scores: ``otsu``, ``valley``, ``min_error`` or a fixed number (see the module docstring)."""
    if not isinstance(method, str):
        return float(method)
    if method == "otsu":
        return otsu_threshold(scores)
    if method == "valley":
        return valley_threshold(scores)
    if method == "min_error":
        return min_error_threshold(scores)
    raise ValueError(f"threshold must be a number or one of {THRESHOLD_METHODS}, got {method!r}")


class SimilarityToPicks(Transform):
    """Similarity grid of one rescaled image → picks table in pixels (voxels) of the ORIGINAL image.

    Args:
        class_name: particle class written into the table.
        radius: particle radius in original pixels (voxels).
        stride: grid spacing of the similarity map in rescaled pixels.
        threshold: ``otsu``, ``valley``, ``min_error`` or a fixed similarity (see :func:`density_threshold`).
        nms_radius_scale: picks are at least ``nms_radius_scale × radius`` apart.
        voxel_size: multiplies 3D positions (Å in the picks table); 2D picks stay in pixels.
        border: candidates closer than this to an image edge (pixels / voxels of the original image) are
            dropped before thresholding; half the extraction box keeps only particles that can be boxed.
    """

    def __init__(
        self, class_name: str, radius: float, stride: int, threshold: str | float = "otsu", nms_radius_scale: float = 1.0, voxel_size: float = 1.0, border: float = 0.0
    ) -> None:
        self.class_name = str(class_name)
        self.radius = float(radius)
        self.stride = int(stride)
        self.threshold = threshold
        self.nms_radius_scale = float(nms_radius_scale)
        self.voxel_size = float(voxel_size)
        self.border = float(border)

    def __call__(self, similarity: torch.Tensor, item_id: str, original_shape: Sequence[int], rescaled_shape: Sequence[int]) -> pd.DataFrame:
        """
        Args:
            similarity: the ``(*grid)`` map (a leading channel of size 1 is accepted).
            item_id: micrograph / tomogram id.
            original_shape: spatial shape of the original image.
            rescaled_shape: spatial shape of the image the map was computed on.
        """
        sim = torch.as_tensor(similarity).float().cpu()
        ndim = len(original_shape)
        sim = sim.reshape(sim.shape[-ndim:])
        scale = rescaled_shape[-1] / original_shape[-1]
        min_distance = self.nms_radius_scale * self.radius * scale / self.stride
        heatmap = sim[None, None] if ndim == 2 else sim[None]
        points, _, scores = find_peaks(heatmap, min_distance=min_distance, thresholds=-1.0, smoothing=0.0)
        points = refine_peaks(sim.numpy(), points.numpy()[:, 3 - ndim :].astype(int))
        centres_xy = to_original(grid_to_pixels(points, self.stride)[:, ::-1], original_shape, rescaled_shape)
        inside = within_border(centres_xy, original_shape, self.border)
        centres_xy, scores = centres_xy[inside], scores.numpy()[inside]
        keep = scores >= density_threshold(scores, self.threshold) if len(scores) else np.zeros(0, dtype=bool)
        gain = two_population_gain(scores)
        if len(scores) and gain < MIN_TWO_POPULATION_GAIN:
            logger.warning(
                f"{item_id}: the {len(scores)} candidate scores of {self.class_name} show no second population (two-Gaussian "
                f"gain {gain:.3f} < {MIN_TWO_POPULATION_GAIN}): the exemplars may not single this class out here; check its "
                f"{int(keep.sum())} picks (cryoet-monai view) before using them, or try other or more exemplars"
            )
        units = 1.0 if ndim == 2 else self.voxel_size
        return make_picks(item_id, self.class_name, centres_xy[keep] * units, scores[keep], ndim=ndim)


class SimilarityToPicksd(MapTransform):
    """Dictionary version of :class:`SimilarityToPicks` for a bundle's post-processing.

    Args:
        keys: the similarity map key (one key).
        class_name: see :class:`SimilarityToPicks`.
        radius: see :class:`SimilarityToPicks`.
        stride: see :class:`SimilarityToPicks`.
        threshold: see :class:`SimilarityToPicks`.
        nms_radius_scale: see :class:`SimilarityToPicks`.
        voxel_size: see :class:`SimilarityToPicks`.
        border: see :class:`SimilarityToPicks`.
        image_key: the image key whose ``_original_shape`` / ``_rescaled_shape`` :class:`~cryoet_monai.transforms.rescale.Rescaled` recorded.
        id_key: key of the micrograph / tomogram id.
        picks_key: where the picks table is stored.
    """

    def __init__(
        self,
        keys: KeysCollection,
        class_name: str,
        radius: float,
        stride: int,
        threshold: str | float = "otsu",
        nms_radius_scale: float = 1.0,
        voxel_size: float = 1.0,
        border: float = 0.0,
        image_key: str = "image",
        id_key: str = "id",
        picks_key: str = "pred_picks",
    ) -> None:
        super().__init__(keys)
        self.to_picks = SimilarityToPicks(class_name, radius, stride, threshold, nms_radius_scale, voxel_size, border)
        self.image_key, self.id_key, self.picks_key = image_key, id_key, picks_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        original = _shape(d[f"{self.image_key}_original_shape"])
        rescaled = _shape(d[f"{self.image_key}_rescaled_shape"])
        for key in self.key_iterator(d):
            d[self.picks_key] = self.to_picks(d[key], str(d[self.id_key]), original, rescaled)
        return d


def _shape(value) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray([np.asarray(v).reshape(-1)[0] for v in value]).reshape(-1))


class ExemplarSimilarityInferer:
    """Inferer for a MONAI evaluator: a batch of one preprocessed image → its ``(1, 1, *grid)`` similarity map.

    Test-time views (:mod:`cryoet_monai.transforms.views`): for each view the image and the exemplar windows
    are turned alike, the similarity map of the turned image is turned back, and the maps are averaged. The
    image is first zero-padded at its far end to a multiple of ``stride`` so every view's grid falls on the
    same pixels (the padding is beyond every token of the unpadded grid, so view 0 alone is plain matching).
    A micrograph has the 8 views of its plane (0–7), a tomogram all 16.

    Args:
        exemplars: the :class:`ExemplarSet` to match.
        stride: grid spacing in pixels (divides the patch size).
        reduction: ``mean``, ``max`` or ``prototype``.
        batch_size: windows encoded at once.
        amp: encode under autocast (see :func:`similarity_map`).
        views: view indices whose maps are averaged; ``[0]`` is plain matching.
    """

    def __init__(
        self, exemplars: ExemplarSet, stride: int = 4, reduction: str = "mean", batch_size: int = 16, amp: bool = False, views: Sequence[int] = (0,)
    ) -> None:
        self.exemplars, self.stride, self.reduction, self.batch_size = exemplars, int(stride), reduction, int(batch_size)
        self.amp = bool(amp)
        self.views = view_indices(views, NUM_VIEWS if len(exemplars.window) == 3 else NUM_VIEWS // 2)

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network) -> torch.Tensor:
        network.eval()
        embeddings = [self.exemplars.embeddings(network, view=k) for k in self.views]
        return torch.stack([self._view_average(network, image, embeddings) for image in inputs])[:, None]

    def _view_average(self, network, image: torch.Tensor, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean of the turned-back similarity maps of ``image`` over ``self.views``, each against that view's exemplar embeddings."""
        spatial = tuple(image.shape[1:])
        padding = [v for n in spatial[::-1] for v in (0, (-n) % self.stride)]
        padded = F.pad(image[None], padding)[0]
        total, start = 0.0, time.perf_counter()
        logged = start
        for done, (k, view_embeddings) in enumerate(zip(self.views, embeddings), 1):
            similarity = similarity_map(network, view_volume(padded, k), view_embeddings, self.stride, self.reduction, self.batch_size, self.amp)
            # a micrograph's map gets a leading axis so the (z, y, x) views act on its (y, x)
            total = total + (invert_view_volume(similarity[None], k)[0] if len(spatial) == 2 else invert_view_volume(similarity, k))
            now = time.perf_counter()
            if len(self.views) > 1 and (done == len(self.views) or now - logged >= PROGRESS_SECONDS):
                logger.info(f"similarity map: view {done}/{len(self.views)} done, {now - start:.0f} s")
                logged = now
        return (total / len(self.views))[tuple(slice(0, g) for g in similarity_grid_shape(spatial, self.stride))]
