"""MONAI Bundles: load a local bundle folder's classifier and preprocessing (:func:`load_bundle`), and
find the demo bundles that ship with medmdm (:func:`demo_bundle_path`)."""

from __future__ import annotations

from medmdm.bundle.demo import demo_bundle_path
from medmdm.bundle.loader import Bundle, load_bundle

__all__ = ["Bundle", "demo_bundle_path", "load_bundle"]
