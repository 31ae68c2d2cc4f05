"""A stand-in for 3D Slicer's Python API that records what ``workflows/slicer/review.py`` asks of it.

Only the calls the review script makes exist, with Slicer's names and signatures (checked against
Slicer 5.6's source in ``test_slicer_api.py``), so a misspelt or unexpected call fails the test.
Volumes are read from real NIfTI files with nibabel: the array comes back in Slicer's ``(k, j, i)``
order and the IJK-to-RAS matrix is the file's affine, as Slicer gives them for a NIfTI file whose
sform and qform agree.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REVIEW_SCRIPT = Path(__file__).resolve().parents[2] / "workflows" / "slicer" / "review.py"
COLOUR_TABLES = {
    "Inferno": "vtkMRMLColorTableNodeFileInferno.txt",
    "Viridis": "vtkMRMLColorTableNodeFileViridis.txt",
}
VTK_SHORT_MIN, VTK_SHORT_MAX = -32768.0, 32767.0


class Matrix4x4:
    """vtk.vtkMatrix4x4, holding its elements in a numpy array."""

    def __init__(self) -> None:
        self.elements = np.eye(4)


class ScalarVolumeDisplayNode:
    """The display settings the script may change, with Slicer's defaults."""

    def __init__(self) -> None:
        self.colour_node_id: str | None = None
        self.auto_window_level = 1
        self.window_min_max: tuple[float, float] | None = None
        self.lower_threshold, self.upper_threshold = VTK_SHORT_MIN, VTK_SHORT_MAX
        self.apply_threshold = 0

    def SetAndObserveColorNodeID(self, node_id: str) -> None:
        self.colour_node_id = node_id

    def SetAutoWindowLevel(self, value: int) -> None:
        self.auto_window_level = value

    def SetWindowLevelMinMax(self, minimum: float, maximum: float) -> None:
        self.window_min_max = (minimum, maximum)

    def SetLowerThreshold(self, value: float) -> None:
        self.lower_threshold = value

    def SetUpperThreshold(self, value: float) -> None:
        self.upper_threshold = value

    def SetApplyThreshold(self, value: int) -> None:
        self.apply_threshold = value


class VolumeNode:
    """A loaded volume: the file it came from, its voxels and its geometry."""

    def __init__(self, node_id: str, path: Path, properties: dict) -> None:
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
        self.node_id, self.path, self.properties = node_id, path, dict(properties)
        self.array_kji = np.ascontiguousarray(np.swapaxes(data, 0, 2))  # (i, j, k[, c]) -> (k, j, i[, c])
        self.ijk_to_ras = np.asarray(image.affine, dtype=np.float64)
        self.display = ScalarVolumeDisplayNode()

    def GetID(self) -> str:
        return self.node_id

    def GetDisplayNode(self) -> ScalarVolumeDisplayNode:
        return self.display

    def GetIJKToRASMatrix(self, matrix: Matrix4x4) -> None:
        matrix.elements = self.ijk_to_ras.copy()


class ColourNode:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def GetID(self) -> str:
        return self.node_id


class FakeSlicer:
    """The ``slicer`` and ``vtk`` modules, and what was done through them."""

    def __init__(self) -> None:
        self.loaded: list[VolumeNode] = []
        self.layer_calls: list[dict] = []
        self.jumps: list[tuple[float, float, float, bool]] = []
        self.colour_tables = dict(COLOUR_TABLES)

        util = types.SimpleNamespace(
            loadVolume=self.load_volume,
            arrayFromVolume=self.array_from_volume,
            arrayFromVTKMatrix=self.array_from_vtk_matrix,
            setSliceViewerLayers=self.set_slice_viewer_layers,
            getFirstNodeByClassByName=self.first_node_by_class_by_name,
        )
        markups_logic = types.SimpleNamespace(JumpSlicesToLocation=self.jump_slices_to_location)
        self.slicer = types.ModuleType("slicer")
        self.slicer.util = util
        self.slicer.modules = types.SimpleNamespace(
            markups=types.SimpleNamespace(logic=lambda: markups_logic)
        )
        self.vtk = types.ModuleType("vtk")
        self.vtk.vtkMatrix4x4 = Matrix4x4

    def load_volume(
        self, filename: str, properties: dict | None = None, returnNode: bool = False
    ) -> VolumeNode:
        path = Path(filename)
        if not path.is_file():
            raise RuntimeError(f"Failed to load node from file: {filename}")
        node = VolumeNode(f"vtkMRMLScalarVolumeNode{len(self.loaded) + 1}", path, properties or {})
        self.loaded.append(node)
        return node

    @staticmethod
    def array_from_volume(volumeNode: VolumeNode) -> np.ndarray:
        return volumeNode.array_kji

    @staticmethod
    def array_from_vtk_matrix(vmatrix: Matrix4x4) -> np.ndarray:
        if not isinstance(vmatrix, Matrix4x4):
            raise RuntimeError("Input must be vtk.vtkMatrix3x3 or vtk.vtkMatrix4x4")
        return vmatrix.elements.copy()

    def set_slice_viewer_layers(
        self,
        background="keep-current",
        foreground="keep-current",
        label="keep-current",
        foregroundOpacity=None,
        labelOpacity=None,
        fit=False,
        rotateToVolumePlane=False,
    ) -> None:
        self.layer_calls.append(
            {
                "background": background,
                "foreground": foreground,
                "label": label,
                "foregroundOpacity": foregroundOpacity,
                "labelOpacity": labelOpacity,
                "fit": fit,
                "rotateToVolumePlane": rotateToVolumePlane,
            }
        )

    def first_node_by_class_by_name(self, className: str, name: str, scene=None) -> ColourNode | None:
        if className != "vtkMRMLColorTableNode" or name not in self.colour_tables:
            return None
        return ColourNode(self.colour_tables[name])

    def jump_slices_to_location(
        self, x: float, y: float, z: float, centered: bool, viewGroup: int = -1, exclude=None
    ) -> None:
        self.jumps.append((x, y, z, centered))


@pytest.fixture
def fake_slicer(monkeypatch: pytest.MonkeyPatch) -> FakeSlicer:
    """Installs the stand-in as the ``slicer`` and ``vtk`` modules for one test."""
    fake = FakeSlicer()
    monkeypatch.setitem(sys.modules, "slicer", fake.slicer)
    monkeypatch.setitem(sys.modules, "vtk", fake.vtk)
    return fake


@pytest.fixture
def review_script(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``workflows/slicer/review.py`` imported as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("medmdm_slicer_review", REVIEW_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module
