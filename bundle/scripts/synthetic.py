"""Synthetic short-axis cine cardiac MRI (ED and ES stacks) with ACDC-style labels.

Why: the method is about calibration under a domain shift, which needs data with a known shift and
borders that are genuinely ambiguous, and the project must run and be tested without the licensed
ACDC / M&Ms downloads. This module draws a heart per subject (LV blood pool, myocardial ring that
thickens at end-systole, RV crescent that vanishes towards the apex, papillary muscles and
trabeculae, atria above the base) in a thorax (chest wall, fat, lungs, liver, aorta, spine), and
images it like a scanner: slab partial volume, point-spread blur, smooth coil shading, Rician noise
from a truncated k-space, arbitrary intensity scale. Reference labels are drawn by a simulated
annotator, a small smooth perturbation of the true boundaries, so no network reaches Dice 1.0.

Domains: ``in_domain`` is a bSSFP-like style used for training, validation and an in-domain test split;
``vendor_b`` and ``vendor_c`` are shifted "other vendor" styles (tissue contrast and gamma, noise,
acquired resolution, pixel spacing, shading strength and intensity scale differ) where the heart stays
recognisable. :class:`Difficulty` holds the knobs that set how hard the task is.

Labels: 0 background, 1 RV, 2 MYO, 3 LV (papillary muscles and trabeculae belong to the cavity, as in ACDC).
Arrays are (H, W, S): rows run anterior to posterior, columns patient-right to patient-left (the
radiological short-axis view) and slices base to apex; the affine is an oblique RAS affine as NIfTI stores it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage, stats

from scripts.datalist import PHASES, datalist_entry, write_datalist

_BSSFP = {
    "air": 0.0,
    "lung": 0.05,
    "blood": 1.0,
    "myocardium": 0.21,
    "fat": 0.8,
    "muscle": 0.24,
    "mediastinum": 0.3,
    "liver": 0.32,
    "marrow": 0.55,
    "bone": 0.06,
    "vessel": 0.45,
}


@dataclasses.dataclass(frozen=True)
class DomainStyle:
    """How one scanner renders the same anatomy.

    Attributes:
        tissue: relative signal of each tissue before the contrast curve (blood about 1).
        gamma: exponent of the contrast curve applied to the tissue signal (1 = linear).
        noise: standard deviation of the complex Gaussian noise, relative to blood signal.
        kspace_fraction: fraction of k-space acquired along the phase- and frequency-encoding axes;
            below 1 the image is a coarser acquisition zero-filled to the matrix (blur and ringing).
        bias: standard deviation of the smooth log coil-sensitivity field.
        spacing_mm: range of the reconstructed in-plane pixel spacing.
        signal_range: range of the stored intensity of the blood pool (the arbitrary scanner scale).
    """

    tissue: Mapping[str, float]
    gamma: float
    noise: float
    kspace_fraction: tuple[float, float]
    bias: float
    spacing_mm: tuple[float, float]
    signal_range: tuple[float, float]


DOMAINS: dict[str, DomainStyle] = {
    "in_domain": DomainStyle(
        tissue=_BSSFP, gamma=1.0, noise=0.03, kspace_fraction=(0.85, 1.0), bias=0.1, spacing_mm=(1.2, 1.8),
        signal_range=(250.0, 1000.0),
    ),
    "vendor_b": DomainStyle(
        tissue={**_BSSFP, "blood": 0.85, "myocardium": 0.26, "fat": 0.95, "liver": 0.42, "mediastinum": 0.4,
                "muscle": 0.3},
        gamma=0.8, noise=0.06, kspace_fraction=(0.55, 0.8), bias=0.2, spacing_mm=(1.1, 1.4),
        signal_range=(1500.0, 4000.0),
    ),
    "vendor_c": DomainStyle(
        tissue={**_BSSFP, "blood": 0.9, "myocardium": 0.17, "fat": 0.5, "liver": 0.2, "mediastinum": 0.19,
                "muscle": 0.2, "marrow": 0.4},
        gamma=1.3, noise=0.055, kspace_fraction=(0.7, 0.75), bias=0.3, spacing_mm=(1.6, 1.9),
        signal_range=(80.0, 300.0),
    ),
}


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """Knobs that set how hard segmentation of the synthetic data is (defaults aim at Dice 0.90-0.95 in-domain).

    Attributes:
        annotator_jitter_px: RMS distance (pixels) between the drawn reference contour and the true border.
        epicardial_fat: fraction of the epicardium lined by bright fat; the rest borders tissue of
            nearly myocardial signal, the ambiguous epicardial border of real images.
        trabeculation: density (0-1) of dark trabeculae along the endocardium, blurring the endocardial border.
        papillary: draw papillary muscles (dark spots in the LV cavity, labelled as cavity).
        through_plane_samples: sub-slices averaged over the slab thickness (partial volume at base and apex).
        blur_px: sigma (pixels) of an extra in-plane Gaussian point-spread function.
        noise_scale: factor on the domain's noise level.
        bias_scale: factor on the domain's shading strength.
    """

    annotator_jitter_px: float = 0.6
    epicardial_fat: float = 0.45
    trabeculation: float = 0.5
    papillary: bool = True
    through_plane_samples: int = 3
    blur_px: float = 0.5
    noise_scale: float = 1.0
    bias_scale: float = 1.0


@dataclasses.dataclass
class SyntheticSubject:
    """One synthetic subject: an ED and an ES stack sharing geometry.

    ``images[phase]`` is int16 (H, W, S), ``labels[phase]`` uint8 (H, W, S), ``affine`` the 4x4 RAS
    voxel-to-world matrix of both, ``group`` the simulated pathology (NOR, DCM, HCM, MINF, ARV).
    """

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    affine: np.ndarray
    domain: str
    group: str

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (H, W, S)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


_GROUPS = {  # cavity radius (mm), wall thickness (mm), ES/ED cavity radius ratio, RV scale, RV ES ratio
    "NOR": ((21, 26), (7, 9.5), (0.6, 0.7), (1.0, 1.1), (0.7, 0.8)),
    "DCM": ((28, 34), (6, 8), (0.85, 0.93), (1.0, 1.15), (0.8, 0.9)),
    "HCM": ((18, 22), (12, 16), (0.45, 0.58), (0.9, 1.0), (0.7, 0.8)),
    "MINF": ((25, 30), (6.5, 8.5), (0.78, 0.88), (1.0, 1.1), (0.75, 0.85)),
    "ARV": ((20, 25), (7, 9), (0.62, 0.72), (1.3, 1.5), (0.85, 0.93)),
}


@dataclasses.dataclass
class _Anatomy:
    """Random parameters of one subject, shared by its ED and ES frames (lengths in mm, angles in rad)."""

    group: str
    spacing: float
    matrix: int
    n_slices: int
    slice_spacing: float
    thickness: float
    z0: float
    length: float
    apex_thickness: float
    shortening: float
    cavity_radius: float
    wall: float
    es_ratio: float
    rv_width: float
    rv_span: float
    rv_coefs: np.ndarray
    rv_length: float
    rv_es_ratio: float
    rv_angle: float
    pose_angle: float
    center: np.ndarray
    tilt: np.ndarray
    ellipticity: float
    ellipse_angle: float
    shape_coefs: np.ndarray
    fat_coefs: np.ndarray
    fat_max: float
    papillary_angles: np.ndarray
    papillary_radius: np.ndarray
    chest: np.ndarray
    ribs: np.ndarray
    lung_coefs: np.ndarray
    liver_offset: float
    affine: np.ndarray


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    return float(rng.uniform(*bounds))


def _sample_anatomy(rng: np.random.Generator, style: DomainStyle, matrix: int) -> _Anatomy:
    group = str(rng.choice(list(_GROUPS)))
    cavity, wall, es_ratio, rv_scale, rv_es = (_uniform(rng, b) for b in _GROUPS[group])
    length = _uniform(rng, (78, 95)) * (1.12 if group == "DCM" else 1.0)
    n_slices = int(rng.integers(8, 13))
    slice_spacing = float(np.clip(length / (n_slices - 1 + rng.uniform(-0.6, 0.8)), 5.0, 10.0))
    spacing = _uniform(rng, style.spacing_mm)
    rv_angle = np.arctan2(-0.85, -0.5) + rng.normal(0, 0.15)  # anterior and patient-right of the LV
    outward = 0.35 * (cavity + wall) + 12.0  # shift the LV so that LV + RV sit in the field of view
    center = np.array([rng.normal(0, 6), outward * 0.5 + rng.normal(0, 6)])
    return _Anatomy(
        group=group,
        spacing=spacing,
        matrix=matrix,
        n_slices=n_slices,
        slice_spacing=slice_spacing,
        thickness=min(slice_spacing, _uniform(rng, (5.5, 8.0))),
        z0=_uniform(rng, (-2.0, 5.0)),
        length=length,
        apex_thickness=_uniform(rng, (0.7, 1.0)) * min(wall, 10.0),
        shortening=length * _uniform(rng, (0.04, 0.08) if group in ("DCM", "MINF") else (0.09, 0.15)),
        cavity_radius=cavity,
        wall=wall,
        es_ratio=es_ratio,
        rv_width=_uniform(rng, (20, 28)) * rv_scale,
        rv_span=float(np.deg2rad(rng.uniform(80, 105))),
        rv_coefs=rng.normal(0, 0.08, (3, 2)),
        rv_length=length * _uniform(rng, (0.72, 0.86)),
        rv_es_ratio=rv_es,
        rv_angle=float(rv_angle),
        pose_angle=float(np.deg2rad(rng.uniform(-25, 25))),
        center=center,
        tilt=rng.normal(0, 0.08, 2),
        ellipticity=_uniform(rng, (0.0, 0.08)),
        ellipse_angle=_uniform(rng, (0, np.pi)),
        shape_coefs=rng.normal(0, 0.025, (4, 2)) / np.arange(1, 5)[:, None] ** 0.5,
        fat_coefs=rng.normal(0, 1, (3, 2)),
        fat_max=_uniform(rng, (3.0, 7.0)),
        papillary_angles=rv_angle + np.pi + np.array([-0.9, 0.9]) + rng.normal(0, 0.2, 2),
        papillary_radius=rng.uniform(2.5, 4.5, 2),
        chest=np.array([-(cavity + wall) - rng.uniform(30, 50), rng.uniform(6, 18), rng.uniform(10, 16)]),
        lung_coefs=rng.normal(0, 0.06, (4, 2)),
        ribs=np.sort(rng.uniform(-90, 90, 3)) + np.array([-30.0, 0.0, 30.0]),
        liver_offset=rng.normal(0, 10),
        affine=_oblique_affine(rng, spacing, slice_spacing, matrix),
    )


def _oblique_affine(rng: np.random.Generator, spacing: float, slice_spacing: float, matrix: int) -> np.ndarray:
    """A double-oblique short-axis RAS affine: slices step from base to apex (left, anterior, inferior)."""
    normal = np.array([-0.55, 0.45, -0.7]) + rng.normal(0, 0.12, 3)
    normal /= np.linalg.norm(normal)
    rows = np.array([0.0, -1.0, 0.0])  # rows run towards posterior
    rows -= rows.dot(normal) * normal
    rows /= np.linalg.norm(rows)
    angle = rng.normal(0, 0.15)  # small in-plane rotation about the long axis
    rows = rows * np.cos(angle) + np.cross(normal, rows) * np.sin(angle)
    cols = np.cross(normal, rows)  # rows x cols = normal: a right-handed frame
    affine = np.eye(4)
    affine[:3, :3] = np.stack([rows * spacing, cols * spacing, normal * slice_spacing], axis=1)
    centre = np.array([-20.0, 10.0, 30.0]) + rng.normal(0, 15, 3)
    affine[:3, 3] = centre - affine[:3, :2] @ np.full(2, (matrix - 1) / 2)
    return affine


def _fourier(cos: np.ndarray, sin: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """sum_k coefs[k, 0] cos((k+1) t) + coefs[k, 1] sin((k+1) t) from cos t and sin t (angle-addition recursion)."""
    out = np.zeros(np.broadcast_shapes(cos.shape, coefs.shape[2:]), dtype=np.float32)
    ck, sk = cos, sin
    for k in range(coefs.shape[0]):
        out += coefs[k, 0] * ck + coefs[k, 1] * sk
        if k + 1 < coefs.shape[0]:
            ck, sk = ck * cos - sk * sin, sk * cos + ck * sin
    return out


def _ellipse_sdf(
    a: np.ndarray, b: np.ndarray, center: tuple, axes: tuple, angle: float | np.ndarray = 0.0,
    coefs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Approximate signed distance (mm, negative inside) to a deformed ellipse, with cos/sin of the polar angle.

    The distance is measured along the ray from the centre, exact on a circle and close on the mildly
    eccentric shapes drawn here; ``coefs`` deform the radius by a Fourier series of the angle.
    """
    u, v = a - center[0], b - center[1]
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = u * ca + v * sa, v * ca - u * sa
    rho = np.hypot(u, v) + 1e-6
    cos, sin = u / rho, v / rho
    radius = 1.0 / np.sqrt((cos / axes[0]) ** 2 + (sin / axes[1]) ** 2)
    if coefs is not None:
        radius = radius * (1.0 + _fourier(cos, sin, coefs))
    return rho - radius, cos, sin


