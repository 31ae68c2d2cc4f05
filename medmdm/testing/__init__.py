"""Models whose right explanation is known by construction, and synthetic images, for tests and benchmarks."""

from medmdm.testing.images import box_image, region_mask
from medmdm.testing.models import BoxModel, EitherRegionModel, Region

__all__ = ["BoxModel", "EitherRegionModel", "Region", "box_image", "region_mask"]
