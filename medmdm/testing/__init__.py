"""Models whose right explanation is known by construction, and synthetic images, for tests and benchmarks."""

from medmdm.testing.dicom_studies import study_image, write_ct_series, write_radiograph_dicom
from medmdm.testing.images import box_image, region_mask
from medmdm.testing.lesions import lesion_cnn, lesion_images, train_lesion_cnn
from medmdm.testing.models import BoxModel, EitherRegionModel, Region
from medmdm.testing.phantoms import Case, ct_case, radiograph_case
from medmdm.testing.prototypes import PrototypeNet
from medmdm.testing.segmentation import ThresholdSegmenter
from medmdm.testing.vit import ViTClassifier

__all__ = [
    "BoxModel",
    "Case",
    "EitherRegionModel",
    "PrototypeNet",
    "Region",
    "ThresholdSegmenter",
    "ViTClassifier",
    "box_image",
    "ct_case",
    "lesion_cnn",
    "lesion_images",
    "radiograph_case",
    "region_mask",
    "study_image",
    "train_lesion_cnn",
    "write_ct_series",
    "write_radiograph_dicom",
]