def _profile(zeta: np.ndarray, length: float, peak: float) -> np.ndarray:
    """Ellipsoidal radius profile along the long axis: 1 at ``peak``, 0 at ``length`` and above the base."""
    prof = np.sqrt(np.clip(1.0 - ((zeta - peak) / (length - peak)) ** 2, 0.0, 1.0))
    return np.where(zeta >= 0, prof, 0.0)


def _heart(anat: _Anatomy, phase: str, z: np.ndarray) -> dict[str, np.ndarray]:
    """Per-plane heart geometry at slab positions ``z`` (mm below the ED base), shaped (P, 1, 1)."""
    length = anat.length
    zeta = z if phase == "ED" else (z - anat.shortening) * length / (length - anat.shortening)
    peak = 0.12 * length
    r_endo = anat.cavity_radius * _profile(zeta, length - anat.apex_thickness, peak)
    area = ((anat.cavity_radius + anat.wall) ** 2 - anat.cavity_radius**2) * _profile(zeta, length, peak) ** 2
    r_epi = np.sqrt(r_endo**2 + area)
    rv_s = np.where(zeta >= 0, np.sqrt(np.clip(1 - (zeta / anat.rv_length) ** 2, 0, 1)), 0.0)
    rv_w = anat.rv_width * rv_s
    if phase == "ES":
        r_endo = r_endo * anat.es_ratio
        r_epi = np.sqrt(r_endo**2 + area * length / (length - anat.shortening))
        rv_w = rv_w * anat.rv_es_ratio
    geometry = {
        "zeta": zeta,
        "r_endo": r_endo,
        "r_epi": r_epi,
        "rv_w": rv_w,
        "rv_span": anat.rv_span * (0.6 + 0.4 * rv_s),
        "center_y": anat.center[0] + anat.tilt[0] * z,
        "center_x": anat.center[1] + anat.tilt[1] * z,
    }
    return {k: np.asarray(v, dtype=np.float32)[:, None, None] for k, v in geometry.items()}


