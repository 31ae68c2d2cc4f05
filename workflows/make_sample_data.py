"""Write medmdm's sample studies into sample_data/studies, each with its nodule mask.

    python workflows/make_sample_data.py          # after workflows/train_demo_bundles.py

- ``cr_lesion.dcm``: a chest radiograph (CR, one DICOM file), ``cr_lesion.nii.gz`` the same image
  as NIfTI and ``cr_lesion_mask.nii.gz`` its nodule;
- ``ct_nodule/``: a chest CT series (one DICOM file per slice, names and InstanceNumbers shuffled),
  ``ct_nodule.nii.gz`` and ``ct_nodule_mask.nii.gz``.

Each is the first phantom with one clear nodule, from the bundle's held-out seeds (never trained
on), that its demo bundle calls positive with probability at least 0.95 while the same phantom
without its nodule is called negative. The NIfTI files are written with the study's MetaTensor as
reference, so they share its affine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from train_demo_bundles import parse_bundle, study_transforms

from medmdm.io import Study, load_study
from medmdm.testing.internal.dicom_studies import write_ct_series, write_radiograph_dicom
from medmdm.testing.internal.phantoms import Case, ct_case, radiograph_case
from medmdm.writers import atomic_path, write_nifti_image, write_nifti_overlay

REPOSITORY = Path(__file__).resolve().parents[1]
README = """# medmdm sample data

Synthetic, for demonstration only: phantoms from `medmdm.testing.internal.phantoms`, no patient data.

- `bundles/radiograph_lesion_2d`, `bundles/ct_nodule_3d`: two small trained MONAI bundles (lesion /
  no lesion), each with `configs/`, `models/model.pt` and `docs/README.md` (data, preprocessing,
  held-out accuracy). Made by `python workflows/train_demo_bundles.py`.
- `bundles/vit_lesion_2d`, `bundles/protopnet_lesion_2d`, `bundles/ct_nodule_seg_3d`: a MONAI ViT and a
  ProtoPNet-style network for the radiographs, and a MONAI UNet that segments the CT nodules, for
  class, prototype and region targets (`docs/targets/`), laid out the same way. Made by
  `python workflows/train_target_models.py`.
- `studies/cr_lesion.dcm`: a chest radiograph, one CR DICOM file; `studies/cr_lesion.nii.gz` the same
  image as NIfTI; `studies/cr_lesion_mask.nii.gz` its nodule (1 inside).
- `studies/ct_nodule/`: a chest CT series, one DICOM file per slice (names and InstanceNumbers not in
  slice order); `studies/ct_nodule.nii.gz` and `studies/ct_nodule_mask.nii.gz` likewise.

The masks and NIfTI images share their study's affine. Each study is the first held-out phantom
(a seed the bundles never trained on) with one clear nodule that its bundle classifies as positive
with probability at least 0.95, while the same phantom without its nodule is classified negative:

{chosen}

Regenerate everything (bundles first, a few minutes each on two CPU cores):

```bash
python workflows/train_demo_bundles.py
python workflows/make_sample_data.py
python workflows/train_target_models.py
```
"""
MIN_PROBABILITY = 0.95
MAX_TRIES = 200


@dataclass(frozen=True)
class Sample:
    """One sample study: how to make it, where it goes, and the bundle that must find its nodule."""

    name: str
    dicom_name: str
    bundle: str
    case: Callable[..., Case]
    write: Callable[..., Path]
    min_mask_voxels: int  # a clear nodule: at least this large


SAMPLES = (
    Sample(
        "cr_lesion", "cr_lesion.dcm", "radiograph_lesion_2d", radiograph_case, write_radiograph_dicom, 250
    ),
    Sample("ct_nodule", "ct_nodule", "ct_nodule_3d", ct_case, write_ct_series, 250),
)


class Classifier:
    """A demo bundle run as medmdm runs it: preprocessing without loading steps, then the network."""

    def __init__(self, folder: Path) -> None:
        parser = parse_bundle(folder)
        self.transforms = study_transforms(parser)
        self.network = parser.get_parsed_content("network_def").eval()
        self.network.load_state_dict(torch.load(folder / "models" / "model.pt", weights_only=True))
        metadata = json.loads((folder / "configs" / "metadata.json").read_text())
        self.held_out_seeds = range(*metadata["medmdm_training"]["held_out_seeds"])
        self.finding = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]["1"]

    def probability(self, study: Study) -> float:
        """Probability of the positive class (channel 1)."""
        x = self.transforms({"image": study.image})["image"].as_tensor()[None]
        with torch.no_grad():
            return float(torch.softmax(self.network(x), dim=1)[0, 1])


def make_sample(sample: Sample, classifier: Classifier, studies: Path) -> tuple[int, float, float]:
    """Write one sample study and its NIfTI files.

    Returns
    -------
    tuple
        The seed, and the positive probability with and without the nodule.
    """
    for seed in classifier.held_out_seeds[:MAX_TRIES]:
        case = sample.case(seed, lesions=1)
        if case.mask.sum() < sample.min_mask_voxels:
            continue
        with tempfile.TemporaryDirectory(dir=studies) as scratch:
            written = sample.write(case, Path(scratch) / sample.dicom_name, seed=seed)
            study = load_study(written)
            probability = classifier.probability(study)
            without = sample.write(sample.case(seed, lesions=0), Path(scratch) / "without", seed=seed)
            probability_without = classifier.probability(load_study(without))
            if probability < MIN_PROBABILITY or probability_without >= 0.5:
                continue
            final = studies / sample.dicom_name
            if final.is_dir():
                shutil.rmtree(final)
            written.replace(final)
        study = load_study(final)
        write_nifti_image(study.image, studies / f"{sample.name}.nii.gz")
        write_nifti_overlay(torch.from_numpy(case.mask), study.image, studies / f"{sample.name}_mask.nii.gz")
        return seed, probability, probability_without
    raise RuntimeError(
        f"{sample.name}: no held-out seed in {MAX_TRIES} gave a clear, correctly classified nodule"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the sample studies and print what was chosen."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--out", type=Path, default=REPOSITORY / "sample_data", help="default sample_data")
    cli.add_argument("--bundles", type=Path, help="folder of the demo bundles (default OUT/bundles)")
    args = cli.parse_args(argv)
    bundles = args.bundles or args.out / "bundles"
    studies = args.out / "studies"
    studies.mkdir(parents=True, exist_ok=True)
    chosen = []
    for sample in SAMPLES:
        classifier = Classifier(bundles / sample.bundle)
        seed, probability, probability_without = make_sample(sample, classifier, studies)
        chosen.append(
            f"- `{sample.dicom_name}`: seed {seed}; `{sample.bundle}` gives {classifier.finding} "
            f"probability {probability:.3f}, and {probability_without:.3f} to the same phantom without "
            "its nodule"
        )
        print(chosen[-1][2:], flush=True)
    with atomic_path(args.out / "README.md") as tmp:
        tmp.write_text(README.format(chosen="\n".join(chosen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
