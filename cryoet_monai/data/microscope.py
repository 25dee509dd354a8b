"""A transmission electron microscope for synthetic tomograms: tilt series, CTF, dose noise, WBP.

Single-axis tilt about Y. For every tilt the potential is ray-summed through the volume (one line
integral per detector pixel, linear interpolation along X in each Z plane, step ``Δz / cos θ``), the
weak-phase image is filtered by the CTF (torch-ctf) and by the radiation-damage envelope of the dose
accumulated so far (Grant & Grigorieff 2015, dose-symmetric order), and shot noise is added for the
electrons that reach the detector (fewer at high tilt, where the path through the ice is longer).
The tomogram is then reconstructed by phase flipping and R-weighted back-projection, so the missing
wedge, the Z elongation and the CTF band-pass of real tomograms are there by construction.

A single tilt axis makes every Y row an independent 2D problem; the real-space ray sums are the
Fourier-slice equivalent of torch-fourier-slice's ``project_3d_to_2d`` / ``backproject_2d_to_3d``
without their cubic, padded Fourier volume (1260³ complex voxels for a full CZII tomogram), and they
run in Y slabs so the full 630 × 630 × 184 size fits in a few GiB.

Contrast convention: physical, as recorded and reconstructed. The weak-phase image of a potential V at
underfocus is ``1 − 2σV ⊛ CTF`` (torch-ctf's CTF is positive at low frequency), so protein, denser than ice,
is *dark* in the tilt images and, after phase flipping (which keeps the sign of the first CTF lobe) and
back-projection, in the tomogram — as in IMOD, AreTomo and Warp reconstructions and the CryoET Data Portal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Microscope:
    """Acquisition and reconstruction settings.

    Args:
        tilt_min: first tilt angle in degrees.
        tilt_max: last tilt angle in degrees.
        tilt_step: tilt increment in degrees.
        dose: total electron exposure of the series in e/Å².
        defocus: mean underfocus in µm.
        defocus_spread: the defocus of each tomogram is drawn within ``defocus ± defocus_spread`` µm.
        voltage: acceleration voltage in kV.
        spherical_aberration: Cs in mm.
        amplitude_contrast: fraction of amplitude contrast.
        dqe: detective quantum efficiency (fraction of electrons that count as signal-to-noise).
        inelastic_mean_free_path: Å of ice that an energy filter loses 1/e of the electrons to.
        phase_flip: correct the CTF by phase flipping before back-projection (as IMOD ``ctfphaseflip``).
        slab: Y rows processed together (memory bound for large tomograms).
    """

    tilt_min: float = -60.0
    tilt_max: float = 60.0
    tilt_step: float = 3.0
    dose: float = 100.0
    defocus: float = 3.0
    defocus_spread: float = 0.5
    voltage: float = 300.0
    spherical_aberration: float = 2.7
    amplitude_contrast: float = 0.07
    dqe: float = 0.6
    inelastic_mean_free_path: float = 3500.0
    phase_flip: bool = True
    slab: int = 64

    def tilt_angles(self) -> np.ndarray:
        """Tilt angles in degrees, ``tilt_min`` to ``tilt_max`` inclusive."""
        if not (
            self.tilt_step > 0 and self.tilt_min < self.tilt_max and max(abs(self.tilt_min), abs(self.tilt_max)) < 90
        ):
            raise ValueError(
                f"invalid tilt range {self.tilt_min}..{self.tilt_max} step {self.tilt_step} (degrees, |angle| < 90)"
            )
        n = int(np.floor((self.tilt_max - self.tilt_min) / self.tilt_step + 1e-6)) + 1
        return self.tilt_min + self.tilt_step * np.arange(n)


def interaction_constant(voltage_kv: float) -> float:
    """Relativistic interaction constant σ in rad / (V·Å)."""
    volts = voltage_kv * 1e3
    wavelength = 12.2643 / np.sqrt(volts * (1 + 0.97848e-6 * volts))  # Å
    rest_energy = 511e3  # eV
    return float(2 * np.pi / (wavelength * volts) * (rest_energy + volts) / (2 * rest_energy + volts))


def accumulated_dose(angles: np.ndarray, dose: float) -> np.ndarray:
    """Exposure (e/Å²) received before each tilt in a dose-symmetric scheme (0°, then alternating ±, outwards)."""
    order = np.lexsort((-np.sign(angles), np.abs(angles)))  # by |angle|, positive side first
    per_tilt = dose / len(angles)
    before = np.empty(len(angles))
    before[order] = per_tilt * np.arange(len(angles))
    return before


def exposure_filter(frequency: np.ndarray, dose_before: np.ndarray, dose_per_tilt: float) -> np.ndarray:
    """Signal left at spatial ``frequency`` (1/Å) after radiation damage (Grant & Grigorieff 2015, 300 kV).

    Args:
        frequency: spatial frequencies in 1/Å, any shape.
        dose_before: e/Å² received before each tilt, shape ``[tilt]``.
        dose_per_tilt: e/Å² of one tilt.

    Returns:
        ``[tilt, *frequency.shape]`` float32 attenuation.
    """
    critical = 0.245 * np.maximum(frequency, 1e-4) ** -1.665 + 2.81
    midpoint = np.asarray(dose_before, dtype=float).reshape(-1, *([1] * frequency.ndim)) + 0.5 * dose_per_tilt
    return np.exp(-midpoint / (2 * critical)).astype(np.float32)


def project(volume: torch.Tensor, angles: np.ndarray, slab: int = 64) -> torch.Tensor:
    """Line integrals through ``volume`` ``[z, y, x]`` for tilts about Y; returns ``[tilt, y, x]`` in voxel lengths."""
    nz, ny, nx = volume.shape
    zc = torch.arange(nz, dtype=torch.float32) - (nz - 1) / 2
    uc = torch.arange(nx, dtype=torch.float32) - (nx - 1) / 2
    images = torch.zeros(len(angles), ny, nx)
    for y0 in range(0, ny, slab):
        rows = volume[:, y0 : y0 + slab].permute(1, 0, 2).unsqueeze(0).contiguous()  # [1, y, z, x]
        for t, angle in enumerate(np.deg2rad(angles)):
            x = (uc[None, :] - zc[:, None] * np.sin(angle)) / np.cos(angle)  # [z, u]: where each ray crosses plane z
            grid = torch.stack(
                [2 * (x + (nx - 1) / 2) / (nx - 1) - 1, (2 * (zc + (nz - 1) / 2) / (nz - 1) - 1)[:, None].expand_as(x)],
                -1,
            )
            sampled = F.grid_sample(rows, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)
            images[t, y0 : y0 + slab] = sampled[0].sum(1) / np.cos(angle)
    return images


def backproject(images: torch.Tensor, angles: np.ndarray, nz: int, slab: int = 64) -> torch.Tensor:
    """Smear (already weighted) tilt images ``[tilt, y, x]`` back through a ``[z, y, x]`` volume of depth ``nz``."""
    n, ny, nx = images.shape
    zc = torch.arange(nz, dtype=torch.float32) - (nz - 1) / 2
    xc = torch.arange(nx, dtype=torch.float32) - (nx - 1) / 2
    volume = torch.zeros(nz, ny, nx)
    for y0 in range(0, ny, slab):
        rows = torch.zeros(images[:, y0 : y0 + slab].shape[1], nz, nx)
        for t, angle in enumerate(np.deg2rad(angles)):
            u = xc[None, :] * np.cos(angle) + zc[:, None] * np.sin(angle)  # [z, x]: detector position of each voxel
            grid = torch.stack([2 * (u + (nx - 1) / 2) / (nx - 1) - 1, torch.zeros_like(u)], -1)
            line = images[t, y0 : y0 + slab][None, :, None, :]  # [1, y, 1, u]
            rows += F.grid_sample(line, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        volume[:, y0 : y0 + slab] = rows.permute(1, 0, 2)
    return volume


def r_weight(images: torch.Tensor) -> torch.Tensor:
    """Ramp-filter each tilt image along X, zero-padded to twice its width (the R-weighting of WBP)."""
    nx = images.shape[-1]
    spectrum = torch.fft.rfft(images, n=2 * nx, dim=-1)
    return torch.fft.irfft(spectrum * torch.fft.rfftfreq(2 * nx), n=2 * nx, dim=-1)[..., :nx]


def antialias(ny: int, nx: int) -> torch.Tensor:
    """Isotropic low-pass of a binned detector image: 1 up to half Nyquist, cosine roll-off to 0 at Nyquist (rfft layout)."""
    k = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.rfftfreq(nx)[None, :])  # cycles per pixel
    return torch.from_numpy((0.5 + 0.5 * np.cos(np.pi * np.clip(4 * k - 1, 0, 1))).astype(np.float32))


def tilt_series(
    potential: np.ndarray,
    voxel_size: float,
    microscope: Microscope,
    rng: np.random.Generator,
    ice_thickness: np.ndarray | None = None,
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Simulate CTF-modulated, dose-limited tilt images of a potential.

    Args:
        potential: ``[z, y, x]`` potential above ice in volts.
        voxel_size: Å per voxel (and per detector pixel).
        microscope: acquisition settings.
        rng: random generator (defocus and shot noise).
        ice_thickness: ``[y, x]`` ice thickness in Å (for the electrons lost in the ice); None = no loss.

    Returns:
        ``(images [tilt, y, x], angles in degrees, ctf [tilt, y, x // 2 + 1])`` with images in units of the
        mean intensity (0 = no contrast), protein dark.
    """
    from torch_ctf import calculate_ctf_2d

    angles = microscope.tilt_angles()
    n, (_, ny, nx) = len(angles), potential.shape
    phase = project(torch.from_numpy(np.ascontiguousarray(potential, dtype=np.float32)), angles, microscope.slab)
    phase *= interaction_constant(microscope.voltage) * voxel_size
    defocus = microscope.defocus + rng.uniform(-1, 1) * microscope.defocus_spread
    ctf = calculate_ctf_2d(
        defocus=torch.full((n,), float(defocus)),
        astigmatism=0.0,
        astigmatism_angle=0.0,
        voltage=microscope.voltage,
        spherical_aberration=microscope.spherical_aberration,
        amplitude_contrast=microscope.amplitude_contrast,
        phase_shift=0.0,
        pixel_size=voxel_size,
        image_shape=(ny, nx),
        rfft=True,
        fftshift=False,
    ).float()
    frequency = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.rfftfreq(nx)[None, :]) / voxel_size
    per_tilt = microscope.dose / n
    envelope = torch.from_numpy(exposure_filter(frequency, accumulated_dose(angles, microscope.dose), per_tilt))
    images = torch.fft.irfft2(torch.fft.rfft2(-2 * phase) * ctf * envelope, s=(ny, nx))  # I − 1 = −2σV ⊛ CTF

    thickness = np.zeros((ny, nx)) if ice_thickness is None else np.asarray(ice_thickness, dtype=float)
    for t, angle in enumerate(np.deg2rad(angles)):
        column = np.clip(np.round((np.arange(nx) - (nx - 1) / 2) / np.cos(angle) + (nx - 1) / 2), 0, nx - 1).astype(int)
        path = thickness[:, column] / np.cos(angle)  # ice crossed by the ray reaching each pixel (column at mid-slab)
        electrons = per_tilt * voxel_size**2 * microscope.dqe * np.exp(-path / microscope.inelastic_mean_free_path)
        images[t] += torch.from_numpy((rng.standard_normal((ny, nx)) / np.sqrt(electrons)).astype(np.float32))
    return torch.fft.irfft2(torch.fft.rfft2(images) * antialias(ny, nx), s=(ny, nx)), angles, ctf


