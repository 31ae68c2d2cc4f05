"""Synthetic chest radiographs and chest CT volumes with known lesions (nodules), by integer seed.

Each case has a body outline, two lungs, mediastinum, bones, vessels, texture and noise; zero,
one or two nodules of varied size, contrast and shape (round, ellipsoidal, lobulated) inside the
lungs; and distractors that do not decide the label (a lead marker, a tube, ECG electrodes, a
calcification), always outside the lungs and drawn independently of the nodules. Axes follow
:mod:`medmdm.io`: a radiograph is ``(W, H)`` (columns, rows: the transpose of a DICOM pixel array),
a volume ``(X, Y, Z)`` with X towards the patient's left, Y towards the back and Z (slice index)
towards the head.

A seed fixes four independent random streams (anatomy, nodules, distractors, noise), so the same
seed drawn with ``lesions=0`` and ``lesions=1`` gives the same image outside the nodule's mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from medmdm.errors import InputError

RADIOGRAPH_FIELD_MM = 384.0  # width of the field of view along the longest axis
CT_FIELD_MM = (330.0, 240.0)  # in-plane field of view (longest axis), and craniocaudal extent
RADIOGRAPH_MAX = 4095.0  # 12-bit counts
CT_RANGE = (-1024.0, 3071.0)  # HU storable as 12 bits with intercept -1024
LESION_COUNT_PROBABILITIES = (0.5, 0.35, 0.15)  # 0, 1, 2 nodules when ``lesions`` is None
MAX_PLACEMENT_TRIES = 200


@dataclass
class Case:
    """A synthetic image with its ground truth.

    Attributes
    ----------
    image : numpy.ndarray
        Spatial only, float32, integer-valued, in modality units (CT: HU; radiograph: 12-bit counts).
    mask : numpy.ndarray
        uint8, same shape, union of the nodules (all zero when there is none).
    label : int
        1 when there is at least one nodule.
    lesions : int
        Number of nodules (0, 1 or 2); each is one connected component of ``mask``.
    spacing : tuple of float
        mm per axis, in the axis order of ``image``.
    lungs : numpy.ndarray
        uint8, same shape, the lung fields (the nodules lie inside them).
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    lesions: int
    spacing: tuple[float, ...]
    lungs: np.ndarray


