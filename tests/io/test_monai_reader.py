"""StudyReader through MONAI's LoadImage / LoadImaged: same image and affine as load_study."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import NibabelReader, PydicomReader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged
from pydicom.data import get_testdata_file

from medmdm.errors import InputError
from medmdm.io import StudyReader, load_study

pytestmark = [
    pytest.mark.filterwarnings("ignore:nvImageCodec is not available"),
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader"),
]

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
NIFTI_AFFINE = np.array([[0.0, -0.8, 0.1, 10.0], [0.9, 0.0, 0.0, -20.0], [0.0, 0.05, 2.0, 5.5], [0, 0, 0, 1]])


def _nifti(path, shape=(6, 7, 5), affine=NIFTI_AFFINE, seed=0):
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.fixture(params=["nifti", "nifti-2-channels", "ct-file", "rgb-file", "series", "oblique-series"])
def study_path(request, tmp_path):
    """A path load_study reads, of each kind, grey and RGB."""
    return {
        "nifti": lambda: _nifti(tmp_path / "vol.nii.gz"),
        "nifti-2-channels": lambda: _nifti(tmp_path / "two.nii", shape=(6, 7, 5, 2)),
        "ct-file": lambda: get_testdata_file("CT_small.dcm"),
        "rgb-file": lambda: get_testdata_file("SC_rgb_rle.dcm"),
        "series": lambda: request.getfixturevalue("ct_series").folder,
        "oblique-series": lambda: request.getfixturevalue("oblique_series").folder,
    }[request.param]()


def _load(path, **kwargs):
    return LoadImage(reader=StudyReader(), image_only=True, **kwargs)(path)


def test_load_image_gives_load_study_image_and_affine(study_path):
    expected = load_study(study_path).image
    image = _load(study_path, ensure_channel_first=True)
    assert image.shape == expected.shape
    assert image.dtype == torch.float32
    assert torch.equal(image.as_tensor(), expected.as_tensor())
    assert torch.equal(image.affine, expected.affine)
    assert image.meta["filename_or_obj"] == str(study_path)
    assert image.meta["space"] == "RAS"


def test_without_channel_first_the_array_is_shaped_as_monai_readers_shape_theirs(study_path):
    expected = load_study(study_path).image
    image = _load(study_path)
    channels, *spatial = expected.shape
    if channels == 1:
        assert tuple(image.shape) == tuple(spatial)
        assert np.isnan(image.meta["original_channel_dim"])
    else:
        assert tuple(image.shape) == (*spatial, channels)
        assert image.meta["original_channel_dim"] == -1
    assert tuple(image.meta["spatial_shape"]) == tuple(spatial)


def test_load_imaged_then_channel_first_in_a_compose(ct_series):
    load = Compose([LoadImaged(keys="image", reader=StudyReader()), EnsureChannelFirstd(keys="image")])
    image = load({"image": ct_series.folder})["image"]
    expected = load_study(ct_series.folder).image
    assert torch.equal(image.as_tensor(), expected.as_tensor())
    assert torch.equal(image.affine, expected.affine)
    assert image.meta["series_uid"] == ct_series.series_uid
    assert image.meta["modality"] == "CT"
    np.testing.assert_allclose(image.meta["spacing"], (0.9, 0.7, 2.5))


def test_nifti_agrees_with_monai_nibabel_reader(tmp_path):
    path = _nifti(tmp_path / "vol.nii.gz")
    ours = _load(path, ensure_channel_first=True)
    theirs = LoadImage(reader=NibabelReader(), image_only=True, ensure_channel_first=True)(path)
    assert torch.equal(ours.as_tensor(), theirs.as_tensor())
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-6)


def _two_series(series_writer, tmp_path):
    folder = tmp_path / "study"
    first = series_writer(folder / "a", description="first")
    second = series_writer(folder / "b", description="second", n_slices=5, seed=1)
    return folder, first, second


def test_dotted_name_with_series_uid(series_writer, tmp_path):
    folder, _, second = _two_series(series_writer, tmp_path)
    load = LoadImage(reader="medmdm.io.StudyReader", series_uid=second.series_uid, ensure_channel_first=True)
    assert isinstance(load.readers[-1], StudyReader)
    image = load(folder)
    assert image.shape == (1, 20, 16, 5)
    assert image.meta["series_uid"] == second.series_uid
    assert torch.equal(image.as_tensor(), load_study(folder, second.series_uid).image.as_tensor())


def test_bundle_config_names_the_reader(ct_series):
    config = {
        "load": {
            "_target_": "LoadImaged",
            "keys": "image",
            "reader": "medmdm.io.StudyReader",
            "ensure_channel_first": True,
        }
    }
    load = ConfigParser(config).get_parsed_content("load")
    image = load({"image": str(ct_series.folder)})["image"]
    assert torch.equal(image.as_tensor(), load_study(ct_series.folder).image.as_tensor())


def _slice_sources(volume, spec):
    """For each slice of a (1, cols, rows, Z) volume: the index (slice order) of the file it came from."""
    hu = spec.stored * spec.slope + spec.intercept
    sources = []
    for k in range(volume.shape[-1]):
        plane = volume[0, :, :, k].numpy().T
        differences = np.abs(hu - plane).reshape(len(hu), -1).max(axis=1)
        assert differences.min() == 0  # every slice is one file's pixels
        sources.append(int(differences.argmin()))
    return sources


def _misplaced_slices(volume, spec):
    """Slices whose position from the affine is not the ImagePositionPatient of the file they hold."""
    sources = _slice_sources(volume, spec)
    voxels = np.array([[0, 0, k, 1] for k in range(volume.shape[-1])], dtype=float)
    world = (volume.affine.numpy() @ voxels.T).T[:, :3]
    wanted = spec.positions[sources] * LPS_TO_RAS
    return np.flatnonzero(np.abs(world - wanted).max(axis=1) > 1e-3).tolist()


@pytest.mark.parametrize("series", ["ct_series", "oblique_series"])
def test_slices_follow_position_not_instance_number(series, request):
    spec = request.getfixturevalue(series)
    image = _load(spec.folder, ensure_channel_first=True)
    assert _slice_sources(image, spec) == list(range(len(spec.files)))
    assert _misplaced_slices(image, spec) == []


def test_monai_pydicom_reader_follows_instance_number(ct_series):
    instance_numbers = [int(pydicom.dcmread(f).InstanceNumber) for f in ct_series.files]  # slice order
    assert instance_numbers != sorted(instance_numbers)
    assert instance_numbers != sorted(instance_numbers, reverse=True)
    image = LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True)(ct_series.folder)
    assert _slice_sources(image, ct_series) == np.argsort(instance_numbers).tolist()
    assert _misplaced_slices(image, ct_series) != []


def _raises_input_error(path, named, match, load=None):
    load = load or LoadImage(reader=StudyReader(), image_only=True)
    with pytest.raises(InputError, match=match) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(named) in message


def test_series_with_a_missing_slice_is_resampled_not_stacked(ct_series):
    ct_series.files[3].unlink()
    # MONAI's own reader stacks the seven files without a word, one slice short of the volume
    fallback = LoadImage(reader=PydicomReader(), image_only=True)(ct_series.folder)
    assert fallback.shape[-1] == len(ct_series.files) - 1
    with pytest.warns(UserWarning, match="irregular slice gaps"):
        image = LoadImage(reader=StudyReader(), image_only=True)(ct_series.folder)
    assert image.shape[-1] == len(ct_series.files)


def test_series_in_two_parts_is_an_input_error_not_a_fallback(series_writer, tmp_path):
    spec = series_writer(tmp_path / "ct", n_slices=14)
    for f in spec.files[3:11]:
        f.unlink()
    _raises_input_error(spec.folder, spec.folder, "not one volume")


def test_missing_path_is_an_input_error(tmp_path):
    _raises_input_error(tmp_path / "nothing.nii.gz", tmp_path / "nothing.nii.gz", "no such file")


def test_several_series_without_series_uid_is_an_input_error(series_writer, tmp_path):
    folder, first, second = _two_series(series_writer, tmp_path)
    _raises_input_error(folder, folder, f"2 series.*({first.series_uid}|{second.series_uid})")


def test_inside_compose_the_input_error_is_the_cause(tmp_path):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 40)
    load = Compose([LoadImaged(keys="image", reader=StudyReader())])
    with pytest.raises(RuntimeError, match="applying transform") as err:
        load({"image": path})
    assert isinstance(err.value.__cause__, InputError)
    assert str(path) in str(err.value.__cause__)


def test_several_files_are_the_channels_of_one_image(tmp_path):
    paths = [_nifti(tmp_path / f"{name}.nii.gz", seed=seed) for seed, name in enumerate(["t1", "t2"])]
    image = _load(paths, ensure_channel_first=True)
    expected = torch.cat([load_study(p).image.as_tensor() for p in paths])
    assert torch.equal(image.as_tensor(), expected)
    assert torch.equal(image.affine, load_study(paths[0]).affine)
    assert image.meta["filename_or_obj"] == str(paths[0])


@pytest.mark.parametrize(
    ("shape", "affine", "match"),
    [
        ((6, 7, 4), NIFTI_AFFINE, "spatial shape"),
        ((6, 7, 5), np.diag([1.0, 1.0, 2.0, 1.0]), "affine differs"),
    ],
)
def test_files_on_different_grids_are_an_input_error(tmp_path, shape, affine, match):
    first = _nifti(tmp_path / "t1.nii.gz")
    second = _nifti(tmp_path / "t2.nii.gz", shape=shape, affine=affine)
    _raises_input_error([first, second], second, match)


def test_verify_suffix(ct_series, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    reader = StudyReader()
    assert reader.verify_suffix(ct_series.folder)
    assert reader.verify_suffix(ct_series.files[0])  # no suffix, DICOM preamble
    assert reader.verify_suffix([tmp_path / "a.nii.gz", tmp_path / "b.NII"])
    assert reader.verify_suffix(str(tmp_path / "not_yet.dcm"))
    assert not reader.verify_suffix(text)
    assert reader.verify_suffix([tmp_path / "frame.png", tmp_path / "patch.TIFF", tmp_path / "photo.jpg"])
    assert not reader.verify_suffix([ct_series.folder, tmp_path / "image.bmp"])


def test_registered_reader_is_chosen_by_suffix(ct_series):
    load = LoadImage(image_only=True, ensure_channel_first=True)
    load.register(StudyReader())
    image = load(ct_series.folder)
    assert _misplaced_slices(image, ct_series) == []
    assert torch.equal(image.as_tensor(), load_study(ct_series.folder).image.as_tensor())
