"""Loading a local MONAI Bundle folder: network, weights, preprocessing, metadata.

A bundle in model-zoo layout::

    DIR/configs/metadata.json        name, version, class names (network_data_format.outputs.pred.channel_def)
    DIR/configs/inference.json|yaml  network_def, preprocessing (a Compose of dictionary transforms)
    DIR/models/model.pt              a state dict, or a dict with a "model" entry (MONAI's CheckpointSaver)
    DIR/models/model.ts              or a TorchScript module
    DIR/scripts/                     optional, importable as ``scripts`` while the bundle loads

Nothing is downloaded. The preprocessing runs on a study read by :func:`medmdm.io.load_study`, so the
bundle's own ``LoadImage(d)``, ``EnsureChannelFirst(d)`` and ``AddChannel(d)`` steps are left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from medmdm.errors import BundleError, InputError, one_line
from medmdm.io.reader import Study

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
LOADING_TRANSFORMS = {
    "LoadImage",
    "LoadImaged",
    "EnsureChannelFirst",
    "EnsureChannelFirstd",
    "AddChannel",
    "AddChanneld",
}


@dataclass
class Bundle:
    """A classifier loaded from a bundle folder, ready to explain.

    Attributes
    ----------
    root : Path
        The bundle folder.
    name, version : str
        From ``configs/metadata.json`` (the folder name and ``""`` when absent).
    class_names : list of str
        Output channel names (``network_data_format.outputs.pred.channel_def``), ``[]`` when absent.
    network : torch.nn.Module
        In eval mode, on the CPU, with the bundle's weights.
    preprocessing : monai.transforms.Compose
        The bundle's preprocessing without its loading steps; takes ``{image_key: MetaTensor}``.
    image_key : str
        The key the preprocessing reads.
    spatial_dims : int or None
        2 or 3 when the metadata or the network tells, else None.
    input_channels : int or None
        Channels the network takes, when the metadata says so
        (``network_data_format.inputs.image.num_channels``).
    config_files : list of Path
        The configuration files read.
    weights : Path or None
        The weights file (None only with ``allow_random_weights``).
    weights_sha256 : str
        SHA-256 of the weights file, ``""`` without one.
    explain_options : dict
        Explainer options the bundle recommends for its images (``medmdm.explain_options`` in
        ``configs/metadata.json``, e.g. ``{"baseline": "blur"}``); each method takes those it has,
        and options given by the user win.
    """

    root: Path
    name: str
    version: str
    network: torch.nn.Module
    preprocessing: Compose
    image_key: str = "image"
    class_names: list[str] = field(default_factory=list)
    spatial_dims: int | None = None
    input_channels: int | None = None
    config_files: list[Path] = field(default_factory=list)
    weights: Path | None = None
    weights_sha256: str = ""
    explain_options: dict[str, Any] = field(default_factory=dict)

    def preprocess(self, study: Study) -> MetaTensor:
        """Run the bundle's preprocessing on a study.

        Returns
        -------
        monai.data.MetaTensor
            ``(1, C, *spatial)`` network input whose affine maps its voxels to the study's RAS space.
        """
        image = study.image.clone()
        image.meta["original_channel_dim"] = 0
        try:
            out = self.preprocessing({self.image_key: image})
        except Exception as error:
            raise InputError(
                f"{study.path}: the preprocessing of bundle {self.name} failed ({one_line(error)})"
            ) from error
        data = out[self.image_key] if isinstance(out, dict) else out
        if not isinstance(data, MetaTensor):
            raise BundleError(
                f"bundle {self.name}: preprocessing returned {type(data).__name__}, "
                "not a MetaTensor with an affine"
            )
        return data.float().unsqueeze(0)

    def summary(self) -> dict[str, Any]:
        """Plain-Python description for reports."""
        return {
            "name": self.name,
            "version": self.version,
            "path": str(self.root),
            "class_names": list(self.class_names),
            "config_files": [str(p) for p in self.config_files],
            "weights": str(self.weights) if self.weights else None,
            "weights_sha256": self.weights_sha256,
            "network": type(self.network).__name__,
            "explain_options": dict(self.explain_options),
        }


def load_bundle(
    root: str | Path,
    *,
    config_files: str | Path | Sequence[str | Path] | None = None,
    allow_random_weights: bool = False,
) -> Bundle:
    """Load a local bundle folder.

    Parameters
    ----------
    root : str or Path
        The bundle folder (model-zoo layout).
    config_files : path or list of paths, optional
        Configuration files to read, merged in order; relative names are looked up in ``root/configs``
        then ``root``. Default: ``configs/inference.json`` (or ``.yaml``/``.yml``).
    allow_random_weights : bool
        Keep the network's random initial weights when the bundle has no weights file (smoke tests).

    Returns
    -------
    Bundle

    Raises
    ------
    BundleError
        Missing folder, configs, ``network_def`` or weights; a config that does not parse; weights that do
        not fit the network. Each message names the bundle.
    """
    root = Path(root).expanduser().resolve()
    label = str(root)
    if not root.is_dir():
        raise BundleError(f"bundle {label}: no such folder")
    files = _config_files(root, config_files)
    metadata = _read_metadata(root)
    name = str(metadata.get("name") or root.name)
    parser = ConfigParser()
    try:
        parser.read_config([str(f) for f in files])
    except Exception as error:
        raise BundleError(
            f"bundle {name}: cannot parse {', '.join(f.name for f in files)} ({one_line(error)})"
        ) from error
    parser["bundle_root"] = str(root)
    with _bundle_scripts(root):
        network = _network_def(parser, root, name)
        preprocessing = _parsed_preprocessing(parser, name)
    return assemble_bundle(
        root, network, preprocessing, allow_random_weights=allow_random_weights, config_files=files
    )


def assemble_bundle(
    root: str | Path,
    network: torch.nn.Module | None,
    preprocessing: Any = None,
    *,
    allow_random_weights: bool = False,
    config_files: Sequence[Path] = (),
) -> Bundle:
    """Make a :class:`Bundle` from a network and a preprocessing already built from the bundle's config.

    Used where MONAI parsed the configs (``python -m monai.bundle run``); :func:`load_bundle` ends here too.

    Parameters
    ----------
    root : str or Path
        The bundle folder, for ``configs/metadata.json`` and ``models/model.pt`` (or ``model.ts``).
    network : torch.nn.Module or None
        The instantiated ``network_def``; None uses ``models/model.ts``.
    preprocessing : callable, optional
        The instantiated ``preprocessing`` (a Compose or one transform); its loading steps are dropped.
    allow_random_weights : bool
        Keep the network's initial weights when the bundle has no weights file.
    config_files : sequence of Path
        The config files the parts came from, for the report.
    """
    root = Path(root).expanduser().resolve()
    metadata = _read_metadata(root)
    name = str(metadata.get("name") or root.name)
    network, weights = _with_weights(network, root, name, allow_random_weights)
    network.eval()
    kept, image_key = _without_loading(preprocessing)
    return Bundle(
        root=root,
        name=name,
        version=str(metadata.get("version", "")),
        network=network,
        preprocessing=kept,
        image_key=image_key,
        class_names=_class_names(metadata),
        spatial_dims=_spatial_dims(metadata, network),
        input_channels=_input_channels(metadata),
        config_files=list(config_files),
        weights=weights,
        weights_sha256=_sha256(weights) if weights else "",
        explain_options=_explain_options(metadata, name),
    )


def _config_files(root: Path, config_files: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if config_files is None:
        for candidate in CONFIG_NAMES:
            if (root / "configs" / candidate).is_file():
                return [root / "configs" / candidate]
        raise BundleError(f"bundle {root}: no configs/inference.json or configs/inference.yaml")
    names = [config_files] if isinstance(config_files, (str, Path)) else list(config_files)
    found = []
    for item in names:
        path = Path(item).expanduser()
        candidates = [path] if path.is_absolute() else [root / "configs" / path, root / path, path]
        match = next((c for c in candidates if c.is_file()), None)
        if match is None:
            raise BundleError(f"bundle {root}: no config file {item}")
        found.append(match.resolve())
    return found


def _read_metadata(root: Path) -> dict[str, Any]:
    path = root / "configs" / "metadata.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BundleError(f"bundle {root}: cannot parse configs/metadata.json ({one_line(error)})") from error
    if not isinstance(data, dict):
        raise BundleError(f"bundle {root}: configs/metadata.json is not a JSON object")
    return data


def _explain_options(metadata: dict[str, Any], name: str) -> dict[str, Any]:
    section = metadata.get("medmdm", {})
    options = section.get("explain_options", {}) if isinstance(section, dict) else None
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise BundleError(f"bundle {name}: medmdm.explain_options in configs/metadata.json is not an object")
    return dict(options)


def _class_names(metadata: dict[str, Any]) -> list[str]:
    pred = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    channels = pred.get("channel_def") if isinstance(pred, dict) else None
    if not isinstance(channels, dict):
        return []
    try:
        return [str(channels[k]) for k in sorted(channels, key=int)]
    except ValueError:
        return [str(v) for v in channels.values()]


def _spatial_dims(metadata: dict[str, Any], network: torch.nn.Module) -> int | None:
    image = metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
    shape = image.get("spatial_shape") if isinstance(image, dict) else None
    if isinstance(shape, list) and len(shape) in (2, 3):
        return len(shape)
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            return 2
        if isinstance(module, torch.nn.Conv3d):
            return 3
    return None


def _input_channels(metadata: dict[str, Any]) -> int | None:
    image = metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
    channels = image.get("num_channels") if isinstance(image, dict) else None
    valid = isinstance(channels, int) and not isinstance(channels, bool) and channels > 0
    return channels if valid else None


@contextlib.contextmanager
def _bundle_scripts(root: Path) -> Iterator[None]:
    """Make ``root/scripts`` importable as ``scripts``, and forget another bundle's ``scripts``."""
    for module_name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        module_file = getattr(sys.modules[module_name], "__file__", None) or ""
        if not Path(module_file).resolve().is_relative_to(root):
            del sys.modules[module_name]
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(root))