def _heart_frame(anat: _Anatomy, geo: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (mm) of every pixel in the heart frame: a towards posterior, b towards patient-left."""
    coords = (np.arange(anat.matrix, dtype=np.float32) - (anat.matrix - 1) / 2) * anat.spacing
    y = coords[None, :, None] - geo["center_y"]
    x = coords[None, None, :] - geo["center_x"]
    c, s = np.cos(anat.pose_angle), np.sin(anat.pose_angle)
    return c * y + s * x, c * x - s * y


def _lv_sdfs(anat: _Anatomy, geo: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> dict[str, tuple]:
    """Signed distances (and polar angles) of the LV endocardium, epicardium and RV cavity."""
    e = anat.ellipticity
    endo_axes = (geo["r_endo"] * (1 + e) + 1e-3, geo["r_endo"] * (1 - e) + 1e-3)
    epi_axes = (geo["r_epi"] * (1 + e / 2) + 1e-3, geo["r_epi"] * (1 - e / 2) + 1e-3)
    coefs = anat.shape_coefs[:, :, None, None, None]
    return {
        "endo": _ellipse_sdf(a, b, (0.0, 0.0), endo_axes, anat.ellipse_angle, coefs),
        "epi": _ellipse_sdf(a, b, (0.0, 0.0), epi_axes, anat.ellipse_angle, coefs * 0.6),
        "rv": _crescent_sdf(anat, geo, a, b),
    }


def _crescent_sdf(
    anat: _Anatomy, geo: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance (mm) to the RV cavity's outer border, with cos/sin of the angle from the RV axis.

    The RV is a crescent on the LV epicardium: its thickness peaks at ``rv_w`` along the RV axis and
    falls to nothing at the insertion points ``rv_span`` away; the LV painted over it makes the septum.
    """
    rho = np.hypot(a, b) + 1e-6
    ca, sa = np.cos(anat.rv_angle), np.sin(anat.rv_angle)
    cos, sin = (a * ca + b * sa) / rho, (b * ca - a * sa) / rho
    c_max = np.cos(geo["rv_span"])
    thickness = geo["rv_w"] * np.clip((cos - c_max) / (1 - c_max), 0, 1) ** 0.55
    thickness = thickness * (1 + _fourier(cos, sin, anat.rv_coefs))
    return rho - (geo["r_epi"] + thickness - 2.0), cos, sin


def _occupancy(sdf: np.ndarray, edge: float) -> np.ndarray:
    """Fraction of a pixel inside a shape (linear ramp one pixel wide around the border)."""
    return np.clip(0.5 - sdf / edge, 0.0, 1.0)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field smoothed in-plane by ``sigma`` pixels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0, sigma, sigma))
    return field / (field.std() + 1e-6)