def reconstruct(
    images: torch.Tensor, angles: np.ndarray, nz: int, ctf: torch.Tensor | None = None, slab: int = 64
) -> np.ndarray:
    """Weighted back-projection of tilt images ``[tilt, y, x]`` into a ``[z, y, x]`` float32 volume.

    Args:
        images: tilt images.
        angles: tilt angles in degrees.
        nz: number of Z sections.
        ctf: per-tilt rfft CTF (positive at low frequency); when given the images are phase-flipped first, which
            keeps the contrast of the first CTF lobe (protein stays dark).
        slab: Y rows back-projected together.
    """
    if ctf is not None:
        ny, nx = images.shape[-2:]
        images = torch.fft.irfft2(torch.fft.rfft2(images) * torch.sign(ctf), s=(ny, nx))
    return backproject(r_weight(images), angles, nz, slab).numpy()


def simulate_tomogram(
    potential: np.ndarray, voxel_size: float, microscope: Microscope, rng: np.random.Generator, ice_thickness=None
) -> np.ndarray:
    """Tilt series + reconstruction of a potential ``[z, y, x]`` (V); returns a normalised float32 tomogram, protein dark.

    Args:
        potential: potential above ice in volts.
        voxel_size: Å per voxel.
        microscope: acquisition settings.
        rng: random generator.
        ice_thickness: ``[y, x]`` ice thickness in Å, or None.
    """
    images, angles, ctf = tilt_series(potential, voxel_size, microscope, rng, ice_thickness)
    volume = reconstruct(images, angles, potential.shape[0], ctf if microscope.phase_flip else None, microscope.slab)
    volume -= volume.mean()
    return (volume / max(float(volume.std()), 1e-12)).astype(np.float32)
