"""What a PACS said about the objects sent to it: one :class:`SentObject` each, in a :class:`SendReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SentObject:
    """One DICOM object sent.

    Attributes
    ----------
    path : str
        The file, relative to the output folder.
    sop_instance_uid, sop_class_uid : str
        The object's identifiers.
    accepted : bool
        Whether the server stored it.
    reason : str
        Why it was refused (the server's failure reason or status), ``""`` when accepted.
    """

    path: str
    sop_instance_uid: str
    sop_class_uid: str
    accepted: bool
    reason: str = ""


@dataclass(frozen=True)
class SendReport:
    """The outcome of sending a study's DICOM outputs to a PACS.

    Attributes
    ----------
    url : str
        Where they went, without user information (:attr:`medmdm.pacs.PacsLocation.url`).
    protocol : str
        ``"STOW-RS"`` or ``"C-STORE"``.
    objects : tuple of SentObject
        One per object, in the order sent.
    error : str
        Why nothing could be sent (the server could not be reached...), ``""`` otherwise.
    seconds : float
        Time spent sending.
    """

    url: str
    protocol: str
    objects: tuple[SentObject, ...] = ()
    error: str = ""
    seconds: float = 0.0
    refused: tuple[SentObject, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "refused", tuple(o for o in self.objects if not o.accepted))

    @property
    def ok(self) -> bool:
        """Whether every object was accepted."""
        return not self.error and not self.refused

    def line(self) -> str:
        """One line: how many objects the server accepted, or why sending failed."""
        if self.error:
            return f"sending to {self.url} failed: {self.error}"
        accepted = len(self.objects) - len(self.refused)
        said = f"{self.url} accepted {accepted} of {len(self.objects)} DICOM objects ({self.protocol})"
        if self.refused:
            first = self.refused[0]
            said += f"; refused {first.sop_instance_uid} ({first.path}): {first.reason}"
        return said

    def summary(self) -> dict[str, Any]:
        """The JSON-ready form (``report.json``'s ``sent``)."""
        return {
            "url": self.url,
            "protocol": self.protocol,
            "ok": self.ok,
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "objects": [
                {
                    "path": o.path,
                    "sop_instance_uid": o.sop_instance_uid,
                    "sop_class_uid": o.sop_class_uid,
                    "accepted": o.accepted,
                    "reason": o.reason,
                }
                for o in self.objects
            ],
        }