def radiograph_case(seed: int, *, lesions: int | None = None, size: tuple[int, int] = (256, 256)) -> Case:
    """A posteroanterior chest radiograph, MONOCHROME2 12-bit counts (bright = dense).

    Parameters
    ----------
    seed : int
        Non-negative; the same seed gives the same case.
    lesions : int, optional
        Number of nodules, 0, 1 or 2; drawn from the seed when None (half negatives).
    size : tuple of int
        ``(W, H)``: columns, rows. Pixels are square, 384 mm across the longest axis.

    Returns
    -------
    Case
    """
    count = _lesion_count(seed, lesions)
    size = _check_size(size, 2)
    anatomy, lesion_rng, distractor_rng, noise_rng = _streams(seed)
    spacing = RADIOGRAPH_FIELD_MM / max(size)
    u, v = _normalised_axes(size, spacing, (RADIOGRAPH_FIELD_MM / 2,) * 2)  # v grows towards the feet

    body_rho = (
        (np.abs(u - anatomy.uniform(-0.03, 0.03)) / anatomy.uniform(0.78, 0.9)) ** 4
        + (np.abs(v - 0.2) / 1.12) ** 4
    ) ** 0.25
    neck = (np.abs(u) < 0.2) & (v < -0.7)
    body = (body_rho < 1) | neck
    thickness = np.maximum(np.clip(1 - body_rho**4, 0, 1) ** 0.35, 0.8 * neck)
    image = 120 + anatomy.uniform(1500, 1800) * thickness

    heart = _ellipse(u, v, (anatomy.uniform(0.08, 0.16), anatomy.uniform(0.22, 0.3)), (0.29, 0.23)) < 1
    lungs = np.zeros(size, dtype=bool)
    for side in (-1, 1):
        cu, cv = side * anatomy.uniform(0.38, 0.43), anatomy.uniform(-0.14, -0.06)
        half_width, half_height = anatomy.uniform(0.26, 0.31), anatomy.uniform(0.58, 0.66)
        widening = 0.75 + 0.35 * (v - cv) / half_height  # narrow apex, wide base
        across = (u - cu) / (half_width * np.maximum(widening, 0.2))
        dome = cv + half_height * 0.92 - 0.15 * (1 - np.clip(across, -1, 1) ** 2) - 0.04 * (side < 0)
        lungs |= (across**2 + ((v - cv) / half_height) ** 2 < 1) & (v < dome)
    lungs &= body & ~heart
    soft_lungs = _blur(lungs.astype(np.float32), 3.0 / spacing)
    image += -anatomy.uniform(1000, 1250) * soft_lungs + 250 * _blur(heart.astype(np.float32), 4.5 / spacing)

    spine = np.clip(1 - np.abs(u) / 0.08, 0, 1) ** 0.5 * (v > -0.95)
    image += spine * (320 + 80 * np.cos(2 * np.pi * 9 * v))
    for side in (-1, 1):
        for i in range(10):
            top = -0.8 + 0.135 * i + anatomy.uniform(-0.02, 0.02)
            half_width, half_height = anatomy.uniform(0.6, 0.75), anatomy.uniform(0.3, 0.38)
            rho = _ellipse(u, v, (side * 0.05, top + half_height), (half_width, half_height))
            band = np.clip(1 - ((rho - 1) / 0.055) ** 2, 0, 1) * (side * u > 0.05) * (v < top + half_height)
            image += anatomy.uniform(220, 320) * band * body
        clavicle = np.abs(v - (-0.74 - 0.12 * np.abs(u))) < 0.025
        image += 300 * (clavicle & (side * u > 0.08) & (side * u < 0.62))

    vessels = _vessel_tree(
        anatomy, lungs, [(side * 0.16, -0.05) for side in (-1, 1)], (u, v), branches=9, sigma=1.0
    )
    image += 200 * vessels * soft_lungs
    image += 60 * _smooth_noise(anatomy, size, 24) * soft_lungs + 35 * _smooth_noise(anatomy, size, 6) * body

    profiles, mask = _place_lesions(lesion_rng, count, lungs, (spacing, spacing), radius_mm=(9.0, 21.0))
    for profile in profiles:  # projected thickness of the nodule
        image += lesion_rng.uniform(450, 850) * np.sqrt(profile)

    image = np.maximum(
        image, _radiograph_distractors(distractor_rng, (u, v), body, soft_lungs, spacing) * ~lungs
    )
    image += noise_rng.normal(0, 18, size)
    image = np.clip(np.round(image), 0, RADIOGRAPH_MAX)
    return _case(image, mask, count, (spacing, spacing), lungs)


