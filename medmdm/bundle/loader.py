"""Loading a local MONAI Bundle folder: network, weights, preprocessing, metadata.

A bundle in model-zoo layout::

    DIR/configs/metadata.json        name, version, class names (network_data_format.outputs.pred.channel_def)
    DIR/configs/inference.json|yaml  network_def, preprocessing, inferer, postprocessing
    DIR/models/model.pt              a state dict, or a dict with a "model" entry (MONAI's CheckpointSaver)
    DIR/models/model.ts              or a TorchScript module
    DIR/scripts/                     optional, importable as ``scripts`` while the bundle loads

Nothing is downloaded. The config is evaluated by MONAI's ``ConfigParser`` with ``bundle_root`` set and the
bundle's ``scripts`` importable; what medmdm does not use is taken out of it first
(:mod:`medmdm.bundle.config`). The preprocessing runs on a study read by :func:`medmdm.io.load_study`, so
the bundle's own ``LoadImage(d)``, ``EnsureChannelFirst(d)`` and ``AddChannel(d)`` steps are never built, and
its random transforms are dropped. The network runs through the bundle's inferer
(:class:`medmdm.bundle.inference.BundleModel`).
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
from monai.transforms import Compose, MapTransform, Randomizable

from medmdm.bundle.config import (
    LOADING_STEPS,
    OUTPUT_STEPS,
    build,
    drop_steps,
    extra_inputs,
    loaded_keys,
    pretrained_off,
    root_cause,
    step_name,
    step_paths,
)
from medmdm.bundle.inference import INFERERS, BundleModel, Focus, focus_region
from medmdm.errors import BundleError, InputError, one_line
from medmdm.io.reader import Study

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")


@dataclass
class Bundle:
    """A bundle's network (classifier, segmenter or detector) loaded from its folder, ready to explain.

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
        The bundle's preprocessing without its loading steps and random transforms; takes
        ``{image_key: MetaTensor}``, or the MetaTensor itself when it holds no dictionary transform.
    image_key : str
        The key the preprocessing reads.
    inferer : monai.inferers.Inferer or None
        The bundle's inferer (``SimpleInferer``, ``SlidingWindowInferer``, ``SliceInferer``); None: the
        network runs on the whole input.
    postprocessing : monai.transforms.Compose or None
        The steps of the bundle's postprocessing that turn the output into labels (its saving and inverting
        steps left out); regions follow them (:func:`medmdm.bundle.inference.label_regions`).
    output_key : str
        The key the postprocessing reads.
    model : BundleModel
        The network run through the inferer: what the explainers see as the model.
    notes : list of str
        What loading changed that the report should say (random transforms dropped, pretrained backbones
        built offline, random weights).
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
    inferer: Any = None
    postprocessing: Compose | None = None
    output_key: str = "pred"
    notes: list[str] = field(default_factory=list)
    model: BundleModel = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.model = BundleModel(self.network, self.inferer)

    @property
    def random_weights(self) -> bool:
        """Whether the network keeps random initial weights (no weights file; smoke tests only)."""
        return self.weights is None

    def preprocess(self, study: Study) -> MetaTensor:
        """Run the bundle's preprocessing on a study.

        Returns
        -------
        monai.data.MetaTensor
            ``(1, C, *spatial)`` network input whose affine maps its voxels to the study's RAS space.
        """
        image = study.image.clone()
        image.meta["original_channel_dim"] = 0
        dictionary = any(isinstance(t, MapTransform) for t in self.preprocessing.transforms)
        try:
            out = self.preprocessing({self.image_key: image} if dictionary else image)
        except Exception as error:
            raise InputError(
                f"{study.path}: the preprocessing of bundle {self.name} failed ({root_cause(error)})"
            ) from error
        data = out[self.image_key] if isinstance(out, dict) else out
        if not isinstance(data, MetaTensor):
            raise BundleError(
                f"bundle {self.name}: preprocessing returned {type(data).__name__}, "
                "not a MetaTensor with an affine"
            )
        return data.float().unsqueeze(0)

    def focus(self, network_input: MetaTensor, label: int, mask: torch.Tensor | None = None) -> Focus:
        """The region of ``label`` (by the bundle's postprocessing, or ``mask`` on the network grid) and the
        part of ``network_input`` that explains it (see :func:`medmdm.bundle.inference.focus_region`)."""
        return focus_region(
            self.model,
            network_input,
            label,
            mask=mask,
            postprocessing=self.postprocessing,
            output_key=self.output_key,
            name=self.name,
        )

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
            "inferer": type(self.inferer).__name__ if self.inferer is not None else None,
            "random_weights": self.random_weights,
            "explain_options": dict(self.explain_options),
            "notes": list(self.notes),
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
        Missing folder, configs, ``network_def`` or weights; a config that does not parse or build (the
        root cause quoted, e.g. the missing file a ``torch.load`` names); weights that do not fit the
        network; a bundle that needs more than an image (clicks, prompts, guidance, several inputs). Each
        message names the bundle.
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
    notes: list[str] = []
    with _bundle_scripts(root):
        parts = ("preprocessing", "inferer", "postprocessing")
        steps = [step for part in parts for _, step in step_paths(parser, part)]
        try:
            keys = loaded_keys(parser)
        except Exception as error:
            raise BundleError(
                f"bundle {name}: cannot read the keys of LoadImaged ({root_cause(error)})"
            ) from error
        needs = extra_inputs(metadata, steps, keys)
        if needs:
            raise BundleError(
                f"bundle {name}: not supported: {needs}; medmdm explains networks that take an image"
            )
        drop_steps(parser, "preprocessing", LOADING_STEPS)
        drop_steps(parser, "postprocessing", OUTPUT_STEPS)
        if pretrained_off(parser):
            notes.append(
                f"bundle {name}: network_def asks for pretrained weights; built without them (nothing is "
                "downloaded), the bundle's weights loaded after"
            )
        network = _network_def(parser, root, name, notes)
        preprocessing = _parsed(parser, "preprocessing", name)
        inferer = _inferer(parser, name, notes)
        postprocessing = _parsed(parser, "postprocessing", name)
    return assemble_bundle(
        root,
        network,
        preprocessing,
        allow_random_weights=allow_random_weights,
        config_files=files,
        inferer=inferer,
        postprocessing=postprocessing,
        image_key=keys[0] if keys else None,
        notes=notes,
    )


