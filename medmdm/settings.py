"""What an explanation is run with, parsed and validated once: method and options, output formats,
device, target.

The command line (``explain``, ``batch``, ``evaluate``), YAML and JSON configs, the MONAI Bundle workflow
config and the Python API all build a :class:`Settings`; a misspelt or out-of-range option is the same
:class:`~medmdm.errors.OptionError` wherever it comes from. The method's options are checked against its
typed options class (:func:`medmdm.explainers.options_class`); a bundle's recommended options
(``medmdm.explain_options`` in its metadata) are applied under the user's at run time
(:meth:`Settings.explainer_options`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmdm import explainers, pacs
from medmdm.devices import resolve_device
from medmdm.errors import InputError, MedmdmError, OptionError
from medmdm.explainers.options import unknown_names
from medmdm.writers import dicom_output_problem

if TYPE_CHECKING:
    from medmdm.explainers import ExplainerOptions
    from medmdm.io import Study

OUTPUT_FORMATS = ("nifti", "dicom-pm", "dicom-pr", "dicom-sc", "dicom-seg", "png", "html", "json")
DICOM_FORMATS = ("dicom-pm", "dicom-pr", "dicom-sc", "dicom-seg")
DEFAULT_METHOD = "hdm"


@dataclass(frozen=True)
class Settings:
    """The settings of an explanation, valid once constructed.

    Attributes
    ----------
    method : str
        A registered explainer (``medmdm.explainers.available()``).
    options : Mapping
        The method's options given by the user (``seed``, ``steps``...), checked against the method's
        options class; those not given take the bundle's recommendation, else the method's default.
    formats : tuple of str or None
        Output formats from :data:`OUTPUT_FORMATS` (text ``"nifti,png"`` is accepted); None: NIfTI, PNG and
        JSON, plus the DICOM Parametric Map and Secondary Capture for a DICOM study. ``report.json`` is
        always written.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    target : int, str, target object or None
        What to explain (see :func:`medmdm.explainers.as_target`): None the predicted class, ``K`` or
        ``"class:K"``, ``"prototype:K"``, ``"region:K"``.
    redact_paths : bool
        Leave the study's path out of ``report.json`` (archive folder names often hold patient IDs).
    send_to : str or None
        A PACS URL (:mod:`medmdm.pacs`) to send the DICOM outputs to; ``report.json`` says what it accepted.
    notes : tuple of str
        What was set aside while the settings were parsed (a command-line flag the method does not take);
        reported with the explanation's warnings.

    Raises
    ------
    OptionError
        An unknown method, option, format or device; an option out of its range; a target that does not
        parse.
    """

    method: str = DEFAULT_METHOD
    options: Mapping[str, Any] = field(default_factory=dict)
    formats: tuple[str, ...] | None = None
    device: str = "auto"
    target: Any = None
    redact_paths: bool = False
    notes: tuple[str, ...] = ()
    send_to: str | None = None

    def __post_init__(self) -> None:
        options = dict(self.options)
        explainers.make_options(self.method, options)  # an unknown method or option is an OptionError
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "formats", parse_formats(self.formats))
        object.__setattr__(self, "device", str(self.device).strip().lower() or "auto")
        resolve_device(self.device)
        object.__setattr__(self, "target", parse_target(self.target))
        object.__setattr__(self, "notes", tuple(self.notes))
        if self.send_to is not None:
            pacs.parse_url(self.send_to)  # a URL that does not parse is refused before anything runs

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str = "settings") -> Settings:
        """Settings from a mapping with the keys ``method``, ``options``, ``formats``, ``device``, ``target``.

        Parameters
        ----------
        values : Mapping
            E.g. the ``medmdm`` section of the bundle workflow config.
        where : str
            Names the mapping in messages.
        """
        names = list(cls.__dataclass_fields__)
        unknown = sorted(set(values) - set(names))
        method = str(values.get("method") or DEFAULT_METHOD)
        if unknown and unknown[0] in explainers.options_class(method).names():
            raise OptionError(f"{where}: {unknown[0]} is an option of {method}; set it under options")
        if unknown:
            raise OptionError(f"{where}: {unknown_names(unknown, names, '', 'setting')}")
        options = values.get("options") or {}
        if not isinstance(options, Mapping):
            raise OptionError(f"{where}: options must be a mapping of option names to values")
        given = {k: v for k, v in values.items() if v is not None and k != "options"}
        return cls(options=options, **given)

    @property
    def seed(self) -> int:
        """The method's random seed."""
        return int(self.options.get("seed", 0))

    def explainer_options(self, recommended: Mapping[str, Any] | None = None) -> ExplainerOptions:
        """The method's options object: the user's options over those ``recommended`` (a bundle's
        ``explain_options``) that the method has, over the method's defaults."""
        taken = explainers.accepted_options(self.method, dict(recommended or {}))
        return explainers.make_options(self.method, {**taken, **self.options})

    def formats_for(self, study: Study) -> tuple[str, ...]:
        """The formats to write for ``study``: those asked for, else the defaults. A default that the study
        cannot carry is left out when writing, and the report says why.

        Raises
        ------
        InputError
            A DICOM format asked for explicitly that the study cannot carry (a NIfTI study, a source that
            highdicom cannot reference...), before anything runs.
        """
        if self.formats is None:
            dicom = ("dicom-pm", "dicom-pr", "dicom-sc") if study.kind != "nifti" else ()
            return tuple(f for f in OUTPUT_FORMATS if f in ("nifti", "png", "json", *dicom))
        asked = [f for f in self.formats if f in DICOM_FORMATS]
        if asked and study.kind == "nifti":
            raise InputError(f"{study.path}: {', '.join(asked)} need a DICOM study; this one is NIfTI")
        for kind in asked:
            problem = dicom_output_problem(study, kind)
            if problem is not None:
                raise InputError(f"{study.path}: --format {kind} cannot be written here ({problem})")
        return self.formats

    def summary(self) -> dict[str, Any]:
        """Plain-Python description (for reports)."""
        return {
            "method": self.method,
            "options": dict(self.options),
            "formats": list(self.formats) if self.formats is not None else None,
            "device": self.device,
            "target": plain_target(self.target),
            "redact_paths": self.redact_paths,
            "notes": list(self.notes),
            "send_to": pacs.parse_url(self.send_to).url if self.send_to else None,
        }