def ct_case(seed: int, *, lesions: int | None = None, size: tuple[int, int, int] = (96, 96, 48)) -> Case:
    """An axial chest CT volume in HU, from the diaphragm to the lung apices.

    Parameters
    ----------
    seed : int
        Non-negative; the same seed gives the same case.
    lesions : int, optional
        Number of nodules, 0, 1 or 2; drawn from the seed when None (half negatives).
    size : tuple of int
        ``(X, Y, Z)``; in-plane pixels are square, 330 mm across the longest in-plane axis; the
        slices cover 240 mm.

    Returns
    -------
    Case
    """
    count = _lesion_count(seed, lesions)
    size = _check_size(size, 3)
    anatomy, lesion_rng, distractor_rng, noise_rng = _streams(seed)
    pixel, step = CT_FIELD_MM[0] / max(size[:2]), CT_FIELD_MM[1] / size[2]
    spacing = (pixel, pixel, step)
    u, w, z = _normalised_axes(size, spacing, (CT_FIELD_MM[0] / 2, CT_FIELD_MM[0] / 2, CT_FIELD_MM[1] / 2))
    t = (z + 1) / 2  # 0 at the lowest slice, 1 at the top

    centre_w = anatomy.uniform(0.0, 0.06)
    half_u, half_w = anatomy.uniform(0.78, 0.88) * (1 - 0.08 * t), anatomy.uniform(0.52, 0.6)
    body_rho = _ellipse(u, w, (0, centre_w), (half_u, half_w))
    body = body_rho < 1
    fat = body & (body_rho > 1 - anatomy.uniform(0.06, 0.12))
    image = np.where(body, np.where(fat, -100.0, 40.0), -1000.0)
    table = (np.abs(w - centre_w - half_w - 0.09) < 0.025) & (np.abs(u) < 0.75)
    image = np.where(table, 250.0, image)

    spine_w = centre_w + 0.7 * half_w
    heart_plane = _ellipse(u, w, (anatomy.uniform(0.08, 0.16), anatomy.uniform(-0.22, -0.14)), (0.32, 0.28))
    heart_t = anatomy.uniform(0.22, 0.3)
    heart = heart_plane**2 + ((t - heart_t) / 0.22) ** 2 < 1
    apex = anatomy.uniform(0.9, 0.97)
    lungs = np.zeros(size, dtype=bool)
    for side in (-1, 1):
        taper = np.where(t < 0.6, 1.0, np.sqrt(np.clip((apex - t) / (apex - 0.6), 0, 1)))
        centre = (side * anatomy.uniform(0.36, 0.44), anatomy.uniform(-0.02, 0.06))
        rho = _ellipse(u, w, centre, (anatomy.uniform(0.24, 0.3), anatomy.uniform(0.34, 0.42)))
        base = anatomy.uniform(0.02, 0.08) + 0.04 * (side < 0) + 0.22 * np.clip(1 - (rho / 0.8) ** 2, 0, 1)
        lungs |= (rho < taper) & (t > base)
    lungs &= body & ~heart & (body_rho < 0.85)
    lungs &= ~((heart_plane < 1) & (t < heart_t))  # the heart rests on the diaphragm
    _join_to_widest_slice(lungs)
    lung_hu = -860 + 25 * _smooth_noise(anatomy, size, 12) + 50 * np.clip(w, -1, 1)
    vessels = _vessel_tree(
        anatomy,
        lungs,
        [(side * 0.2, 0.0, -0.05 + 0.1 * side) for side in (-1, 1)],
        (u, w, z),
        branches=14,
        sigma=0.8,
    )
    image = np.where(lungs, lung_hu + 550 * vessels, image)
    image = np.where(heart, 40 + 10 * _smooth_noise(anatomy, size, 4), image)

    aorta = _ellipse(u, w, (0.12, spine_w - 0.2), (0.07, 0.07)) < 1
    image = np.where(aorta & ~lungs & (t < 0.8), anatomy.uniform(40, 250), image)
    trachea = _ellipse(u, w, (0.0, -0.02), (0.06, 0.06))
    image = np.where((t > 0.65) & (trachea < 1), np.where(trachea < 0.7, -990, 60), image)
    vertebra = _ellipse(u, w, (0.0, spine_w), (0.1, 0.09))
    disc = np.cos(2 * np.pi * (t * 8 + anatomy.uniform(0, 1))) > 0.8
    image = np.where(vertebra < 1, np.where(vertebra > 0.8, 700, np.where(disc, 90, 250)), image)
    canal = _ellipse(u, w, (0.0, spine_w + 0.17), (0.08, 0.07))
    image = np.where(canal < 1, np.where(canal > 0.6, 550, 20), image)
    angle = np.arctan2(w - centre_w, u)
    ribs = (body_rho > 0.8) & (body_rho < 0.88) & (np.cos(2 * np.pi * (t * 9 + 0.3 * np.sin(angle))) > 0.55)
    image = np.where(ribs & (np.abs(u) > 0.12), 600 + 150 * np.cos(angle), image)
    sternum = (np.abs(u) < 0.07) & (np.abs(w - (centre_w - 0.88 * half_w)) < 0.05) & (t > 0.3)
    image = np.where(sternum, 450, image)
    image += 12 * _smooth_noise(anatomy, size, 8) * ~lungs

    profiles, mask = _place_lesions(lesion_rng, count, lungs, spacing, radius_mm=(12.0, 21.0))
    for profile in profiles:
        solid = lesion_rng.uniform() < 0.85
        target = lesion_rng.uniform(-120, 60) if solid else lesion_rng.uniform(-450, -250)
        image += (target - image) * np.clip(profile / 0.35, 0, 1)

    distractors = _ct_distractors(distractor_rng, (u, w, t), body, lungs, body_rho, spacing)
    image = np.where(np.isnan(distractors) | lungs, image, distractors)
    image += noise_rng.normal(0, noise_rng.uniform(12, 20), size)
    image = np.clip(np.round(image), *CT_RANGE)
    return _case(image, mask, count, spacing, lungs)


