"""Models whose right explanation is known by construction, and synthetic images, to test a setup.

- :class:`BoxModel`, :class:`EitherRegionModel` and :data:`Region` (:mod:`~medmdm.testing.models`):
  analytic classifiers whose evidence lies in known regions.
- :func:`box_image` and :func:`region_mask` (:mod:`~medmdm.testing.images`): bright boxes on a noisy
  background, and the boxes' masks.
- :class:`PrototypeNet` (:mod:`~medmdm.testing.prototypes`): a ProtoPNet-style classifier whose
  prototypes can be set to known patches.
- :class:`ThresholdSegmenter` (:mod:`~medmdm.testing.segmentation`): a segmentation model whose output
  at a voxel depends on that voxel only.
- :class:`ViTClassifier` (:mod:`~medmdm.testing.vit`): MONAI's ViT returning its class logits only.
- :func:`lesion_cnn`, :func:`lesion_images` and :func:`train_lesion_cnn` (:mod:`~medmdm.testing.lesions`):
  a small CNN trained in seconds to find bright round lesions, and its images.

The phantom and DICOM study generators, test bundles and DICOM validation that medmdm's own tests,
workflows and benchmarks use are in :mod:`medmdm.testing.internal`, which is not a supported API.
"""

from medmdm.testing.images import box_image, region_mask
from medmdm.testing.lesions import lesion_cnn, lesion_images, train_lesion_cnn
from medmdm.testing.models import BoxModel, EitherRegionModel, Region
from medmdm.testing.prototypes import PrototypeNet
from medmdm.testing.segmentation import ThresholdSegmenter
from medmdm.testing.vit import ViTClassifier

__all__ = [
    "BoxModel",
    "EitherRegionModel",
    "PrototypeNet",
    "Region",
    "ThresholdSegmenter",
    "ViTClassifier",
    "box_image",
    "lesion_cnn",
    "lesion_images",
    "region_mask",
    "train_lesion_cnn",
]
