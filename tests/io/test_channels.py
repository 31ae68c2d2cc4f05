"""Several co-registered files read as the channels of one study, and a 4D NIfTI whose 4th axis holds them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from medmdm.errors import InputError
from medmdm.io import StudyReader, load_study

SHAPE = (10, 8, 6)
AFFINE = np.array([[-1.2, 0, 0, 40.0], [0, -0.8, 0, 30.0], [0, 0, 2.5, -12.0], [0, 0, 0, 1]])
SEQUENCES = ("t1", "t1c", "t2", "flair")


def sequences(folder: Path, affine: np.ndarray = AFFINE) -> tuple[list[Path], np.ndarray]:
    """One NIfTI per sequence, each filled with its own values; the paths and the (4, *SHAPE) stack."""
    rng = np.random.default_rng(0)
    offsets = np.arange(len(SEQUENCES))[:, None, None, None]
    volumes = (rng.normal(size=(len(SEQUENCES), *SHAPE)) + offsets).astype(np.float32)
    paths = []
    for name, volume in zip(SEQUENCES, volumes, strict=True):
        nib.save(nib.Nifti1Image(volume, affine), folder / f"{name}.nii.gz")
        paths.append(folder / f"{name}.nii.gz")
    return paths, volumes


def test_files_are_channels_in_the_order_given(tmp_path):
    paths, volumes = sequences(tmp_path)
    study = load_study(paths)
    assert tuple(study.image.shape) == (4, *SHAPE) and study.size == SHAPE
    np.testing.assert_array_equal(study.image.numpy(), volumes)
    np.testing.assert_allclose(study.affine.numpy(), AFFINE, atol=1e-6)
    assert study.channel_files == tuple(paths) and study.path == paths[0] and study.kind == "nifti"
    reordered = load_study(paths[::-1])
    np.testing.assert_array_equal(reordered.image.numpy(), volumes[::-1])


def test_one_4d_nifti_reads_as_the_same_study(tmp_path):
    paths, volumes = sequences(tmp_path)
    nib.save(nib.Nifti1Image(np.moveaxis(volumes, 0, -1), AFFINE), tmp_path / "brats.nii.gz")
    stacked, separate = load_study(tmp_path / "brats.nii.gz"), load_study(paths)
    np.testing.assert_array_equal(stacked.image.numpy(), separate.image.numpy())
    np.testing.assert_array_equal(stacked.affine.numpy(), separate.affine.numpy())
    assert stacked.channel_files == ()
    mixed = load_study([tmp_path / "brats.nii.gz", paths[0]])  # a 4D file gives all its channels
    assert mixed.image.shape[0] == 5 and mixed.channel_files == (tmp_path / "brats.nii.gz",) * 4 + (paths[0],)


def test_a_single_path_in_a_list_is_that_study(tmp_path):
    paths, volumes = sequences(tmp_path)
    study = load_study([paths[2]])
    np.testing.assert_array_equal(study.image.numpy()[0], volumes[2])
    assert study.channel_files == ()


def test_affines_within_a_thousandth_of_a_millimetre_share_the_grid(tmp_path):
    paths, _ = sequences(tmp_path)
    near = AFFINE.copy()
    near[0, 3] += 5e-4
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), near), tmp_path / "near.nii.gz")
    assert load_study([paths[0], tmp_path / "near.nii.gz"]).image.shape[0] == 2


@pytest.mark.parametrize(
    ("shape", "shift", "said"),
    [
        ((10, 8, 5), 0.0, r"spatial shape \(10, 8, 5\) differs from \(10, 8, 6\)"),
        (SHAPE, 0.01, "by up to 0.01 mm"),
    ],
    ids=["shape", "affine"],
)
def test_files_on_different_grids_are_refused_naming_both(tmp_path, shape, shift, said):
    paths, _ = sequences(tmp_path)
    moved = AFFINE.copy()
    moved[1, 3] += shift
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), moved), tmp_path / "other.nii.gz")
    with pytest.raises(InputError, match=said) as error:
        load_study([paths[0], paths[1], tmp_path / "other.nii.gz"])
    message = str(error.value)
    assert (
        message.startswith(str(tmp_path / "other.nii.gz"))
        and str(paths[0]) in message
        and "\n" not in message
    )


def test_no_path_is_refused():
    with pytest.raises(InputError, match="no study to read"):
        load_study([])


def test_monai_load_image_reads_the_files_as_channels(tmp_path):
    paths, volumes = sequences(tmp_path)
    image = LoadImage(reader=StudyReader(), image_only=True, ensure_channel_first=True)(paths)
    np.testing.assert_array_equal(np.asarray(image), volumes)
