"""Data source "invesalius": real CT head slices from the InVesalius example project that Debian's
invesalius-examples package ships (.ci/run installs it), and the project reader on small made-up
projects."""

from __future__ import annotations

import io
import plistlib
import tarfile
from pathlib import Path

import numpy as np
import pytest

from trainer.data import invesalius
from trainer.data.config import DataConfig
from trainer.data.datasets import data_summary, load_sources, split_sources
from trainer.data.reference import ct_own_noise_hu


def write_project(path: Path, volume: np.ndarray, spacing: float = 0.8, modality: str = "CT",
                  shape: tuple[int, ...] | None = None, raw: bytes | None = None) -> Path:
    """A minimal .inv3: a gzip tar holding FOLDER/main.plist and FOLDER/matrix.dat (``volume`` as
    int16, or ``raw`` bytes), as InVesalius writes."""
    main = {"modality": modality, "spacing": [spacing, spacing, 1.5],
            "matrix": {"filename": "matrix.dat", "dtype": "int16", "shape": list(shape or volume.shape)}}
    matrix = volume.astype("<i2").tobytes() if raw is None else raw
    with tarfile.open(path, "w:gz") as archive:
        for name, data in (("main.plist", plistlib.dumps(main)), ("matrix.dat", matrix)):
            info = tarfile.TarInfo(f"tmpproject/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def head_volume(slices: int = 6, side: int = 32) -> np.ndarray:
    """Air with a disc of soft tissue in every slice but the first and the last (too little tissue)."""
    volume = np.full((slices, side, side), -1000, dtype=np.int16)
    y, x = np.mgrid[:side, :side]
    disc = (y - side / 2) ** 2 + (x - side / 2) ** 2 < (side / 3) ** 2
    for z in range(1, slices - 1):
        volume[z][disc] = 40 + z
    volume[-1, :2, :2] = 40  # a corner of tissue: below MIN_TISSUE_SHARE
    return volume


def test_reads_a_project_and_picks_evenly_spaced_tissue_slices(tmp_path):
    path = write_project(tmp_path / "head.inv3", head_volume(), spacing=0.8)
    volume, pixel_mm = invesalius.read_project(path)
    assert volume.shape == (6, 32, 32) and volume.dtype == np.float32 and pixel_mm == pytest.approx(0.8)
    assert not volume.flags.writeable
    np.testing.assert_array_equal(volume, head_volume())
    slices, pixel_mm = invesalius.head_slices(4, path=path)
    assert [name for name, _ in slices] == ["cranium-z001", "cranium-z002", "cranium-z003", "cranium-z004"]
    assert all(values[16, 16] == 40 + int(name[-3:]) for name, values in slices)
    assert [name for name, _ in invesalius.head_slices(2, path=path)[0]] == ["cranium-z001", "cranium-z003"]
    with pytest.raises(ValueError, match=r"slice count 5 must be in \[0, 4\]"):
        invesalius.head_slices(5, path=path)


def test_upsampled_slices_keep_the_anatomy_at_half_the_pixel_size(tmp_path):
    path = write_project(tmp_path / "head.inv3", head_volume(), spacing=0.8)
    [(_, native)], _ = invesalius.head_slices(1, path=path)
    [(_, upsampled)], pixel_mm = invesalius.head_slices(1, upsample=2, path=path)
    assert pixel_mm == pytest.approx(0.4) and upsampled.shape == (64, 64) and upsampled.dtype == np.float32
    np.testing.assert_allclose(upsampled[::2, ::2].mean(), native.mean(), atol=15)  # same HU, same extent
    assert upsampled[32, 32] == pytest.approx(native[16, 16], abs=1) and upsampled[1, 1] == pytest.approx(-1000, abs=1)
    with pytest.raises(ValueError, match="upsample factor 0 must be >= 1"):
        invesalius.head_slices(1, upsample=0, path=path)


def test_bad_projects_are_one_clear_error_naming_the_file(tmp_path):
    with pytest.raises(RuntimeError, match="apt-get install invesalius-examples"):
        invesalius.read_project(tmp_path / "missing.inv3")
    wrong_shape = write_project(tmp_path / "shape.inv3", head_volume(), shape=(7, 32, 32))
    with pytest.raises(ValueError, match=r"shape.inv3: matrix of 6144 values does not fill its shape \(7, 32, 32\)"):
        invesalius.read_project(wrong_shape)
    odd_size = write_project(tmp_path / "odd.inv3", head_volume(), raw=b"abc")  # 3 bytes of an int16 matrix
    with pytest.raises(ValueError, match="odd.inv3: matrix not readable as its stated dtype and shape"):
        invesalius.read_project(odd_size)
    mr = write_project(tmp_path / "mr.inv3", head_volume(), modality="MR")
    with pytest.raises(ValueError, match="mr.inv3: modality 'MR', not CT"):
        invesalius.read_project(mr)
    not_a_project = tmp_path / "text.inv3"
    not_a_project.write_text("not a tar")
    with pytest.raises(ValueError, match="text.inv3: not a readable InVesalius project"):
        invesalius.read_project(not_a_project)


def test_debian_volume_gives_real_head_slices_for_training_only():
    """The packaged volume (.ci/run installs invesalius-examples): 24 real head slices in HU,
    upsampled to 512² at 0.479 mm, one training group, a scan (its own noise is matched when
    degraded), nothing in validation or test."""
    cfg = DataConfig(sources=["invesalius"], modalities=["CT"], validation_fraction=0.1)
    images = load_sources(cfg)
    training, test = split_sources(images, cfg, "test")
    _, validation = split_sources(images, cfg, "validation")
    assert len(images) == cfg.ct_invesalius_slices == 24 and training == images and test == validation == []
    assert {image.group for image in images} == {"train:invesalius:cranium"}
    for image in images:
        assert image.modality == "CT" and image.scanned and image.values.shape == (512, 512)
        assert image.pixel_mm == pytest.approx(0.957 / 2, abs=1e-3)
        assert image.values.min() == pytest.approx(-1024, abs=30) and image.values.max() > 1000  # air and skull in HU
    # upsampled, its own fine-scale noise reads about as the packaged 512² slices' (0.7-1.5 HU), not
    # the 3.7-6.7 HU of the 256² matrix (a reference that noisy teaches a model to keep noise)
    assert 0.5 < np.median([ct_own_noise_hu(image.values) for image in images]) < 1.6
    native = load_sources(DataConfig(sources=["invesalius"], modalities=["CT"], ct_invesalius_slices=4,
                                     ct_invesalius_upsample=1))
    assert native[0].values.shape == (256, 256) and np.median([ct_own_noise_hu(i.values) for i in native]) > 3.0
    summary = data_summary(DataConfig(sources=["invesalius"], modalities=["CT"], ct_invesalius_slices=3))
    assert "invesalius" in summary["sources"]
    assert load_sources(DataConfig(sources=["invesalius"], modalities=["MR"])) == []  # CT only


def test_slice_count_and_upsampling_are_validated_each_by_name():
    for key, bad, rule in (("ct_invesalius_slices", -1, ">= 0"), ("ct_invesalius_upsample", 0, ">= 1")):
        with pytest.raises(ValueError, match=f"^{key} {bad} must be {rule}$"):
            DataConfig(**{key: bad})
