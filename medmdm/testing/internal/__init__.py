"""Generators of synthetic studies, bundles and validation helpers for medmdm's own tests,
workflows and benchmarks.

Not a supported API: these modules may change without notice. They live in the installed package
only because the workflows run as scripts and need them importable. Import each module by its full
path, e.g. ``from medmdm.testing.internal.phantoms import ct_case``; this package imports nothing.

- :mod:`~medmdm.testing.internal.phantoms`: chest radiograph and CT phantoms with known nodules,
  by integer seed.
- :mod:`~medmdm.testing.internal.dicom_studies`: phantom cases written as DICOM (a CR file, a CT
  series) and the image that reading them back gives.
- :mod:`~medmdm.testing.internal.bundles`: small bundle folders and NIfTI studies for tests.
- :mod:`~medmdm.testing.internal.dicom_validation`: ``dciodvfy`` validation of written DICOM.
"""