def _paint(img: np.ndarray, sdf: np.ndarray, value: float | np.ndarray, edge: float, opacity=1.0) -> None:
    """Composite a shape of signal ``value`` over ``img`` in place (painter's algorithm with partial pixels)."""
    img += _occupancy(sdf, edge) * opacity * (value - img)


def _thorax(
    anat: _Anatomy, t: Mapping[str, float], zeta: np.ndarray, a: np.ndarray, b: np.ndarray, fields: list[np.ndarray]
) -> np.ndarray:
    """Signal of the surroundings: chest wall (fat, muscle, ribs), mediastinal fat, lungs, liver, spine, aorta."""
    edge = anat.spacing
    size = anat.cavity_radius + anat.wall
    img = np.full(a.shape, t["air"], dtype=np.float32)
    front, subcut, muscle = anat.chest
    body = _ellipse_sdf(a, b, (front + 160, -10.0), (160.0, 230.0), 0.0, anat.lung_coefs * 0.15)[0]
    _paint(img, body, t["fat"], edge)
    _paint(img, body + subcut, t["muscle"], edge)
    for rib in anat.ribs:
        rib_a = front + subcut + 0.5 * muscle + 0.0015 * (rib + 10) ** 2
        _paint(img, _ellipse_sdf(a, b, (rib_a, rib), (4.5, 8.0))[0], t["bone"], edge, 0.7)
        _paint(img, _ellipse_sdf(a, b, (rib_a, rib), (3.0, 6.5))[0], t["marrow"] * 0.7, edge)
    inner = body + subcut + muscle
    _paint(img, inner, t["mediastinum"] + (t["fat"] - t["mediastinum"]) * np.clip(fields[1] - 0.2, 0, 1), edge)
    right_lung = (15.0, -size - 0.8 * anat.rv_width - 45)
    lungs = np.minimum.reduce([
        _ellipse_sdf(a, b, (10.0, size + 42), (size + 60, 48.0), 0.35, anat.lung_coefs)[0],
        _ellipse_sdf(a, b, right_lung, (size + 55, 42.0), -0.35, anat.lung_coefs[::-1])[0],
        _ellipse_sdf(a, b, (size + 50, 0.5 * size + 30), (40.0, 55.0))[0],
    ])
    lungs = np.maximum(lungs, inner + 3)
    _paint(img, lungs, t["lung"], edge)
    _paint(img, lungs + 3, t["vessel"], edge, np.clip(fields[0] - 1.8, 0, 1))
    liver_size = np.clip(25 + 1.3 * (zeta - 0.35 * anat.length) + anat.liver_offset, 0, None)
    liver = _ellipse_sdf(a, b, (size + 100, -size - 10), (liver_size + 50, liver_size + 65), 0.5)[0]
    _paint(img, liver, t["liver"], edge)
    spine = (size + 62, 5.0)
    _paint(img, _ellipse_sdf(a, b, spine, (17.0, 19.0))[0], t["bone"], edge)
    _paint(img, _ellipse_sdf(a, b, spine, (14.0, 16.0))[0], t["marrow"], edge)
    _paint(img, _ellipse_sdf(a, b, (size + 28, 0.35 * size), (11.0, 11.0))[0], t["blood"] * 0.85, edge)
    return img


