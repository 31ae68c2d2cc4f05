"""Models whose right explanation is known by construction, and synthetic images, for tests and benchmarks."""

from medmdm.testing.images import box_image, region_mask
from medmdm.testing.lesions import lesion_cnn, lesion_images, train_lesion_cnn
from medmdm.testing.models import BoxModel, EitherRegionModel, Region
from medmdm.testing.prototypes import PrototypeNet
from medmdm.testing.segmentation import ThresholdSegmenter

__all__ = [
    "BoxModel",
    "EitherRegionModel",
    "PrototypeNet",
    "Region",
    "ThresholdSegmenter",
    "box_image",
    "lesion_cnn",
    "lesion_images",
    "region_mask",
    "train_lesion_cnn",
]