def _radiograph_distractors(
    rng: np.random.Generator,
    axes: tuple[np.ndarray, np.ndarray],
    body: np.ndarray,
    soft_lungs: np.ndarray,
    spacing: float,
) -> np.ndarray:
    """Counts of the objects outside the lungs (0 elsewhere): marker, tube, electrodes, calcification."""
    u, v = axes
    layer = np.zeros(body.shape)
    if rng.uniform() < 0.6:  # lead side marker in an upper corner: a plate with a letter-like notch
        cu, cv = rng.choice([-1, 1]) * rng.uniform(0.86, 0.92), rng.uniform(-0.92, -0.82)
        plate = (np.abs(u - cu) < 0.04) & (np.abs(v - cv) < 0.05)
        notch = (u - cu > -0.015) & (v - cv < 0.025)
        layer = np.maximum(layer, rng.uniform(3600, 4000) * (plate & ~notch))
    if rng.uniform() < 0.4:  # tube down the midline, ending in the upper abdomen
        path = rng.uniform(-0.025, 0.025) + 0.02 * np.sin(3 * v + rng.uniform(0, 6))
        tube = (np.abs(u - path) < 1.2 * spacing / RADIOGRAPH_FIELD_MM * 2) & (v < rng.uniform(0.1, 0.6))
        layer = np.maximum(layer, 2600 * tube)
    if rng.uniform() < 0.5:  # ECG electrodes on the shoulders or the abdomen
        for _ in range(rng.integers(1, 4)):
            cu, cv = rng.uniform(-0.7, 0.7), rng.choice([rng.uniform(-0.95, -0.8), rng.uniform(0.8, 0.95)])
            rho = _ellipse(u, v, (cu, cv), (0.035, 0.035))
            layer = np.maximum(layer, 3000 * ((rho < 1) & (rho > 0.6)) + 2200 * (rho < 0.25))
    if rng.uniform() < 0.5:  # calcification in the mediastinum, neck or abdomen
        outside = body & (soft_lungs < 0.01) & (np.abs(u) < 0.6)
        centre = _random_point(rng, outside, (u, v))
        radius = rng.uniform(0.012, 0.022)
        layer = np.maximum(layer, rng.uniform(2600, 3200) * (_ellipse(u, v, centre, (radius, radius)) < 1))
    return layer


