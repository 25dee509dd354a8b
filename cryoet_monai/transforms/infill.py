"""Self-augmented volume infill (SaSi): raise the particle density of a training crop.

Few-shot crops hold few particles. Infill pastes annotated particles — a cube of the tomogram around
each, under a random wedge-preserving view — into free space of a crop, with their ball labels, until
the crop reaches a target foreground fraction. The pasted density reaches the particle's full radius
even when the label ball is smaller (``radius_scale`` < 1), so a capsid keeps its shell. A pasted
particle never comes near a labelled one (existing or already pasted); its edge is blended with a soft
spherical alpha so the seam is no cue.
The bank of particles is built once from the labeled training items by :func:`build_particle_bank`.

:class:`RandAugMixd` is the AugMix-style variant: the crop is replaced by a random convex mix of
intensity-augmented copies of itself (labels unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform

from cryoet_monai.data.manifest import inside_boxes
from cryoet_monai.transforms.meta import like_image
from cryoet_monai.transforms.picks import LoadPicksd, data_voxel_size
from cryoet_monai.transforms.views import NUM_VIEWS, view_volume


@dataclass
class BankedParticle:
    """One annotated particle cut out of its tomogram.

    Args:
        image: ``(1, S, S, S)`` cube centred on the particle (the image's intensities after preprocessing).
        label: class index.
        radius: ball radius in voxels (the label radius).
        extent: radius of the particle's density in voxels, what is pasted; None: the ball radius.
    """

    image: torch.Tensor
    label: int
    radius: float
    extent: float | None = None

    def __post_init__(self) -> None:
        if self.extent is None:
            self.extent = self.radius


def build_particle_bank(
    data_dicts: Sequence[Mapping],
    transform: Callable,
    class_names: Sequence[str],
    radii_angstrom: Sequence[float],
    radius_scale: float = 1.0,
    margin: float = 1.5,
) -> list[BankedParticle]:
    """Cut every annotated particle of the labeled items into a bank for :class:`RandVolumeInfilld`.

    Only particles inside the items' ``annotated`` boxes are taken, and only those whose cube lies
    inside the tomogram.

    Args:
        data_dicts: manifest items (``Manifest.data_dicts("training")``) with ``image`` and ``picks``.
        transform: loads and preprocesses an item's image (the training pipeline's loading steps),
            returning ``d["image"]`` ``(1, Z, Y, X)``.
        class_names: class names in label order.
        radii_angstrom: particle radius of each class in Å.
        radius_scale: ball radius as a fraction of the particle radius (as in the sphere masks).
        margin: half-size of the cube as a multiple of the particle radius (room for the blend).
    """
    load_picks = LoadPicksd(keys="picks", classes=class_names)
    bank = []
    for item in data_dicts:
        if item.get("picks") is None:
            continue
        d = load_picks(transform(dict(item)))
        image = _plain(d["image"]).float()
        voxel_size = data_voxel_size(d)
        keep = inside_boxes(d["points"][:, ::-1] * voxel_size, d.get("annotated"))
        for point, label in zip(d["points"][keep], d["labels"][keep]):
            extent = float(radii_angstrom[label]) / voxel_size
            half = math.ceil(margin * extent)
            centre = np.rint(point).astype(int)
            lo, hi = centre - half, centre + half + 1
            if np.any(lo < 0) or np.any(hi > np.asarray(image.shape[-3:])):
                continue
            cube = image[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].clone()
            bank.append(BankedParticle(cube, int(label), radius_scale * extent, extent))
    if not bank:
        raise ValueError("no annotated particle lies far enough inside its tomogram to be banked for infill")
    return bank


def _distance_from_centre(size: int) -> torch.Tensor:
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    return torch.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)


class RandVolumeInfilld(RandomizableTransform, MapTransform):
    """Paste banked particles into free space of a crop until it reaches a target particle density.

    A candidate centre is drawn uniformly where the particle's cube fits in the crop; it is taken
    when no labelled voxel (existing or pasted) lies within ``(1 + gap)`` particle radii (``extent``) + 1 voxel
    of it, and — unless ``allow_unannotated`` — when the ball lies where the loss mask is 1. The pasted image
    is ``alpha · particle + (1 - alpha) · crop`` with alpha 1 out to the particle radius, falling as a half
    cosine to 0 over ``feather`` particle radii; the label ball's voxels get the particle's class and a loss
    mask of 1.

    Args:
        keys: the image, label map and loss mask keys, in that order.
        bank: particles from :func:`build_particle_bank`.
        prob: probability of infilling a crop.
        target_fraction: stop once this fraction of the crop's voxels is labelled foreground.
        max_particles: paste at most this many particles per crop.
        max_tries: candidate centres tried per crop.
        gap: extra free distance around a particle, as a fraction of its radius.
        feather: width of the blend outside the particle, as a fraction of its radius.
        random_view: paste each particle under a random wedge-preserving view.
        allow_unannotated: also paste where the loss mask is 0 (the pasted ball becomes annotated).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label", "loss_mask"),
        bank: Sequence[BankedParticle] = (),
        prob: float = 1.0,
        target_fraction: float = 0.1,
        max_particles: int = 8,
        max_tries: int = 50,
        gap: float = 0.2,
        feather: float = 0.3,
        random_view: bool = True,
        allow_unannotated: bool = True,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        if len(self.keys) != 3:
            raise ValueError(f"RandVolumeInfilld needs the image, label and loss mask keys, got {self.keys}")
        if not bank:
            raise ValueError("RandVolumeInfilld needs a non-empty particle bank (build_particle_bank)")
        self.bank = list(bank)
        self.target_fraction, self.max_particles, self.max_tries = float(target_fraction), int(max_particles), int(max_tries)
        self.gap, self.feather = float(gap), float(feather)
        self.random_view, self.allow_unannotated = bool(random_view), bool(allow_unannotated)
        self.pasted: list[tuple[int, tuple[int, int, int]]] = []  # (class, centre) of the last call

    def _alpha_and_ball(self, particle: BankedParticle) -> tuple[torch.Tensor, torch.Tensor]:
        distance = _distance_from_centre(particle.image.shape[-1])
        ramp = ((distance / particle.extent - 1.0) / max(self.feather, 1e-6)).clamp(0.0, 1.0)
        return 0.5 * (1.0 + torch.cos(math.pi * ramp)), distance <= particle.radius

    def _free(self, label: torch.Tensor, mask: torch.Tensor, centre: np.ndarray, particle: BankedParticle) -> bool:
        radius = particle.radius
        reach = (1.0 + self.gap) * particle.extent + 1.0  # at least one free voxel between particles
        lo = np.maximum(np.floor(centre - reach).astype(int), 0)
        hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, label.shape[-3:])
        window = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid = torch.meshgrid(*[torch.arange(a, b, dtype=torch.float32) - c for a, b, c in zip(lo, hi, centre)], indexing="ij")
        near = grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2 <= reach**2
        if torch.any(label[0][window][near] > 0):
            return False
        if self.allow_unannotated:
            return True
        return bool(torch.all(mask[0][window][grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2 <= radius**2] > 0))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        self.pasted = []
        if not self._do_transform:
            return d
        image_key, label_key, mask_key = self.keys
        image, label, mask = (_plain(d[k]).clone() for k in (image_key, label_key, mask_key))
        shape = np.asarray(image.shape[-3:])
        for _ in range(self.max_tries):
            if len(self.pasted) >= self.max_particles or float((label > 0).float().mean()) >= self.target_fraction:
                break
            particle = self.bank[self.R.randint(len(self.bank))]
            size = particle.image.shape[-1]
            if np.any(shape < size):
                continue
            lo = np.asarray([self.R.randint(0, n - size + 1) for n in shape])
            centre = lo + (size - 1) / 2
            if not self._free(label, mask, centre, particle):
                continue
            cube = particle.image
            if self.random_view:
                cube = view_volume(cube, int(self.R.randint(NUM_VIEWS)))
            alpha, ball = self._alpha_and_ball(particle)
            window = (slice(None), *(slice(a, a + size) for a in lo))
            image[window] = alpha * cube.to(image.dtype) + (1.0 - alpha) * image[window]
            label[window][:, ball] = particle.label + 1
            mask[window][:, ball] = 1
            self.pasted.append((particle.label, tuple(int(c) for c in np.rint(centre))))
        for key, value in zip(self.keys, (image, label, mask)):
            d[key] = like_image(value, d[key])
        return d


