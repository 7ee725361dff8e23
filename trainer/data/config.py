"""The data configuration: plain data, saved into every checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from runtime.normalization import CT_DEFAULT
from trainer.field_types import check_field_types

# Training CT doses above full dose (quieter scans) are drawn on phantoms only (datasets._ct_training_variants).
MAX_TRAIN_DOSE = 4.0


@dataclass
class DataConfig:
    """What to train and evaluate on, and how images are degraded and augmented.

    ``sources`` names where clean images come from: ``"offline"`` (the real DICOM images that
    ship in pydicom and pydicom-data), ``"phantom"`` (synthetic CT phantoms in HU), ``"atlas"``
    (real MR anatomy: axial slices of the MNI152 T1 template that nilearn ships), ``"natural"``
    (scikit-image's bundled photographs as MR-like images: fine texture), ``"natural_ct"`` (the
    training photographs as CT slices in HU inside a body outline: fine texture under CT noise),
    ``"invesalius"`` (real CT head slices from Debian's invesalius-examples volume), or a
    directory path of DICOM files (degraded on the fly; a directory holding ``full_dose`` and
    ``quarter_dose``/``low_dose`` folders is read as low/full-dose pairs). ``paired_low_dir``
    and ``paired_full_dir`` name a low/full-dose pair of folders explicitly.
    """

    # "denoise": (noisy, clean) pairs of one size; "sr2": (low-resolution, high-resolution)
    # pairs for x2 super-resolution (trainer/data/super_resolution.py).
    task: str = "denoise"
    sources: list[str] = field(default_factory=lambda: ["offline", "phantom"])
    paired_low_dir: str | None = None
    paired_full_dir: str | None = None
    modalities: list[str] = field(default_factory=lambda: ["CT", "MR", "CR", "DX"])
    patch_size: int = 64
    patches_per_epoch: int = 2048
    # Share of training patches per modality (e.g. {"CT": 0.6, "MR": 0.2, "CR": 0.2}); a
    # modality without training images is left out and the rest renormalized. None: every
    # training image is equally likely (CT phantoms then dominate).
    modality_weights: dict[str, float] | None = None
    # Share of each modality's training patches drawn from its real images (not phantoms) when
    # it has both, split evenly among them; None: every image of a modality equally likely (a
    # few real slices beside 24 phantoms then get a few per cent of the patches).
    real_image_share: float | None = None
    seed: int = 0
    augment: bool = True
    # CT normalization: this HU range maps linearly to [0, 1], unclipped (docs/DATA.md). The
    # shipped model uses the soft-tissue window [-160, 240] so that quarter-dose noise
    # (10-20 HU) is as large to the model as MR noise; the default is the full 12-bit range.
    ct_hu_range: list[float] = field(default_factory=lambda: [CT_DEFAULT.hu_min, CT_DEFAULT.hu_max])
    # CT low-dose simulation (projection domain). ``dose_fractions`` are the levels validation
    # and test images are degraded at (each exactly); training draws a fresh dose per patch,
    # log-uniform in ``train_dose_range`` (None: one of ``dose_fractions``). Above 1 (quieter than
    # full dose) applies to phantoms only; a real slice's draw is capped at its own full dose.
    dose_fractions: list[float] = field(default_factory=lambda: [0.25])
    train_dose_range: list[float] | None = None
    # Reconstruction kernels (skimage iradon filters, sharp "ramp" ... smooth "hann"): training
    # draws among ``ct_kernels``; validation/test use ``eval_ct_kernels`` (None: the same).
    ct_kernels: list[str] = field(default_factory=lambda: ["ramp"])
    eval_ct_kernels: list[str] | None = None
    ct_angles: int = 180  # projection views simulated over 180 degrees
    # Photons per detector bin at full dose, stated for 1000 views. 7e5 puts a quarter-dose
    # abdomen-sized slice (0.68 mm pixels) at 19-50 HU soft-tissue noise depending on the kernel
    # (Hann ... ramp), bracketing the 20-45 HU published for quarter-dose abdominal CT (docs/DATA.md).
    ct_photons: float = 7e5
    ct_noise_realizations: int = 2  # precomputed noisy versions per training slice and dose
    # Training CT pairs as real low/full-dose pairs come: the reference is a simulated full-dose
    # scan (its own noise), not the noiseless slice. Held-out pairs are unchanged (docs/DATA.md).
    ct_full_dose_reference: bool = False
    # MR noise, in normalized units (fraction of the clean image's percentile range): the
    # levels of validation/test images; training draws sigma log-uniform in the range (None:
    # one of the levels).
    mr_noise: str = "rician"  # "rician" or "gaussian"
    mr_noise_sigmas: list[float] = field(default_factory=lambda: [0.03])
    train_mr_sigma_range: list[float] | None = None
    # X-ray (CR/DX) noise: "gaussian" (sigma in normalized units) or "quantum" (Poisson-Gaussian,
    # signal dependent, at ``xray_photons`` quanta per pixel in the open field; docs/DATA.md).
    xray_noise: str = "gaussian"
    xray_noise_sigma: float = 0.02
    xray_photons: list[float] = field(default_factory=lambda: [1000.0])
    train_xray_photon_range: list[float] | None = None
    # Optional extra degradations for every modality (0 / 1 disable them).
    blur_sigma: float = 0.0  # Gaussian blur, pixels
    downsample_factor: int = 1  # area-downsample then cubic upsample back
    # x2 super-resolution degradation (task "sr2"): CT/X-ray blur before 2x2 area averaging, in
    # high-resolution pixels, and optional Gaussian noise on the low-resolution input (normalized
    # sigma drawn log-uniform per patch; validation/test use the geometric middle). MR: k-space.
    sr_blur_sigma: float = 0.6
    sr_noise_range: list[float] | None = None
    # [lo, hi]: an x2 model's MR phantoms are "acquired" before they serve as high-resolution
    # references: k-space kept up to a fraction of Nyquist drawn in [lo, hi] per phantom, with a
    # cosine taper (kspace.kspace_lowpass). Rasterized phantoms have edges no scanner
    # records; real MR images are band-limited by their acquisition. None: off.
    sr_mr_phantom_band: list[float] | None = None
    # How MR is halved in k-space: "dft" (the image's DFT, periodic: a non-periodic DICOM image
    # wraps and its wrapped edge rings; the configs before the twenty-first session) or "dct"
    # (the DCT-II: the DFT of the image mirrored about its edges, no wrap; docs/DATA.md).
    sr_mr_kspace: str = "dft"
    # Phantoms.
    phantom_count: int = 16  # random training phantoms
    phantom_size: int = 256
    heldout_phantoms: int = 2  # random test phantoms, plus Shepp-Logan
    validation_phantoms: int = 0  # random validation phantoms
    # CT head phantoms (phantoms.random_head_phantom: skull ring, brain detail below the noise),
    # training only, so validation and test stay what they were.
    head_phantoms: int = 0
    # False: the head phantoms without their fine 0.5-2 HU brain grain (piecewise constant but for
    # their partial-volume edges), so they teach the skull ring without teaching to keep sub-noise grain.
    head_phantom_grain: bool = True
    # Validation head phantoms (phantom:head-val-i, never test): validation otherwise holds no
    # phantom with a skull, where the shipped model loses most to oracle NLM (docs/TRAINING.md).
    head_validation_phantoms: int = 0
    # Piecewise-constant random CT body phantoms (no smooth tissue texture; sources.flat_phantom_images),
    # training only: uniform regions as a QA phantom has, where any noise left is pure error.
    ct_flat_phantoms: int = 0
    mr_phantoms: int = 0  # noiseless MR-contrast training phantoms (sources: "phantom", modality MR)
    mr_validation_phantoms: int = 0  # and validation ones (never test)
    # > 0: MR phantoms carry a fine multiplicative tissue texture of up to this relative RMS
    # (phantoms.tissue_texture), so a model learns that fine structure is not all noise.
    mr_phantom_texture: float = 0.0
    # Source "atlas" (trainer/data/atlas.py): how many MNI152 T1 template slices train and how
    # many validate (from separate axial slabs; never test).
    mr_atlas_slices: int = 24
    # Source "invesalius" (trainer/data/invesalius.py): how many of the real head CT volume's axial
    # slices train, evenly spaced (never validation or test), each upsampled this many times in plane
    # (cubic; 2: 512² at 0.479 mm, with the scan's own noise below pixel scale, trainer/data/invesalius.py).
    ct_invesalius_slices: int = 24
    ct_invesalius_upsample: int = 2
    mr_atlas_validation_slices: int = 3
    # [lo, hi]: MR phantoms (training and validation, any task) band-limited as acquisitions are:
    # k-space kept up to a fraction of Nyquist drawn in [lo, hi] per phantom (kspace.kspace_lowpass),
    # magnitude taken. A real MR image holds nothing beyond its acquisition band (often half its
    # matrix, interpolated by the scanner). None: off. Not with sr_mr_phantom_band (choose one).
    mr_phantom_band: list[float] | None = None
    # > 0: training CT phantoms (never validation or test ones) carry the same kind of texture on
    # their attenuation (HU + 1000), up to this relative RMS (0.015: up to ~15 HU in soft tissue,
    # less in lung, none in air), so that fine structure at low noise is not taken for noise.
    ct_phantom_texture: float = 0.0
    # > 0: the random training CT body phantoms (not the head phantoms; never validation or test
    # ones) get structure of up to this many HU in their air (phantoms.air_structure: a smooth
    # field, a scatter halo near the body, foam pads), since a real scan's air is not flat and a
    # model that knows only flat air leaves the noise on it.
    ct_phantom_air_structure: float = 0.0
    xray_phantoms: int = 0  # noiseless radiograph phantoms (sources: "phantom", modality DX)
    xray_validation_phantoms: int = 0  # and validation ones (never test)
    # Share of the training radiograph phantoms whose detector saturates at their open field
    # (sources.xray_phantom_images; validation: always the even-numbered half).
    xray_train_saturated_share: float = 0.5
    # Clip degraded radiographs (CR/DX) to the range their file can hold (SourceImage.detector_range:
    # a DICOM file's stored range; half the synthetic radiographs saturate at their open field), as
    # a radiograph written to DICOM is: noise below the detector floor is lost. Training,
    # validation and the dose curve alike; CT and MR are not clipped.
    clip_xray_to_detector: bool = False
    # Non-CT real references noisier than this fraction of their signal range are binned 2x2
    # until clean enough, or dropped (trainer/data/reference.py). 0: every reference as it is.
    max_reference_noise: float = 0.0
    # Real CT slices whose own soft-tissue noise exceeds this many HU are no reference and are
    # dropped (trainer/data/reference.py). 0: every slice as it is.
    max_ct_reference_noise_hu: float = 0.0
    # Give each degraded patch a second channel, the constant map of its noise level: what the
    # runtime measures on its whole image at the patch's noise (trainer/data/noise_levels.py).
    # For noise-map models; turn rotation and elastic warps off with it (their interpolation
    # smooths pixel-scale noise, which no scanned image has had).
    noise_map: bool = False
    # With noise_map: feed each MR/X-ray training patch and its reference in the normalization
    # the runtime fits on the whole degraded image at the patch's noise level (noise_levels.py),
    # not the clean reference's; pair it with eval.runtime_normalization. CT is the same either way.
    runtime_normalization: bool = False
    # With noise_map: tell each training patch its level times a factor drawn log-uniform in
    # [1 / (1 + j), 1 + j] (0: the exact level). A model told only exact levels can be sharply tuned
    # to them, while the runtime's estimate on a real image is not exact (docs/TRAINING.md).
    noise_map_jitter: float = 0.0
    # Images smaller than this on either side are skipped (packaged 16x16 thumbnails).
    min_image_side: int = 64
    # Three-way split (see docs/DATA.md): stable hash rule over each image group's key; the
    # first ``heldout_fraction`` of the hash range is test, the next ``validation_fraction``
    # validation, the rest training.
    heldout_fraction: float = 0.3
    validation_fraction: float = 0.0
    heldout_max_side: int = 512  # held-out slices are center-cropped to at most this side
    # Augmentations (from the seed).
    rotation_degrees: float = 15.0
    elastic_prob: float = 0.3
    elastic_alpha: float = 8.0  # displacement scale, pixels
    elastic_sigma: float = 6.0  # displacement smoothness, pixels
    noise_aug_prob: float = 0.5
    noise_aug_sigma: list[float] = field(default_factory=lambda: [0.01, 0.05])

    def __post_init__(self) -> None:
        check_field_types(self, "data")  # JSON and --set values arrive untyped
        if not 0 <= self.ct_phantom_texture < 0.2:
            raise ValueError(f"ct_phantom_texture {self.ct_phantom_texture} must be in [0, 0.2) (relative RMS)")
        if not 0 <= self.ct_phantom_air_structure <= 200:
            raise ValueError(f"ct_phantom_air_structure {self.ct_phantom_air_structure} must be in [0, 200] (HU)")
        if self.patch_size < 8:
            raise ValueError(f"patch_size {self.patch_size} is too small (need >= 8)")
        if not self.dose_fractions or any(not 0 < d <= 1 for d in self.dose_fractions):
            raise ValueError(f"dose_fractions {self.dose_fractions} must be in (0, 1]")
        if self.task not in ("denoise", "sr2"):
            raise ValueError(f"task {self.task!r} must be 'denoise' or 'sr2'")
        if self.sr_blur_sigma < 0:
            raise ValueError(f"sr_blur_sigma {self.sr_blur_sigma} must be >= 0")
        from trainer.data.atlas import TRAIN_SLAB, VALIDATION_SLAB  # noqa: PLC0415 (config stays light to import)

        for name, slab in (("mr_atlas_slices", TRAIN_SLAB), ("mr_atlas_validation_slices", VALIDATION_SLAB)):
            if not 0 <= getattr(self, name) <= slab[1] - slab[0]:
                raise ValueError(f"{name} {getattr(self, name)} must be in [0, {slab[1] - slab[0]}] (the template's slab)")
        for name in ("head_phantoms", "head_validation_phantoms", "ct_flat_phantoms", "ct_invesalius_slices"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name)} must be >= 0")
        if self.ct_invesalius_upsample < 1:
            raise ValueError(f"ct_invesalius_upsample {self.ct_invesalius_upsample} must be >= 1")
        if self.sr_mr_kspace not in ("dft", "dct"):
            raise ValueError(f"sr_mr_kspace {self.sr_mr_kspace!r} must be 'dft' or 'dct'")
        if self.mr_noise not in ("rician", "gaussian"):
            raise ValueError(f"mr_noise {self.mr_noise!r} must be 'rician' or 'gaussian'")
        if self.xray_noise not in ("gaussian", "quantum"):
            raise ValueError(f"xray_noise {self.xray_noise!r} must be 'gaussian' or 'quantum'")
        for name in ("train_dose_range", "train_mr_sigma_range", "train_xray_photon_range", "sr_noise_range",
                     "sr_mr_phantom_band", "mr_phantom_band"):
            bounds = getattr(self, name)
            if bounds is not None and not (len(bounds) == 2 and 0 < bounds[0] <= bounds[1]):
                raise ValueError(f"{name} {bounds} must be [low, high] with 0 < low <= high")
        for name in ("sr_mr_phantom_band", "mr_phantom_band"):
            band = getattr(self, name)
            if band is not None and band[1] > 1:
                raise ValueError(f"{name} {band} must lie in (0, 1] (fractions of Nyquist)")
        if self.sr_mr_phantom_band is not None and self.mr_phantom_band is not None:
            raise ValueError("set mr_phantom_band or sr_mr_phantom_band, not both (both band-limit the MR phantoms)")
        if self.train_dose_range is not None and self.train_dose_range[1] > MAX_TRAIN_DOSE:
            raise ValueError(f"train_dose_range {self.train_dose_range} must lie in (0, {MAX_TRAIN_DOSE:g}]")
        from trainer.data.degrade import CT_KERNELS  # noqa: PLC0415 (config stays light to import)

        for kernel in self.ct_kernels + (self.eval_ct_kernels or []):
            if kernel not in CT_KERNELS:
                raise ValueError(f"CT kernel {kernel!r} is not one of {', '.join(CT_KERNELS)}")
        if not self.ct_kernels or not self.mr_noise_sigmas or not self.xray_photons:
            raise ValueError("ct_kernels, mr_noise_sigmas and xray_photons need at least one value")
        if len(self.ct_hu_range) != 2 or not self.ct_hu_range[0] < self.ct_hu_range[1]:
            raise ValueError(f"ct_hu_range {self.ct_hu_range} must be [hu_min, hu_max] with hu_min < hu_max")
        if (self.paired_low_dir is None) != (self.paired_full_dir is None):
            raise ValueError("paired_low_dir and paired_full_dir must be given together")
        if not (0 <= self.heldout_fraction < 1 and 0 <= self.validation_fraction < 1 - self.heldout_fraction):
            raise ValueError(
                f"heldout_fraction {self.heldout_fraction} and validation_fraction {self.validation_fraction} "
                "must be >= 0 and leave a training share"
            )
        if self.runtime_normalization and not self.noise_map:
            raise ValueError("runtime_normalization is measured with the noise-map level tables: set noise_map too")
        if self.noise_map_jitter < 0 or (self.noise_map_jitter > 0 and not self.noise_map):
            raise ValueError(f"noise_map_jitter {self.noise_map_jitter} must be >= 0, and > 0 only with noise_map")
        if self.noise_map and self.augment and self.noise_aug_prob > 0:
            raise ValueError("noise_map needs noise_aug_prob 0: a patch's level is its image's, without augmentation noise")
        self.modalities = [m.upper() for m in self.modalities]
        if self.modality_weights is not None:
            if any(w < 0 for w in self.modality_weights.values()) or sum(self.modality_weights.values()) <= 0:
                raise ValueError(f"modality_weights {self.modality_weights} must be >= 0 with a positive sum")
            self.modality_weights = {k.upper(): float(v) for k, v in self.modality_weights.items()}
        if not 0.0 <= self.xray_train_saturated_share <= 1.0:
            raise ValueError(f"xray_train_saturated_share {self.xray_train_saturated_share} must be in [0, 1]")
        if self.real_image_share is not None and not 0.0 <= self.real_image_share <= 1.0:
            raise ValueError(f"real_image_share {self.real_image_share} must be in [0, 1] (or null)")

    def to_dict(self) -> dict:
        """Plain-data form (JSON-able)."""
        return asdict(self)

    @property
    def eval_kernels(self) -> list[str]:
        """The kernels validation and test CT images are reconstructed with."""
        return list(self.eval_ct_kernels or self.ct_kernels)

    @classmethod
    def from_dict(cls, data: dict) -> "DataConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error. Configs saved before the
        noise ranges (scalar ``mr_noise_sigma``) still load."""
        data = dict(data)
        if "mr_noise_sigma" in data:
            data.setdefault("mr_noise_sigmas", [data.pop("mr_noise_sigma")])
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DataConfig keys: {', '.join(unknown)}")
        return cls(**data)

    def key(self) -> str:
        """A canonical string of this config, for caches."""
        return json.dumps(self.to_dict(), sort_keys=True)