def _ct_distractors(
    rng: np.random.Generator,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    body: np.ndarray,
    lungs: np.ndarray,
    body_rho: np.ndarray,
    spacing: tuple[float, ...],
) -> np.ndarray:
    """HU of the objects outside the lungs (NaN elsewhere): tube, calcified node, ECG electrodes."""
    u, w, t = axes
    layer = np.full(body.shape, np.nan)
    pixel = spacing[0] / CT_FIELD_MM[0] * 2
    if rng.uniform() < 0.4:  # nasogastric tube in the oesophagus, along every slice
        rho = _ellipse(u, w, (rng.uniform(-0.06, 0.0), rng.uniform(0.12, 0.18)), (2.2 * pixel, 2.2 * pixel))
        layer = np.where((rho < 1) & body, np.where(rho < 0.5, -950, 350), layer)
    if rng.uniform() < 0.5:  # calcified lymph node in the mediastinum
        outside = body & (_blur(lungs.astype(np.float32), 2.0) < 0.01) & (body_rho < 0.6)
        centre = _random_point(rng, outside, (u, w, t))
        radius = rng.uniform(1.5, 2.5) * pixel
        node = _ellipse(u, w, centre[:2], (radius, radius)) ** 2 + ((t - centre[2]) / (radius * 0.75)) ** 2
        layer = np.where(node < 1, rng.uniform(300, 900), layer)
    if rng.uniform() < 0.5:  # ECG electrodes on the front of the chest
        skin = (body_rho > 1.0) & (body_rho < 1.08) & (w < 0)
        angle = np.arctan2(w, u)
        for _ in range(rng.integers(1, 4)):
            electrode = skin & (np.abs(angle - rng.uniform(-2.6, -0.5)) < 0.07)
            layer = np.where(electrode & (np.abs(t - rng.uniform(0.2, 0.9)) < 0.025), 2000, layer)
    return layer


@dataclass(frozen=True)
class _Nodule:
    """A randomly rotated ellipsoid (ellipse in 2D) with up to four lobes, sizes in mm."""

    radii: np.ndarray
    rotation: np.ndarray
    lobes: np.ndarray  # (k, dims) unit directions of the lobes
    amplitudes: np.ndarray  # (k,) how far each lobe bulges, relative to the radius

    @classmethod
    def draw(cls, rng: np.random.Generator, dims: int, radius_mm: tuple[float, float]) -> _Nodule:
        radius = rng.uniform(*radius_mm)
        radii = radius * rng.uniform(0.7, 1.3, dims) if rng.uniform() < 0.7 else np.full(dims, radius)
        rotation, _ = np.linalg.qr(rng.normal(size=(dims, dims)))
        lobes = rng.normal(size=(rng.integers(0, 5), dims))
        lobes /= np.linalg.norm(lobes, axis=1, keepdims=True)
        return cls(radii, rotation, lobes, rng.uniform(0.1, 0.35, len(lobes)))

    @property
    def extent(self) -> float:
        """Largest distance in mm from the centre to the nodule's edge."""
        return float(self.radii.max() * (1 + self.amplitudes.sum()))

    def shrunk(self, factor: float) -> _Nodule:
        return replace(self, radii=self.radii * factor)

    def radius_map(self, offsets: np.ndarray) -> np.ndarray:
        """Normalised radius (< 1 inside) at ``(..., dims)`` offsets in mm from the centre."""
        local = offsets @ self.rotation
        direction = local / np.maximum(np.linalg.norm(local, axis=-1), 1e-6)[..., None]
        bulge = 1 + (np.clip(direction @ self.lobes.T, 0, None) ** 3 * self.amplitudes).sum(axis=-1)
        return np.linalg.norm(local / self.radii, axis=-1) / bulge