def _network_def(parser: ConfigParser, root: Path, name: str) -> torch.nn.Module | None:
    """The instantiated ``network_def``; None when the bundle has none but a TorchScript file."""
    if "network_def" not in parser.config:
        if (root / "models" / "model.ts").is_file():
            return None
        raise BundleError(f"bundle {name}: no network_def in its config (and no models/model.ts)")
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as error:
        raise BundleError(f"bundle {name}: cannot build network_def ({one_line(error)})") from error
    if not isinstance(network, torch.nn.Module):
        raise BundleError(f"bundle {name}: network_def is a {type(network).__name__}, not a torch module")
    return network


def _with_weights(
    network: torch.nn.Module | None, root: Path, name: str, allow_random_weights: bool
) -> tuple[torch.nn.Module, Path | None]:
    """The network with the bundle's weights: ``models/model.pt`` into ``network``, else ``model.ts``."""
    state_file, script_file = root / "models" / "model.pt", root / "models" / "model.ts"
    if network is not None and state_file.is_file():
        network.load_state_dict(_state_dict(state_file, network, name))
        return network, state_file
    if script_file.is_file():
        return _torchscript(script_file, name), script_file
    if network is None:
        raise BundleError(f"bundle {name}: no network_def in its config (and no models/model.ts)")
    if allow_random_weights:
        return network, None
    raise BundleError(
        f"bundle {name}: no weights (models/model.pt or models/model.ts); "
        "allow random weights only for smoke tests"
    )