def _heart_tissue(
    img: np.ndarray, anat: _Anatomy, t: Mapping[str, float], difficulty: Difficulty, phase: str,
    geo: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray, texture: np.ndarray,
) -> None:
    """Paint the heart over ``img`` in place: atria above the base, epicardial fat, RV, LV, papillary muscles."""
    edge = anat.spacing
    size = anat.cavity_radius + anat.wall
    zeta = geo["zeta"]
    # atria and aortic root above the base (not labelled)
    height = np.clip(-zeta, 0, None)
    above = (zeta < 0).astype(np.float32)
    atrium = np.sqrt(np.clip(1 - (height / 45) ** 2, 0, 1))
    la_r = 0.9 * anat.cavity_radius * atrium + 1e-3
    la = _ellipse_sdf(a, b, (0.45 * size + 0.2 * height, 0.1 * size), (la_r, la_r * 1.1))[0]
    ra_r = (0.6 * anat.rv_width + 10) * atrium + 1e-3
    ra = _ellipse_sdf(a, b, (0.2 * size + 0.2 * height, -size - 0.3 * anat.rv_width), (ra_r, ra_r * 1.15))[0]
    root = _ellipse_sdf(a, b, (-0.25 * size, -0.45 * size), (12.0, 12.0))[0]
    in_root = above * (height < 35)
    for sdf, where in ((la, above), (ra, above), (root, in_root)):
        _paint(img, sdf - 2, t["myocardium"], edge, where)
    for sdf, where in ((la, above), (ra, above), (root, in_root)):
        _paint(img, sdf, t["blood"] * 0.95, edge, where)
    # ventricles: epicardial fat, RV wall and cavity, LV myocardium and cavity
    sdf = _lv_sdfs(anat, geo, a, b)
    endo, epi, rv = sdf["endo"][0], sdf["epi"][0], sdf["rv"][0]
    q = stats.norm.ppf(1 - np.clip(difficulty.epicardial_fat, 1e-3, 1 - 1e-3))
    fat_lv = anat.fat_max * np.clip((_fourier(*sdf["epi"][1:], anat.fat_coefs) / 1.2 - q) * 1.5, 0, 1)
    fat_rv = anat.fat_max * np.clip((_fourier(*sdf["rv"][1:], anat.fat_coefs[::-1]) / 1.2 - q) * 1.5, 0, 1)
    groove = 4.0 * np.clip(1 - zeta / 12, 0, 1) * (zeta >= 0)
    heart = (zeta >= 0).astype(np.float32)
    _paint(img, np.minimum(epi - fat_lv - groove, rv - 3 - fat_rv - groove), t["fat"], edge, heart)
    _paint(img, rv - 3, t["myocardium"], edge, heart)
    _paint(img, rv, t["blood"] * 0.96, edge, heart)
    _paint(img, epi, t["myocardium"], edge, heart)
    _paint(img, endo, t["blood"], edge, heart)
    # papillary muscles and trabeculae: dark structures inside the cavities, labelled as cavity
    if difficulty.papillary:
        window = np.clip(np.minimum(zeta - 0.15 * anat.length, 0.75 * anat.length - zeta) / 8, 0, 1)
        for angle, radius in zip(anat.papillary_angles, anat.papillary_radius, strict=True):
            r = radius * (1.2 if phase == "ES" else 1.0) * window + 1e-3
            dist = np.maximum(geo["r_endo"] - 0.8 * r, 0)
            spot = _ellipse_sdf(a, b, (dist * np.cos(angle), dist * np.sin(angle)), (r, r))[0]
            _paint(img, spot, t["myocardium"], edge, heart * (r > 0.5))
    if difficulty.trabeculation > 0:
        near_wall = np.clip(1 + endo / 3.0, 0, 1) * np.clip(-endo / edge, 0, 1)
        near_rv_wall = np.clip(1 + rv / 3.0, 0, 1) * np.clip(-rv / edge, 0, 1) * (epi > 0)
        spots = np.clip((texture - 0.6) * 1.5, 0, 1) * difficulty.trabeculation
        img += heart * np.maximum(near_wall, near_rv_wall) * spots * (t["myocardium"] - img)