def _place_lesions(
    rng: np.random.Generator,
    count: int,
    lungs: np.ndarray,
    spacing: Sequence[float],
    radius_mm: tuple[float, float],
) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` separate nodules inside ``lungs``: their profiles (1 at the centre, 0 outside) and mask.

    Nodules keep two voxels apart, so each is one connected component of the mask. A nodule that
    finds no room is shrunk by 3% every ten tries.
    """
    step = np.asarray(spacing, dtype=float)
    candidates = np.argwhere(lungs)
    placed: list[tuple[np.ndarray, float]] = []
    profiles, mask = [], np.zeros(lungs.shape, dtype=bool)
    for _ in range(count):
        nodule = _Nodule.draw(rng, lungs.ndim, radius_mm)
        for attempt in range(MAX_PLACEMENT_TRIES):
            if attempt and attempt % 10 == 0:
                nodule = nodule.shrunk(0.97)
            centre = candidates[rng.integers(len(candidates))]
            gaps = [np.linalg.norm((centre - c) * step) - nodule.extent - e for c, e in placed]
            half = np.ceil(nodule.extent / step).astype(int) + 1
            low, high = centre - half, centre + half + 1
            if min(gaps, default=np.inf) < 2 * step.max() or (low < 0).any() or (high > lungs.shape).any():
                continue
            box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
            offsets = np.stack(
                np.meshgrid(
                    *[np.arange(-h, h + 1) * s for h, s in zip(half, step, strict=True)], indexing="ij"
                ),
                axis=-1,
            )
            rho = nodule.radius_map(offsets)
            if not lungs[box][rho < 1].all():
                continue
            profile = np.zeros(lungs.shape)
            profile[box] = np.clip(1 - rho, 0, 1)
            profiles.append(profile)
            mask[box] |= rho < 1
            placed.append((centre, nodule.extent))
            break
        else:
            raise RuntimeError(f"no room for a {nodule.extent:.1f} mm nodule in the lungs")
    return profiles, mask


def _vessel_tree(
    rng: np.random.Generator,
    lungs: np.ndarray,
    hila: Sequence[Sequence[float]],
    axes: Sequence[np.ndarray],
    branches: int,
    sigma: float,
) -> np.ndarray:
    """Vessel density in [0, 1]: tapering random walks from near each hilum, blurred by ``sigma`` voxels,
    kept inside the lungs."""
    shape = np.asarray(lungs.shape)
    first = np.array([a.flatten()[0] for a in axes])
    step = np.array([a.flatten()[1] - a.flatten()[0] for a in axes])
    steps = int(0.35 * shape.max())
    density = np.zeros(lungs.size, dtype=np.float32)
    for hilum in hila:
        start = np.abs(rng.normal(size=(branches, 1, len(shape)))) * np.sign(hilum[0])  # outwards
        start[..., 1:] *= rng.choice([-1, 1], size=(branches, 1, len(shape) - 1))
        heading = start + np.cumsum(rng.normal(0, 0.25, (branches, steps, len(shape))), axis=1)
        heading /= np.linalg.norm(heading, axis=-1, keepdims=True)
        origins = (np.asarray(hilum) - first) / step + rng.normal(
            0, 0.02 * shape.max(), (branches, 1, len(shape))
        )
        points = origins + np.cumsum(heading, axis=1)
        lengths = rng.uniform(0.4, 1.0, (branches, 1)) * steps
        weight = np.clip(1 - np.arange(steps) / lengths, 0, None)
        index = np.clip(np.round(points).astype(int), 0, shape - 1)
        np.add.at(density, np.ravel_multi_index(tuple(np.moveaxis(index, -1, 0)), shape), weight)
    blurred = _blur(density.reshape(lungs.shape), sigma)
    peak = 1 / (np.sqrt(2 * np.pi) * sigma) ** (len(shape) - 1)  # blurred line of unit density
    return np.clip(blurred / peak, 0, 1) * lungs


def _join_to_widest_slice(lungs: np.ndarray) -> None:
    """Keep, in place, the voxels joined straight up or down to the widest slice: no loose fragments."""
    widest = int(lungs.sum(axis=(0, 1)).argmax())
    for k in [*range(widest - 1, -1, -1), *range(widest + 1, lungs.shape[2])]:
        lungs[:, :, k] &= lungs[:, :, k + 1 if k < widest else k - 1]


def _lesion_count(seed: int, lesions: int | None) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if lesions is None:
        return int(np.random.default_rng([int(seed), 4]).choice(3, p=LESION_COUNT_PROBABILITIES))
    if lesions not in (0, 1, 2):
        raise InputError(f"lesions must be 0, 1, 2 or None, got {lesions!r}")
    return int(lesions)


def _check_size(size: Sequence[int], dims: int) -> tuple[int, ...]:
    size = tuple(int(s) for s in size)
    if len(size) != dims or min(size) < 16:
        raise InputError(f"size must be {dims} integers of at least 16, got {size}")
    return size


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent generators for anatomy, nodules, distractors and noise."""
    return [np.random.default_rng([int(seed), stream]) for stream in range(4)]


def _normalised_axes(
    shape: Sequence[int], spacing: float | Sequence[float], half_field: Sequence[float]
) -> list[np.ndarray]:
    """Voxel-centre coordinates of each axis, 0 at the centre and 1 at ``half_field`` mm, as open grids."""
    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (len(shape),))
    axes = []
    for axis, (n, s, h) in enumerate(zip(shape, spacing, half_field, strict=True)):
        values = ((np.arange(n) + 0.5 - n / 2) * s / h).astype(np.float32)
        axes.append(values.reshape([-1 if i == axis else 1 for i in range(len(shape))]))
    return axes


def _ellipse(a: np.ndarray, b: np.ndarray, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Normalised elliptical radius in the plane of two axes (< 1 inside)."""
    return np.sqrt(((a - centre[0]) / radii[0]) ** 2 + ((b - centre[1]) / radii[1]) ** 2)


def _random_point(rng: np.random.Generator, region: np.ndarray, axes: Sequence[np.ndarray]) -> list[float]:
    """Normalised coordinates of a random voxel of ``region``."""
    index = np.argwhere(region)[rng.integers(int(region.sum()))]
    return [float(a.flatten()[i]) for a, i in zip(axes, index, strict=True)]


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: int) -> np.ndarray:
    """Noise of unit scale varying over about ``cells`` blobs along the longest axis.

    Coarse white noise, interpolated along each axis in turn with smoothstep weights.
    """
    noise = rng.standard_normal([max(2, round(cells * n / max(shape))) + 1 for n in shape]).astype(np.float32)
    for axis, n in enumerate(shape):
        position = (np.arange(n) + 0.5) / n * (noise.shape[axis] - 1)
        lower = np.minimum(position.astype(int), noise.shape[axis] - 2)
        fraction = (position - lower).astype(np.float32)
        fraction = (fraction * fraction * (3 - 2 * fraction)).reshape(
            [-1 if a == axis else 1 for a in range(len(shape))]
        )
        noise = noise.take(lower, axis=axis) * (1 - fraction) + noise.take(lower + 1, axis=axis) * fraction
    return noise


def _blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with ``sigma`` in voxels, edges repeated."""
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    kernel /= kernel.sum()
    out = array.astype(np.float32)
    for axis, n in enumerate(out.shape):
        padded = np.pad(
            out, [(radius, radius) if a == axis else (0, 0) for a in range(out.ndim)], mode="edge"
        )
        window = (slice(None),) * axis
        out = sum(w * padded[(*window, slice(i, i + n))] for i, w in enumerate(kernel))
    return out


def _case(
    image: np.ndarray, mask: np.ndarray, count: int, spacing: tuple[float, ...], lungs: np.ndarray
) -> Case:
    return Case(
        image=image.astype(np.float32),
        mask=mask.astype(np.uint8),
        label=int(count > 0),
        lesions=count,
        spacing=tuple(round(float(s), 6) for s in spacing),  # exact as a DICOM decimal string
        lungs=lungs.astype(np.uint8),
    )