def _torchscript(path: Path, name: str) -> torch.nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        message = f"bundle {name}: cannot load TorchScript {path.name} ({one_line(error)})"
        raise BundleError(message) from error


def _state_dict(path: Path, network: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise BundleError(f"bundle {name}: cannot read weights {path.name} ({one_line(error)})") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise BundleError(f"bundle {name}: {path.name} is not a state dict (nor a dict with a 'model' entry)")
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    expected = set(network.state_dict())
    missing, unexpected = sorted(expected - set(checkpoint)), sorted(set(checkpoint) - expected)
    if missing or unexpected:
        raise BundleError(
            f"bundle {name}: weights {path.name} do not fit network_def "
            f"({len(missing)} missing keys, e.g. {missing[:2]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    return checkpoint


def _parsed_preprocessing(parser: ConfigParser, name: str) -> Any:
    if "preprocessing" not in parser.config:
        return None
    # Instantiating LoadImage(d) makes MONAI log and warn that the optional GPU DICOM decoder is missing;
    # medmdm drops that step anyway.
    codec_logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = codec_logger.level
    codec_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            return parser.get_parsed_content("preprocessing", instantiate=True)
    except Exception as error:
        raise BundleError(f"bundle {name}: cannot build preprocessing ({one_line(error)})") from error
    finally:
        codec_logger.setLevel(level)


def _without_loading(preprocessing: Any) -> tuple[Compose, str]:
    """The preprocessing without its loading steps, and the key of the image it reads."""
    if preprocessing is None:
        return Compose([]), "image"
    transforms = preprocessing.flatten().transforms if isinstance(preprocessing, Compose) else [preprocessing]
    keyed = [t for t in transforms if hasattr(t, "keys") and not callable(t.keys)]
    loaders = [t for t in keyed if type(t).__name__ == "LoadImaged"]
    image_key = str(next(iter((loaders or keyed)[0].keys))) if keyed else "image"
    kept = [t for t in transforms if type(t).__name__ not in LOADING_TRANSFORMS]
    return Compose(kept), image_key


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
