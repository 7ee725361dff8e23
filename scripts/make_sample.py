"""Make samples/ct_quarter_dose.dcm: a held-out real CT slice at simulated quarter dose.

The slice is pydicom-data's explicit_VR-UN.dcm (abdominal CT, 512², in the held-out split that
training never sees, docs/DATA.md). Its pixels are degraded with the training data's own
projection-domain simulation (radon -> Poisson at 25 % dose -> filtered back-projection) and
written back in the source's encoding, with new UIDs and the patient identity replaced.

    python scripts/make_sample.py [--out samples/ct_quarter_dose.dcm] [--dose 0.25]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pydicom

from runtime.image_contract import modality_image
from runtime.outputs import write_dicom
from trainer.data import DataConfig
from trainer.data.degrade import low_dose_ct
from trainer.data.dicom_out import degraded_dataset
from trainer.data.offline import offline_dicom_files
from trainer.data.sources import pixel_spacing_mm

SOURCE_NAME = "explicit_VR-UN.dcm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("samples/ct_quarter_dose.dcm"))
    parser.add_argument("--dose", type=float, default=0.25, help="fraction of full dose (default 0.25)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    source = next(p for p in offline_dicom_files() if p.name == SOURCE_NAME)
    ds = pydicom.dcmread(source)
    hu = modality_image(ds)[0]
    cfg = DataConfig()
    noisy = low_dose_ct(
        hu[0], args.dose, np.random.default_rng(args.seed),
        pixel_mm=pixel_spacing_mm(ds), angles=cfg.ct_angles, photons=cfg.ct_photons,
    )
    ds = degraded_dataset(
        ds, noisy,
        f"Simulated low-dose CT ({args.dose:g} of full dose, projection domain) from pydicom-data "
        f"{SOURCE_NAME}; made by scripts/make_sample.py",
    )
    ds.SeriesDescription = f"medclear sample: simulated {int(args.dose * 100)}% dose"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_dicom(args.out, ds)
    print(f"wrote {args.out} ({args.dose:g} dose, seed {args.seed})")


if __name__ == "__main__":
    main()
