"""Where a PACS is (its URL) and who medmdm is to it (credentials and AE titles), read once.

URL syntax:

- ``dicomweb://host:port/path`` (HTTP) and ``dicomwebs://host:port/path`` (HTTPS): a DICOMweb server whose
  QIDO-RS, WADO-RS and STOW-RS services live under ``path`` (e.g. Orthanc's ``/dicom-web``);
- ``dicom://AET@host:port``: a DICOM node (its AE title, host and port) reached by C-FIND, C-GET and
  C-STORE.

Credentials never come from the URL: a password in a URL (``user:password@``) is refused, since command
lines are visible to every user of the machine. HTTP basic credentials (``MEDMDM_PACS_USER`` and
``MEDMDM_PACS_PASSWORD``) or a bearer token (``MEDMDM_PACS_TOKEN``) come from the environment, else from
the JSON config file named by ``MEDMDM_PACS_CONFIG`` (default ``~/.config/medmdm/pacs.json``; keys
``user``, ``password``, ``token``, ``ae_title``). medmdm's own AE title is ``MEDMDM_AE_TITLE``, else the
config file's ``ae_title``, else ``MEDMDM``. What is recorded (reports, messages) is
:attr:`PacsLocation.url`, which holds no user information but a DICOM node's AE title.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from medmdm.errors import MedmdmError

DICOMWEB_SCHEMES = {"dicomweb": "http", "dicomwebs": "https"}
DIMSE_SCHEME = "dicom"
SCHEMES = (*DICOMWEB_SCHEMES, DIMSE_SCHEME)
DEFAULT_PORTS = {"dicomweb": 80, "dicomwebs": 443, "dicom": 104}
DEFAULT_AE_TITLE = "MEDMDM"
CONFIG_ENV = "MEDMDM_PACS_CONFIG"
DEFAULT_CONFIG = Path("~/.config/medmdm/pacs.json")
ENVIRONMENT = {
    "user": "MEDMDM_PACS_USER",
    "password": "MEDMDM_PACS_PASSWORD",
    "token": "MEDMDM_PACS_TOKEN",
    "ae_title": "MEDMDM_AE_TITLE",
}
MAX_AE_TITLE = 16


class PacsError(MedmdmError):
    """A PACS URL that does not parse, a server that cannot be reached or refuses a query or retrieval."""


@dataclass(frozen=True)
class PacsLocation:
    """A parsed PACS URL.

    Attributes
    ----------
    scheme : str
        ``"dicomweb"``, ``"dicomwebs"`` or ``"dicom"``.
    host : str
    port : int
    path : str
        The DICOMweb root (``"/dicom-web"``); ``""`` for a DICOM node.
    called_ae_title : str
        A DICOM node's AE title; ``""`` for DICOMweb.
    user : str
        A user name given in a DICOMweb URL (``dicomweb://alice@host...``), used unless the environment or
        config file names one; never recorded.
    """

    scheme: str
    host: str
    port: int
    path: str = ""
    called_ae_title: str = ""
    user: str = field(default="", repr=False)

    @property
    def is_dicomweb(self) -> bool:
        """Whether the server is reached by DICOMweb (else by DIMSE)."""
        return self.scheme in DICOMWEB_SCHEMES

    @property
    def url(self) -> str:
        """The URL without user information: what reports and messages show."""
        if self.is_dicomweb:
            return f"{self.scheme}://{self.host}:{self.port}{self.path}"
        return f"{self.scheme}://{self.called_ae_title}@{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """The DICOMweb root as an ``http(s)://`` URL."""
        return f"{DICOMWEB_SCHEMES[self.scheme]}://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True)
class Credentials:
    """How medmdm identifies itself to a PACS. The secrets never show in ``repr``.

    Attributes
    ----------
    user, password : str
        HTTP basic authentication, when ``user`` is not empty.
    token : str
        A bearer token (wins over ``user``).
    ae_title : str
        medmdm's calling AE title on a DICOM node.
    """

    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    ae_title: str = DEFAULT_AE_TITLE


def is_pacs_url(text: object) -> bool:
    """Whether ``text`` is a string that starts with one of the PACS schemes (``dicomweb://``...)."""
    return isinstance(text, str) and text.partition("://")[0].lower() in SCHEMES and "://" in text


def parse_url(text: str) -> PacsLocation:
    """Parse a PACS URL (see the module's docstring).

    Raises
    ------
    PacsError
        An unknown scheme, no host, a port that is not a number, a password in the URL, a DICOM node
        without an AE title or with one longer than 16 characters.
    """
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    shown = f"{scheme}://{parts.hostname or ''}" + (f":{parts.port}" if _port(parts, text) else "")
    if scheme not in SCHEMES:
        raise PacsError(f"{text.split('@')[-1]}: not a PACS URL (dicomweb://, dicomwebs:// or dicom://)")
    if parts.password is not None:
        raise PacsError(
            f"{shown}: no password in the URL, which other users of the machine can see; set "
            f"{ENVIRONMENT['user']} and {ENVIRONMENT['password']} (or {ENVIRONMENT['token']}) instead"
        )
    if not parts.hostname:
        raise PacsError(f"{scheme}://: the URL names no host")
    port = _port(parts, text) or DEFAULT_PORTS[scheme]
    if scheme == DIMSE_SCHEME:
        aet = parts.username or ""
        if not aet or len(aet) > MAX_AE_TITLE or parts.path.strip("/"):
            raise PacsError(
                f"{shown}: a DICOM node is dicom://AET@host:port (its AE title, up to {MAX_AE_TITLE} "
                "characters, and no path)"
            )
        return PacsLocation(scheme, parts.hostname, port, called_ae_title=aet)
    return PacsLocation(scheme, parts.hostname, port, parts.path.rstrip("/"), user=parts.username or "")


def _port(parts: SplitResult, text: str) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise PacsError(f"{text.split('@')[-1]}: the port is not a number from 0 to 65535") from None


def credentials(
    location: PacsLocation | None = None, environ: Mapping[str, str] | None = None
) -> Credentials:
    """medmdm's credentials: the environment, else the config file, else a user named in the URL.

    Raises
    ------
    PacsError
        A config file that is not a JSON object of strings, or an AE title longer than 16 characters.
    """
    environ = os.environ if environ is None else environ
    config = _config_file(Path(environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser(), CONFIG_ENV in environ)
    values = {key: environ.get(name) or config.get(key, "") for key, name in ENVIRONMENT.items()}
    if not values["user"] and location is not None:
        values["user"] = location.user
    values["ae_title"] = values["ae_title"] or DEFAULT_AE_TITLE
    if len(values["ae_title"]) > MAX_AE_TITLE:
        raise PacsError(f"AE title {values['ae_title']!r} is longer than {MAX_AE_TITLE} characters")
    return Credentials(**values)


def _config_file(path: Path, named: bool) -> dict[str, str]:
    if not path.is_file():
        if named:
            raise PacsError(f"{path}: no such PACS config file ({CONFIG_ENV})")
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PacsError(f"{path}: not a readable JSON file ({type(error).__name__})") from None
    if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
        raise PacsError(f"{path}: a PACS config file is a JSON object of strings")
    unknown = sorted(set(config) - set(ENVIRONMENT))
    if unknown:
        raise PacsError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(ENVIRONMENT)}")
    return config
