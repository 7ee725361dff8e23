"""The data configuration: plain data, saved into every checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from runtime.normalization import CT_DEFAULT


@dataclass
class DataConfig:
    """What to train and evaluate on, and how images are degraded and augmented.

    ``sources`` names where clean images come from: ``"offline"`` (the real DICOM images that
    ship in pydicom and pydicom-data), ``"phantom"`` (synthetic CT phantoms in HU), or a
    directory path of DICOM files (degraded on the fly; a directory holding ``full_dose`` and
    ``quarter_dose``/``low_dose`` folders is read as low/full-dose pairs). ``paired_low_dir``
    and ``paired_full_dir`` name a low/full-dose pair of folders explicitly.
    """

    sources: list[str] = field(default_factory=lambda: ["offline", "phantom"])
    paired_low_dir: str | None = None
    paired_full_dir: str | None = None
    modalities: list[str] = field(default_factory=lambda: ["CT", "MR", "CR", "DX"])
    patch_size: int = 64
    patches_per_epoch: int = 2048
    seed: int = 0
    augment: bool = True
    # CT normalization: this HU range maps linearly to [0, 1], unclipped (docs/DATA.md). The
    # shipped model uses the soft-tissue window [-160, 240] so that quarter-dose noise
    # (10-20 HU) is as large to the model as MR noise; the default is the full 12-bit range.
    ct_hu_range: list[float] = field(default_factory=lambda: [CT_DEFAULT.hu_min, CT_DEFAULT.hu_max])
    # CT low-dose simulation (projection domain).
    dose_fractions: list[float] = field(default_factory=lambda: [0.25])
    ct_angles: int = 180  # projection views simulated over 180 degrees
    # Photons per detector bin at full dose, stated for 1000 views: 1.4e6 is the dose that the one
    # real noisy abdominal scan in the packages (explicit_VR-UN, 9.6 HU own noise) implies (docs/DATA.md).
    ct_photons: float = 1.4e6
    ct_noise_realizations: int = 2  # precomputed noisy versions per training slice and dose
    # Training CT pairs as real low/full-dose pairs come: the reference is a simulated full-dose
    # scan (its own noise), not the noiseless slice. Held-out pairs are unchanged (docs/DATA.md).
    ct_full_dose_reference: bool = False
    # MR and X-ray noise, in normalized units (fraction of the clean image's percentile range).
    mr_noise: str = "rician"  # "rician" or "gaussian"
    mr_noise_sigma: float = 0.03
    xray_noise_sigma: float = 0.02
    # Optional extra degradations for every modality (0 / 1 disable them).
    blur_sigma: float = 0.0  # Gaussian blur, pixels
    downsample_factor: int = 1  # area-downsample then cubic upsample back
    # Phantoms.
    phantom_count: int = 16  # random training phantoms
    phantom_size: int = 256
    heldout_phantoms: int = 2  # random held-out phantoms, plus Shepp-Logan
    # Images smaller than this on either side are skipped (packaged 16x16 thumbnails).
    min_image_side: int = 64
    # Held-out split (see docs/DATA.md): stable hash rule over each image group's key.
    heldout_fraction: float = 0.3
    heldout_max_side: int = 512  # held-out slices are center-cropped to at most this side
    # Augmentations (from the seed).
    rotation_degrees: float = 15.0
    elastic_prob: float = 0.3
    elastic_alpha: float = 8.0  # displacement scale, pixels
    elastic_sigma: float = 6.0  # displacement smoothness, pixels
    noise_aug_prob: float = 0.5
    noise_aug_sigma: list[float] = field(default_factory=lambda: [0.01, 0.05])

    def __post_init__(self) -> None:
        if self.patch_size < 8:
            raise ValueError(f"patch_size {self.patch_size} is too small (need >= 8)")
        if not self.dose_fractions or any(not 0 < d <= 1 for d in self.dose_fractions):
            raise ValueError(f"dose_fractions {self.dose_fractions} must be in (0, 1]")
        if self.mr_noise not in ("rician", "gaussian"):
            raise ValueError(f"mr_noise {self.mr_noise!r} must be 'rician' or 'gaussian'")
        if len(self.ct_hu_range) != 2 or not self.ct_hu_range[0] < self.ct_hu_range[1]:
            raise ValueError(f"ct_hu_range {self.ct_hu_range} must be [hu_min, hu_max] with hu_min < hu_max")
        if (self.paired_low_dir is None) != (self.paired_full_dir is None):
            raise ValueError("paired_low_dir and paired_full_dir must be given together")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction {self.heldout_fraction} must be in [0, 1)")
        self.modalities = [m.upper() for m in self.modalities]

    def to_dict(self) -> dict:
        """Plain-data form (JSON-able)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DataConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DataConfig keys: {', '.join(unknown)}")
        return cls(**data)

    def key(self) -> str:
        """A canonical string of this config, for caches."""
        return json.dumps(self.to_dict(), sort_keys=True)
