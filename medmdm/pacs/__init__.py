"""Reading studies from a PACS and sending medmdm's DICOM outputs back to it.

A PACS is named by a URL: ``dicomweb://host:port/path`` (QIDO-RS, WADO-RS, STOW-RS) or
``dicom://AET@host:port`` (C-FIND, C-GET, C-STORE); credentials come from the environment or a config
file, never from the URL (:mod:`medmdm.pacs.location`). :func:`retrieved` copies a study into a
temporary folder that :mod:`medmdm.io` reads as any other; :func:`send` stores files and says, per object,
what the server accepted (:class:`SendReport`).
"""

from __future__ import annotations

from medmdm.pacs.location import Credentials, PacsError, PacsLocation, credentials, is_pacs_url, parse_url
from medmdm.pacs.sent import SendReport, SentObject
from medmdm.pacs.transfer import retrieve, retrieved, send, study_url

__all__ = [
    "Credentials",
    "PacsError",
    "PacsLocation",
    "SendReport",
    "SentObject",
    "credentials",
    "is_pacs_url",
    "parse_url",
    "retrieve",
    "retrieved",
    "send",
    "study_url",
]
