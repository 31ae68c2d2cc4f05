"""MONAI Bundles: load a local bundle folder's network, inferer, preprocessing and postprocessing
(:func:`load_bundle`; :mod:`medmdm.bundle.inference` runs them as the bundle does), and find the demo
bundles that ship with medmdm (:func:`demo_bundle_path`)."""

from __future__ import annotations

from medmdm.bundle.demo import demo_bundle_path
from medmdm.bundle.loader import Bundle, load_bundle

__all__ = ["Bundle", "demo_bundle_path", "load_bundle"]
