"""workflows/slicer/review.py and its stand-in (conftest.py) use only names that 3D Slicer 5.6 has.

The names and parameters below were read from Slicer's source at tag v5.6.2 (github.com/Slicer/Slicer,
commit f10cd8c229b50e4d96e55743385f17482214433a); each entry names the file. Slicer's Python wraps the
C++ methods of MRML nodes and module logics under their C++ names. The review script is parsed (not
run): every ``slicer.util`` function it calls, with its keywords, every module logic, every VTK-style
method (``GetDisplayNode``, ``SetLowerThreshold``...) and every colour table must be listed here, and
the stand-in must offer the same functions with the same parameters, so that a name the stand-in accepts
is one Slicer 5.6 has.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import nibabel as nib
import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "workflows" / "slicer" / "review.py"
SLICER_VERSION = "5.6.2"

# Base/Python/slicer/util.py: the parameters of each function, in order.
UTIL_FUNCTIONS = {
    "loadVolume": ("filename", "properties", "returnNode"),
    "arrayFromVolume": ("volumeNode",),
    "arrayFromVTKMatrix": ("vmatrix",),
    "setSliceViewerLayers": (
        "background",
        "foreground",
        "label",
        "foregroundOpacity",
        "labelOpacity",
        "fit",
        "rotateToVolumePlane",
    ),
    "getFirstNodeByClassByName": ("className", "name", "scene"),
}
# C++ methods, by the header that declares them (Libs/MRML/Core unless said).
METHODS = {
    "GetID": "vtkMRMLNode.h (vtkGetStringMacro(ID))",
    "GetDisplayNode": "vtkMRMLDisplayableNode.h",
    "GetIJKToRASMatrix": "vtkMRMLVolumeNode.h",
    "SetAndObserveColorNodeID": "vtkMRMLDisplayNode.h",
    "SetAutoWindowLevel": "vtkMRMLScalarVolumeDisplayNode.h (vtkSetMacro)",
    "SetWindowLevelMinMax": "vtkMRMLScalarVolumeDisplayNode.h",
    "SetApplyThreshold": "vtkMRMLScalarVolumeDisplayNode.h",
    "SetLowerThreshold": "vtkMRMLScalarVolumeDisplayNode.h",
    "SetUpperThreshold": "vtkMRMLScalarVolumeDisplayNode.h",
    "JumpSlicesToLocation": "Modules/Loadable/Markups/Logic/vtkSlicerMarkupsLogic.h",
}
JUMP_PARAMETERS = ("x", "y", "z", "centered", "viewGroup", "exclude")  # vtkSlicerMarkupsLogic.h
MODULE_LOGICS = {"markups"}  # slicer.modules.<name>.logic()
VTK_CLASSES = {"vtkMatrix4x4"}
# Base/Logic/Resources/ColorFiles/<name>.txt are loaded as nodes named <name> with the ID
# "vtkMRMLColorTableNodeFile" + file name (vtkMRMLColorLogic::GetFileColorNodeID); built-in tables
# have the ID "vtkMRMLColorTableNode" + type name (GetColorTableNodeID; vtkMRMLColorTableNode.cxx: "Iron").
COLOUR_FILES = {"Inferno", "Viridis"}
BUILT_IN_COLOUR_IDS = {"vtkMRMLColorTableNodeIron"}


def attribute_chain(node: ast.AST) -> list[str]:
    """``slicer.util.loadVolume`` as ``["slicer", "util", "loadVolume"]``; ``[]`` for anything else."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(names)]
    return []


def calls_in_review() -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(SCRIPT.read_text())) if isinstance(node, ast.Call)]


def test_review_calls_only_what_slicer_5_6_has() -> None:
    util, logics, methods, vtk_classes = [], set(), set(), set()
    for call in calls_in_review():
        chain = attribute_chain(call.func)
        if chain[:2] == ["slicer", "util"]:
            name = chain[2]
            util.append(name)
            assert name in UTIL_FUNCTIONS, f"slicer.util.{name} is not in Slicer {SLICER_VERSION}"
            parameters = UTIL_FUNCTIONS[name]
            assert len(call.args) <= len(parameters)
            assert {k.arg for k in call.keywords} <= set(parameters[len(call.args) :]), name
        elif chain[:2] == ["slicer", "modules"]:
            assert chain[3:] == ["logic"] and chain[2] in MODULE_LOGICS, ".".join(chain)
            logics.add(chain[2])
        elif chain[:1] == ["vtk"]:
            vtk_classes.add(chain[1])
        elif isinstance(call.func, ast.Attribute) and call.func.attr[:1].isupper():
            methods.add(call.func.attr)
    assert set(util) == set(UTIL_FUNCTIONS)  # every listed name is used: the list is the script's
    assert logics == MODULE_LOGICS and vtk_classes == VTK_CLASSES
    assert methods == set(METHODS), sorted(methods ^ set(METHODS))
    jump = next(c for c in calls_in_review() if getattr(c.func, "attr", "") == "JumpSlicesToLocation")
    assert len(jump.args) + len(jump.keywords) <= len(JUMP_PARAMETERS)


def test_colour_tables_are_slicer_5_6_nodes(review_script) -> None:
    assert set(review_script.COLOUR_NODE_NAMES) <= COLOUR_FILES
    assert review_script.FALLBACK_COLOUR_NODE_ID in BUILT_IN_COLOUR_IDS


def test_stand_in_has_slicer_5_6_names_and_parameters(fake_slicer, tmp_path: Path) -> None:
    for name, function in vars(fake_slicer.slicer.util).items():
        assert name in UTIL_FUNCTIONS, name
        assert tuple(inspect.signature(function).parameters) == UTIL_FUNCTIONS[name], name
    assert set(vars(fake_slicer.slicer.util)) == set(UTIL_FUNCTIONS)
    logic = fake_slicer.slicer.modules.markups.logic()
    assert tuple(inspect.signature(logic.JumpSlicesToLocation).parameters) == JUMP_PARAMETERS
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), path)
    volume = fake_slicer.slicer.util.loadVolume(str(path))
    colour = fake_slicer.slicer.util.getFirstNodeByClassByName("vtkMRMLColorTableNode", "Inferno")
    for node in (volume, volume.GetDisplayNode(), colour):
        public = {n for n in vars(type(node)) if n[:1].isupper()}
        assert public <= set(METHODS), f"{type(node).__name__}: {sorted(public - set(METHODS))}"
    for name, node_id in fake_slicer.colour_tables.items():
        assert name in COLOUR_FILES and node_id == f"vtkMRMLColorTableNodeFile{name}.txt"