def _tissue_image(
    anat: _Anatomy, style: DomainStyle, difficulty: Difficulty, phase: str, centres: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noise-free signal (S, H, W): the thorax at slice centres, the heart averaged over sub-slices of the slab.

    The heart changes fast along its axis (base, apex), so its partial volume matters; the thorax does not.
    """
    n_sub = max(1, difficulty.through_plane_samples)
    offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * anat.thickness
    shape = (anat.n_slices, anat.matrix, anat.matrix)
    fields = [_smooth_field(rng, shape, sigma_mm / anat.spacing) for sigma_mm in (1.2, 4.0)]
    geo = _heart(anat, phase, centres)
    thorax = _thorax(anat, style.tissue, geo["zeta"], *_heart_frame(anat, geo), fields)
    geo = _heart(anat, phase, (centres[:, None] + offsets).ravel())
    img = np.repeat(thorax, n_sub, axis=0)
    _heart_tissue(img, anat, style.tissue, difficulty, phase, geo, *_heart_frame(anat, geo),
                  np.repeat(fields[0], n_sub, axis=0))
    img = np.clip(img, 0, None).reshape(shape[0], n_sub, *shape[1:]).mean(axis=1)
    return img * (1 + 0.05 * fields[1])  # mild tissue heterogeneity


def _labels(anat: _Anatomy, difficulty: Difficulty, phase: str, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reference labels (S, H, W) at slice centres, drawn with smooth annotator jitter on every contour."""
    geo = _heart(anat, phase, z)
    a, b = _heart_frame(anat, geo)
    sdf = _lv_sdfs(anat, geo, a, b)
    n_harmonics = 6
    weights = (1.0 / np.sqrt(np.arange(1, n_harmonics + 1)))[:, None, None, None, None]
    weights = weights / np.sqrt((weights**2).sum())
    jitter = difficulty.annotator_jitter_px * anat.spacing
    label = np.zeros(a.shape, dtype=np.uint8)
    heart = geo["zeta"] >= 0
    for name, value in (("rv", 1), ("epi", 2), ("endo", 3)):
        distance, cos, sin = sdf[name]
        coefs = (rng.standard_normal((n_harmonics, 2, len(z), 1, 1)) * weights * jitter).astype(np.float32)
        inside = (distance - _fourier(cos, sin, coefs) < 0) & heart
        if name != "rv":
            inside &= geo["r_epi" if name == "epi" else "r_endo"] > 0.5 * anat.spacing
        label[inside] = value
    return label


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative coil shading: exp of a random quadratic polynomial, mean 1."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = [*grids] + [g * h for i, g in enumerate(grids) for h in grids[i:]]
    log_field = sum(rng.normal(0, strength if k < 3 else strength / 2) * term for k, term in enumerate(terms))
    field = np.exp(log_field)
    return field / field.mean()


def _acquire(
    tissue: np.ndarray, anat: _Anatomy, style: DomainStyle, difficulty: Difficulty, rng: np.random.Generator
) -> np.ndarray:
    """Image formation: contrast curve, slab averaging, blur, shading, noisy truncated k-space, scanner scale."""
    signal = tissue**style.gamma
    if difficulty.blur_px > 0:
        signal = ndimage.gaussian_filter(signal, (0, difficulty.blur_px, difficulty.blur_px))
    signal = signal * _bias_field(rng, signal.shape, style.bias * difficulty.bias_scale)
    sigma = style.noise * difficulty.noise_scale * style.tissue["blood"] ** style.gamma
    noisy = signal + sigma * (rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape))
    fractions = style.kspace_fraction if rng.random() < 0.5 else style.kspace_fraction[::-1]
    if min(fractions) < 1:
        kspace = np.fft.fftshift(np.fft.fft2(noisy), axes=(1, 2))
        keep = [np.abs(np.arange(anat.matrix) - anat.matrix // 2) <= f * anat.matrix / 2 for f in fractions]
        kspace *= keep[0][:, None] & keep[1][None, :]
        noisy = np.fft.ifft2(np.fft.ifftshift(kspace, axes=(1, 2)))
    magnitude = np.abs(noisy)
    scale = rng.uniform(*style.signal_range) / (style.tissue["blood"] ** style.gamma)
    return np.clip(np.round(magnitude * scale), 0, np.iinfo(np.int16).max).astype(np.int16)


def synthesize_subject(
    rng: np.random.Generator | int,
    domain: str = "in_domain",
    matrix: int = 128,
    difficulty: Difficulty | None = None,
) -> SyntheticSubject:
    """Draw one subject and image its ED and ES frames in the style of ``domain``.

    Args:
        rng: a numpy Generator or an integer seed; the same seed gives the same subject.
        domain: a key of :data:`DOMAINS`.
        matrix: in-plane size (H = W = matrix).
        difficulty: knobs of :class:`Difficulty`; defaults when None.

    Returns:
        a :class:`SyntheticSubject` with int16 images and uint8 labels shaped (matrix, matrix, S), 8 <= S <= 12.
    """
    if domain not in DOMAINS:
        raise ValueError(f"Unknown domain {domain!r}; choose one of {sorted(DOMAINS)}.")
    rng = np.random.default_rng(rng)
    difficulty = difficulty or Difficulty()
    style = DOMAINS[domain]
    anat = _sample_anatomy(rng, style, matrix)
    centres = anat.z0 + np.arange(anat.n_slices) * anat.slice_spacing
    images, labels = {}, {}
    for phase in PHASES:
        tissue = _tissue_image(anat, style, difficulty, phase, centres, rng)
        images[phase] = np.ascontiguousarray(_acquire(tissue, anat, style, difficulty, rng).transpose(1, 2, 0))
        labels[phase] = np.ascontiguousarray(_labels(anat, difficulty, phase, centres, rng).transpose(1, 2, 0))
    return SyntheticSubject(images=images, labels=labels, affine=anat.affine, domain=domain, group=anat.group)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write ``array`` with ``affine`` as NIfTI, with qform and sform both set (code 1, scanner) as scanners do."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return Path(path)


def generate_synthetic_dataset(
    output_dir: str | Path,
    n_train: int = 24,
    n_val: int = 6,
    n_test: int = 8,
    shifted_domains: Sequence[str] = ("vendor_b", "vendor_c"),
    matrix: int = 128,
    seed: int = 0,
    difficulty: Difficulty | None = None,
) -> Path:
    """Write a synthetic dataset (NIfTI frames + ``datalist.json``) and return the datalist's path.

    ``n_train``, ``n_val`` and ``n_test`` count subjects (two frames each). Training and validation
    are in-domain; the test split holds ``n_test`` in-domain subjects plus ``n_test`` per shifted domain.
    Each subject's random stream depends only on (seed, domain, index), so changing a split size
    leaves the other subjects unchanged. Files: ``<output>/<domain>/<subject>_<ED|ES>[_gt].nii.gz``.
    """
    for domain in shifted_domains:
        if domain not in DOMAINS or domain == "in_domain":
            raise ValueError(f"Unknown shifted domain {domain!r}; choose from {sorted(set(DOMAINS) - {'in_domain'})}.")
    output_dir = Path(output_dir).resolve()
    plan = [("in_domain", "training", n_train), ("in_domain", "validation", n_val), ("in_domain", "test", n_test)]
    plan += [(domain, "test", n_test) for domain in shifted_domains]
    splits: dict[str, list[dict[str, str]]] = {"training": [], "validation": [], "test": []}
    counters: dict[str, int] = {}
    for domain, split, count in plan:
        folder = output_dir / domain
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            index = counters.get(domain, 0)
            counters[domain] = index + 1
            subject = f"syn_{domain}_{index:03d}"
            domain_id = list(DOMAINS).index(domain)
            case = synthesize_subject(np.random.default_rng([seed, domain_id, index]), domain, matrix, difficulty)
            for phase in PHASES:
                image = save_nifti(case.images[phase], case.affine, folder / f"{subject}_{phase}.nii.gz")
                label = save_nifti(case.labels[phase], case.affine, folder / f"{subject}_{phase}_gt.nii.gz")
                splits[split].append(datalist_entry(image, label, subject, phase, domain))
    description = f"Synthetic short-axis cine MRI (seed {seed}, matrix {matrix}); labels 1 RV, 2 MYO, 3 LV."
    return write_datalist(output_dir / "datalist.json", splits, description)