class RandAugMixd(RandomizableTransform, MapTransform):
    """AugMix-style mix: ``m · x + (1 - m) · Σ_i w_i · chain_i(x)`` of intensity-augmented copies of the crop.

    Each of ``width`` chains applies ``depth`` augmentations drawn from ``augmentations`` (intensity
    transforms: they must leave the geometry, and so the labels, unchanged); ``w ~ Dirichlet(alpha)``,
    ``m ~ Beta(alpha, alpha)``.

    Args:
        keys: the image keys.
        augmentations: array transforms ``f(x) -> x`` to chain (e.g. MONAI ``RandGaussianNoise``,
            ``RandAdjustContrast``, ``RandGaussianSmooth`` with ``prob=1``).
        width: number of augmented copies mixed.
        depth: augmentations per chain, a fixed number or an inclusive range ``(min, max)``.
        alpha: concentration of the mixing weights.
        prob: probability of mixing a crop.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        augmentations: Sequence[Callable] = (),
        width: int = 3,
        depth: int | Sequence[int] = (1, 3),
        alpha: float = 1.0,
        prob: float = 0.5,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        if not augmentations:
            raise ValueError("RandAugMixd needs at least one augmentation")
        self.augmentations = list(augmentations)
        self.width, self.alpha = int(width), float(alpha)
        self.depth = (int(depth), int(depth)) if isinstance(depth, int) else (int(depth[0]), int(depth[1]))

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        for aug in self.augmentations:
            if isinstance(aug, RandomizableTransform):
                aug.set_random_state(seed, state)
        return self

    def _chain(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.R.randint(self.depth[0], self.depth[1] + 1)):
            x = _plain(self.augmentations[self.R.randint(len(self.augmentations))](x))
        return x

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            x = _plain(d[key])
            weights = self.R.dirichlet([self.alpha] * self.width)
            mixed = sum(float(w) * self._chain(x.clone()) for w in weights)
            m = float(self.R.beta(self.alpha, self.alpha))
            d[key] = like_image(m * x + (1.0 - m) * mixed, d[key])
        return d


def _plain(x) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)

