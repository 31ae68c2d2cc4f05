"""A bundle's config, pruned before MONAI builds it, and the root cause of what fails to build.

MONAI's ``ConfigParser`` evaluates the config (``@`` references, ``$`` expressions, ``_mode_``,
``_disabled_``, ``_requires_``); medmdm edits the raw config first so that only what it uses is built:

- the loading steps of ``preprocessing`` (``LoadImage(d)``, ``EnsureChannelFirst(d)``, ``AddChannel(d)``):
  medmdm reads the study itself, so a reader they name (``ITKReader``) is never imported;
- the saving, inverting and device steps of ``postprocessing`` (``SaveImaged``, ``Invertd``, ...): medmdm
  keeps the steps that turn the network output into labels (activations, thresholds, argmax, merging);
- ``pretrained`` backbones in ``network_def``: built with ``pretrained`` off (nothing is downloaded), the
  bundle's own weights loaded after;
- arguments that MONAI removed from its networks (:data:`REMOVED_ARGUMENTS`, e.g. ``SwinUNETR``'s
  ``img_size``), where building ``network_def`` fails on one: dropped (or renamed), then built again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from monai.bundle import ConfigParser

LOADING_STEPS = frozenset(
    {"LoadImage", "LoadImaged", "EnsureChannelFirst", "EnsureChannelFirstd", "AddChannel", "AddChanneld"}
)
OUTPUT_STEPS = frozenset(
    {
        "SaveImage",
        "SaveImaged",
        "SaveClassificationd",
        "Invert",
        "Invertd",
        "ToDevice",
        "ToDeviced",
        "CopyItemsd",
        "DeleteItemsd",
        "FromMetaTensord",
        "ToNumpy",
        "ToNumpyd",
    }
)
PRETRAINED_KEYS = ("pretrained", "pretrained_backbone")
EXTRA_INPUT_WORDS = ("Guidance", "Click", "Point", "Prompt", "Interaction", "Vista")
# Arguments of MONAI networks that a MONAI release removed, which bundles written for older releases still
# pass: (class, argument) -> (the release that removed it, the argument that replaced it or None).
REMOVED_ARGUMENTS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("SwinUNETR", "img_size"): ("1.5", None),  # unused since 1.3: input sizes are checked in forward()
    ("UNETR", "pos_embed"): ("1.4", "proj_type"),
    ("ViT", "pos_embed"): ("1.4", "proj_type"),
    ("ViTAutoEnc", "pos_embed"): ("1.4", "proj_type"),
}
_UNEXPECTED_ARGUMENT = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")
_REFERENCE = re.compile(r"@([\w#]+)")
_PRETRAINED_ARGUMENT = re.compile(r"\b(pretrained(?:_backbone)?\s*=\s*)True\b")


def step_name(item: Any) -> str:
    """The class name a config item builds (``LoadImaged`` for ``monai.transforms.LoadImaged``), or ``""``."""
    target = item.get("_target_") if isinstance(item, dict) else None
    return target.rsplit(".", 1)[-1] if isinstance(target, str) else ""


def step_paths(parser: ConfigParser, key: str) -> list[tuple[str, str]]:
    """The config path and class name of each transform ``parser[key]`` lists, without building them.

    Follows the lists a ``Compose`` holds and the ``@`` references of ``$`` expressions (``"$@a + @b"``).
    """
    found: list[tuple[str, str]] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen or path not in parser:
            return
        seen.add(path)
        item = parser[path]
        if isinstance(item, str):
            for reference in _REFERENCE.findall(item):
                visit(reference)
        elif isinstance(item, list):
            for index, entry in enumerate(item):
                if step_name(entry):
                    found.append((f"{path}#{index}", step_name(entry)))
                elif isinstance(entry, str):
                    visit(f"{path}#{index}")
        elif isinstance(item, dict) and "transforms" in item:
            visit(f"{path}#transforms")
        elif step_name(item):
            found.append((path, step_name(item)))

    visit(key)
    return found


def drop_steps(parser: ConfigParser, key: str, names: frozenset[str]) -> None:
    """Remove the transforms named in ``names`` from the transform lists of ``parser[key]`` (through
    references, see :func:`step_paths`)."""
    listed = [path for path, name in step_paths(parser, key) if name in names]
    for path in reversed([p for p in listed if p.rpartition("#")[2].isdigit()]):
        parent, _, index = path.rpartition("#")
        items = list(parser[parent])
        del items[int(index)]
        parser[parent] = items


def loaded_keys(parser: ConfigParser, key: str = "preprocessing") -> list[str]:
    """The keys the first loading step of ``parser[key]`` reads (``LoadImaged(keys=...)``), evaluated."""
    for path, name in step_paths(parser, key):
        if name == "LoadImaged":
            keys = parser.get_parsed_content(f"{path}#keys")
            return [str(keys)] if isinstance(keys, str) else [str(k) for k in keys]
    return []


def pretrained_off(parser: ConfigParser, key: str = "network_def") -> bool:
    """Turn off every ``pretrained`` flag of ``parser[key]`` (keys and ``pretrained=True`` in expressions).

    Returns
    -------
    bool
        Whether one was on.
    """
    if key not in parser:
        return False
    changed = False

    def off(item: Any) -> Any:
        nonlocal changed
        if isinstance(item, dict):
            result = {}
            for name, value in item.items():
                if name in PRETRAINED_KEYS and value not in (False, None, "$False"):
                    changed = True
                    result[name] = False
                else:
                    result[name] = off(value)
            return result
        if isinstance(item, list):
            return [off(value) for value in item]
        if isinstance(item, str) and item.startswith("$") and _PRETRAINED_ARGUMENT.search(item):
            changed = True
            return _PRETRAINED_ARGUMENT.sub(r"\1False", item)
        return item

    pruned = off(parser[key])
    if changed:
        parser[key] = pruned
    return changed


def without_removed_argument(parser: ConfigParser, key: str, cause: str) -> str:
    """Take out of ``parser[key]`` an argument that MONAI removed from one of its networks
    (:data:`REMOVED_ARGUMENTS`) when a build failed on it: dropped, or renamed to what replaced it.

    Only items built from MONAI's own class change (``SwinUNETR``, ``monai.networks.nets.SwinUNETR``), not a
    bundle's own class of the same name.

    Parameters
    ----------
    parser : ConfigParser
        The bundle's config, changed in place.
    key : str
        The item that failed to build (``"network_def"``).
    cause : str
        The failure's root cause (:func:`root_cause`), e.g. ``"TypeError: SwinUNETR.__init__() got an
        unexpected keyword argument 'img_size'"``.

    Returns
    -------
    str
        What changed, for the report (``"network_def: SwinUNETR's img_size dropped: removed in MONAI 1.5"``),
        or ``""`` when nothing did.
    """
    match = _UNEXPECTED_ARGUMENT.search(cause)
    if match is None or (match[1], match[2]) not in REMOVED_ARGUMENTS or key not in parser:
        return ""
    network, argument = match[1], match[2]
    release, new_name = REMOVED_ARGUMENTS[network, argument]
    changed = False

    def rewrite(item: Any) -> Any:
        nonlocal changed
        if isinstance(item, list):
            return [rewrite(value) for value in item]
        if not isinstance(item, dict):
            return item
        target = str(item.get("_target_", ""))
        monai_class = "." not in target or target.startswith("monai.")
        if step_name(item) == network and monai_class and argument in item:
            changed = True
            kept = {name: value for name, value in item.items() if name != argument}
            if new_name and new_name not in kept:
                kept[new_name] = item[argument]
            item = kept
        return {name: rewrite(value) for name, value in item.items()}

    pruned = rewrite(parser[key])
    if not changed:
        return ""
    parser[key] = pruned
    done = f"renamed {new_name}" if new_name else "dropped"
    return f"{key}: {network}'s {argument} {done}: removed in MONAI {release}"


def extra_inputs(metadata: dict[str, Any], names: list[str], keys: list[str]) -> str:
    """Why a bundle needs more than an image (clicks, prompts, guidance, several inputs or phases) or has
    nothing to explain (a generative network), or ``""``.

    Parameters
    ----------
    metadata : dict
        ``configs/metadata.json``.
    names : list of str
        The class names of its preprocessing, inferer and postprocessing steps.
    keys : list of str
        The keys its loading step reads.
    """
    inputs = metadata.get("network_data_format", {}).get("inputs", {})
    kinds = [spec for spec in inputs.values() if isinstance(spec, dict)] if isinstance(inputs, dict) else []
    if any(spec.get("type") == "noise" or spec.get("format") == "latent" for spec in kinds):
        return "a generative bundle (its network makes an image from noise or a latent): nothing to explain"
    if isinstance(inputs, dict) and len(inputs) > 1:
        return f"its network takes {len(inputs)} inputs ({', '.join(map(str, inputs))})"
    steps = [name for name in names if any(word in name for word in EXTRA_INPUT_WORDS)]
    if steps:
        return f"it takes user input (clicks, prompts or guidance: {', '.join(dict.fromkeys(steps))})"
    if len(keys) > 1:
        return f"it reads {len(keys)} images ({', '.join(keys)}) under separate keys"
    return ""


def root_cause(error: BaseException) -> str:
    """The innermost cause of an error, past MONAI's wrappers ("Failed to instantiate component ...",
    "applying transform <...>"), as ``"Type: first line of its message"``."""
    cause, seen = error, {id(error)}
    while cause.__cause__ is not None and id(cause.__cause__) not in seen:
        cause = cause.__cause__
        seen.add(id(cause))
    first = next((line for line in str(cause).splitlines() if line.strip()), "")
    return f"{type(cause).__name__}: {' '.join(first.split())}"


def build(
    parser: ConfigParser, key: str, fail: Callable[[str], Exception], notes: list[str] | None = None
) -> Any:
    """``parser[key]`` instantiated; ``fail(cause)`` is raised (from the error) when it cannot be built.

    With ``notes``, a build that fails on an argument MONAI removed from one of its networks is tried again
    without it (:func:`without_removed_argument`), and what changed is appended to ``notes``.
    """
    while True:
        try:
            return parser.get_parsed_content(key, instantiate=True)
        except Exception as error:
            cause = root_cause(error)
            note = without_removed_argument(parser, key, cause) if notes is not None else ""
            if not note:
                raise fail(cause) from error
            notes.append(note)