def settings_for_methods(methods: Sequence[str], options: Mapping[str, Any], **common: Any) -> list[Settings]:
    """One :class:`Settings` per method from options meant for all of them (``medmdm evaluate``).

    An option goes to the methods that have it (``steps`` to those with a step budget); an option that
    no method has is an :class:`OptionError`, as it is for one method.
    """
    if not methods:
        raise OptionError("name at least one method (see `medmdm methods`)")
    known = sorted({name for method in methods for name in explainers.options_class(method).names()})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise OptionError(unknown_names(unknown, known, f"for {', '.join(methods)}"))
    return [
        Settings(method=method, options=explainers.accepted_options(method, dict(options)), **common)
        for method in methods
    ]


def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """Output formats as a tuple in :data:`OUTPUT_FORMATS` order; None stays None (those that fit).

    Raises
    ------
    OptionError
        An unknown format, or none at all.
    """
    if formats is None:
        return None
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = [str(f).strip().lower() for f in items if str(f).strip()]
    unknown = [f for f in chosen if f not in OUTPUT_FORMATS]
    if unknown or not chosen:
        named = ", ".join(unknown) or "(none)"
        raise OptionError(f"unknown output format {named}; choose from {', '.join(OUTPUT_FORMATS)}")
    return tuple(f for f in OUTPUT_FORMATS if f in chosen)


def parse_target(target: Any) -> Any:
    """A target as given (an int, a text such as ``"class:1"``, a target object, None), checked; a text
    ``"K"`` becomes the int K.

    Raises
    ------
    OptionError
        A target that does not parse.
    """
    if isinstance(target, bool):
        raise OptionError(f"target must be a class index or a text such as class:1, got {target!r}")
    try:
        explainers.as_target(target)
    except MedmdmError as error:
        raise OptionError(str(error)) from None
    if isinstance(target, str):
        text = target.strip()
        return int(text) if text.lstrip("-").isdigit() else text
    return target


def plain_target(target: Any) -> int | str | None:
    """A target as reports and records hold it: as given when None, an int or a text, else its repr."""
    return target if target is None or isinstance(target, int | str) else repr(target)


def read_config(path: str | Path) -> dict[str, Any]:
    """Method options from a YAML or JSON file: a mapping of option names to values.

    Raises
    ------
    InputError
        A file that cannot be read or parsed, or that holds no mapping.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(f"{path}: cannot read the config file ({error.strerror})") from error
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: cannot parse the config file ({first})") from error
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise InputError(f"{path}: the config file must hold a mapping of option names to values")
    return data