def assemble_bundle(
    root: str | Path,
    network: torch.nn.Module | None,
    preprocessing: Any = None,
    *,
    allow_random_weights: bool = False,
    config_files: Sequence[Path] = (),
    inferer: Any = None,
    postprocessing: Any = None,
    image_key: str | None = None,
    notes: Sequence[str] = (),
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
    inferer : monai.inferers.Inferer, optional
        The instantiated ``inferer``; None runs the network on the whole input.
    postprocessing : callable, optional
        The instantiated ``postprocessing`` without its saving and inverting steps.
    image_key : str, optional
        The key the bundle's ``LoadImaged`` reads, when it was left out of ``preprocessing``.
    notes : sequence of str
        What loading changed, for the report.
    """
    root = Path(root).expanduser().resolve()
    metadata = _read_metadata(root)
    name = str(metadata.get("name") or root.name)
    network, weights = _with_weights(network, root, name, allow_random_weights)
    network.eval()
    kept, found_key, random = _without_loading(preprocessing)
    notes = list(notes)
    if random:
        notes.append(f"bundle {name}: random transforms left out of its preprocessing: {', '.join(random)}")
    if weights is None:
        notes.append(
            f"bundle {name} has RANDOM WEIGHTS (no models/model.pt): a smoke test; the map means nothing"
        )
    post = _without_loading(postprocessing, LOADING_STEPS | OUTPUT_STEPS)[0] if postprocessing else None
    return Bundle(
        root=root,
        name=name,
        version=str(metadata.get("version", "")),
        network=network,
        preprocessing=kept,
        image_key=image_key or found_key,
        class_names=_class_names(metadata),
        spatial_dims=_spatial_dims(metadata, network),
        input_channels=_input_channels(metadata),
        config_files=list(config_files),
        weights=weights,
        weights_sha256=_sha256(weights) if weights else "",
        explain_options=_explain_options(metadata, name),
        inferer=_runnable(inferer, name, notes),
        postprocessing=post,
        output_key=_first_key(post, "pred"),
        notes=notes,
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


def _network_def(parser: ConfigParser, root: Path, name: str, notes: list[str]) -> torch.nn.Module | None:
    """The instantiated ``network_def``; None when the bundle has none but a TorchScript file. Arguments
    MONAI removed from its networks are taken out (:func:`~medmdm.bundle.config.without_removed_argument`),
    with a note each."""
    if "network_def" not in parser.config:
        if (root / "models" / "model.ts").is_file():
            return None
        raise BundleError(f"bundle {name}: no network_def in its config (and no models/model.ts)")
    changes: list[str] = []
    network = build(
        parser,
        "network_def",
        lambda cause: BundleError(f"bundle {name}: cannot build network_def ({cause})"),
        changes,
    )
    notes.extend(f"bundle {name}: {change}" for change in changes)
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


def _parsed(parser: ConfigParser, key: str, name: str) -> Any:
    """``parser[key]`` built (None when the config has none), its failure's root cause in one line."""
    if key not in parser.config:
        return None
    # Building MONAI transforms may log and warn that the optional GPU DICOM decoder is missing; medmdm reads
    # studies itself.
    codec_logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = codec_logger.level
    codec_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            return build(
                parser, key, lambda cause: BundleError(f"bundle {name}: cannot build {key} ({cause})")
            )
    finally:
        codec_logger.setLevel(level)


def _inferer(parser: ConfigParser, name: str, notes: list[str]) -> Any:
    """The bundle's inferer when medmdm can run it (:data:`~medmdm.bundle.inference.INFERERS`), else None
    with a note: the network then runs on the whole input."""
    if "inferer" not in parser.config:
        return None
    kind = step_name(parser["inferer"])
    if kind not in INFERERS:
        notes.append(_unused_inferer(name, kind or repr(parser["inferer"])))
        return None
    return _parsed(parser, "inferer", name)


def _runnable(inferer: Any, name: str, notes: list[str]) -> Any:
    """A built inferer as medmdm runs it (on the network's device, without a progress bar), or None with a
    note when it is not one of :data:`~medmdm.bundle.inference.INFERERS`."""
    if inferer is None:
        return None
    if type(inferer).__name__ not in INFERERS:
        notes.append(_unused_inferer(name, type(inferer).__name__))
        return None
    for attribute, value in (("progress", False), ("sw_device", None), ("device", None)):
        if hasattr(inferer, attribute):
            setattr(inferer, attribute, value)
    return inferer


def _unused_inferer(name: str, kind: str) -> str:
    return f"bundle {name}: its inferer {kind} is not used; the network runs on the whole input"


def _without_loading(
    transforms: Any, dropped: frozenset[str] = LOADING_STEPS
) -> tuple[Compose, str, list[str]]:
    """The transforms without the steps named in ``dropped`` (loading steps) and random ones, the key of the
    image the loading step reads, and the names of the random transforms left out."""
    if transforms is None:
        return Compose([]), "image", []
    steps = transforms.flatten().transforms if isinstance(transforms, Compose) else [transforms]
    keyed = [t for t in steps if isinstance(t, MapTransform)]
    loaders = [t for t in keyed if type(t).__name__ == "LoadImaged"]
    key = str(next(iter((loaders or keyed)[0].keys))) if keyed else "image"
    random = [type(t).__name__ for t in steps if isinstance(t, Randomizable)]
    kept = [t for t in steps if type(t).__name__ not in dropped and not isinstance(t, Randomizable)]
    return Compose(kept), key, random


def _first_key(transforms: Compose | None, default: str) -> str:
    """The first key a dictionary transform of ``transforms`` reads, else ``default``."""
    keyed = [
        t for t in (transforms.transforms if transforms is not None else []) if isinstance(t, MapTransform)
    ]
    return str(next(iter(keyed[0].keys))) if keyed else default


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
