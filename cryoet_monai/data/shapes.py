"""Soft-edged solids evaluated on Å coordinates: the building blocks of procedural particles.

Every function takes points ``p`` of shape ``[..., 3]`` (x-y-z, Å, in the particle's own frame) and an edge
``width`` (Å) and returns a density in [0, 1]: 1 inside, 0 outside, a linear ramp across the surface
(anti-aliasing).
"""

from __future__ import annotations

import numpy as np


def soft_inside(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """1 inside, 0 outside, a linear ramp of ``width`` Å across the surface (``signed_distance`` < 0 inside)."""
    return np.clip(0.5 - signed_distance / width, 0.0, 1.0)


def ellipsoid(p: np.ndarray, centre, semi_axes, width: float) -> np.ndarray:
    """An axis-aligned ellipsoid."""
    q = (p - np.asarray(centre, dtype=float)) / np.asarray(semi_axes, dtype=float)
    return soft_inside((np.linalg.norm(q, axis=-1) - 1.0) * min(semi_axes), width)


def shell(p: np.ndarray, r_in: float, r_out: float, width: float) -> np.ndarray:
    """A hollow sphere about the origin between radii ``r_in`` and ``r_out``."""
    r = np.linalg.norm(p, axis=-1)
    return soft_inside(np.maximum(r - r_out, r_in - r), width)


def torus(p: np.ndarray, ring_radius: float, tube_radius: float, width: float) -> np.ndarray:
    """A ring about the z axis: points within ``tube_radius`` of the circle of ``ring_radius`` in the xy plane."""
    ring = np.hypot(np.linalg.norm(p[..., :2], axis=-1) - ring_radius, p[..., 2])
    return soft_inside(ring - tube_radius, width)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly evenly spread unit vectors (x-y-z)."""
    k = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * k / n)
    azimuth = np.pi * (1 + 5**0.5) * k
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=-1)
