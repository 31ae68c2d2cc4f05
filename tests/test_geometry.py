"""medmdm.geometry: a map on the network grid lands on the source grid, for any plane and volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Resize, Spacing

from medmdm.errors import InputError
from medmdm.geometry import map_to_source

AXIAL = [[-0.8, 0, 0, 10], [0, -1.2, 0, 20], [0, 0, 2.5, -30], [0, 0, 0, 1]]
SAGITTAL = [[0, 0, 2.5, 10], [-0.8, 0, 0, 20], [0, -1.2, 0, -30], [0, 0, 0, 1]]  # columns run head-foot
CORONAL = [[-0.8, 0, 0, 10], [0, 0, 2.5, 20], [0, -1.2, 0, -30], [0, 0, 0, 1]]
OBLIQUE = [[-0.8 * 0.8, 0, 1.5, 10], [0.8 * 0.6, 0, 2.0, 20], [0, -1.2, 0, -30], [0, 0, 0, 1]]


def image(affine, shape) -> MetaTensor:
    return MetaTensor(torch.rand((1, *shape)), affine=torch.tensor(affine, dtype=torch.float64))


@pytest.mark.parametrize(
    "affine", [AXIAL, SAGITTAL, CORONAL, OBLIQUE], ids=["axial", "sagittal", "coronal", "oblique"]
)
def test_a_2d_map_goes_back_through_a_resize_in_any_plane(affine):
    source = image(affine, (40, 30))
    network = Resize((20, 15))(source)
    i, j = torch.meshgrid(torch.arange(20.0), torch.arange(15.0), indexing="ij")
    ramp = (i + 2 * j) / 48  # linear in the network's voxels, so linear interpolation is exact inside
    back = map_to_source(ramp, network, source)
    reference = map_to_source(ramp, Resize((20, 15))(image(AXIAL, (40, 30))), image(AXIAL, (40, 30)))
    assert back.shape == (40, 30)
    torch.testing.assert_close(back, reference, atol=1e-6, rtol=0)
    # the voxel centres of both grids coincide at the corners (Resize keeps the field of view)
    assert float(back[0, 0]) == pytest.approx(float(ramp[0, 0]), abs=0.05)


def test_a_3d_map_goes_back_through_a_spacing_change():
    source = image(SAGITTAL, (16, 12, 10))
    network = Spacing(pixdim=(1.6, 2.4, 5.0))(source)
    values = torch.ones(network.shape[1:])
    back = map_to_source(values, network, source)
    assert back.shape == (16, 12, 10)
    assert float(back[:15, :11, :9].min()) == pytest.approx(1.0)  # inside the network's field of view


def test_a_network_grid_out_of_the_plane_is_refused():
    source = image(AXIAL, (8, 8))
    tilted = MetaTensor(torch.rand((1, 8, 8)), affine=torch.tensor(SAGITTAL, dtype=torch.float64))
    with pytest.raises(InputError, match="plane"):
        map_to_source(torch.rand(8, 8), tilted, source)
    singular = MetaTensor(torch.rand((1, 8, 8)), affine=torch.tensor(np.diag([1.0, 0, 1, 1])))
    with pytest.raises(InputError, match="singular"):
        map_to_source(torch.rand(8, 8), singular, source)
