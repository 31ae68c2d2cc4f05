"""DICOM nodes (DIMSE, ``pynetdicom``): C-FIND to find a study's series and their SOP classes, C-GET to
retrieve them, C-STORE to store objects."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

from medmdm.pacs.location import Credentials, PacsError, PacsLocation

TIMEOUT_S = 60.0
SUCCESS, PENDING = 0x0000, (0xFF00, 0xFF01)
MAX_CONTEXTS = 128  # presentation contexts one association may propose


def _entity(credentials: Credentials) -> AE:
    ae = AE(ae_title=credentials.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    return ae


@contextmanager
def associated(ae: AE, location: PacsLocation, **kwargs: object) -> Iterator[Association]:
    """An association with the node, released after; a refused or failed association is a PacsError."""
    assoc = ae.associate(location.host, location.port, ae_title=location.called_ae_title, **kwargs)
    if not assoc.is_established:
        raise PacsError(f"{location.url}: the association was rejected or the node cannot be reached")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _find(assoc: Association, location: PacsLocation, query: Dataset) -> list[Dataset]:
    found = []
    for status, identifier in assoc.send_c_find(query, FIND):
        code = int(status.get("Status", -1)) if status else -1
        if code in PENDING and identifier is not None:
            found.append(identifier)
        elif code != SUCCESS:
            raise PacsError(f"{location.url}: C-FIND failed (status {code:#06x})")
    return found


def find_series(location: PacsLocation, credentials: Credentials, study_uid: str) -> dict[str, set[str]]:
    """Each series of a study (C-FIND, series then image level) with the SOP classes of its instances."""
    ae = _entity(credentials)
    ae.add_requested_context(FIND)
    with associated(ae, location) as assoc:
        series = _find(assoc, location, _query("SERIES", study_uid, SeriesInstanceUID=""))
        found: dict[str, set[str]] = {}
        for item in series:
            uid = str(item.SeriesInstanceUID)
            images = _find(assoc, location, _query("IMAGE", study_uid, SeriesInstanceUID=uid, SOPClassUID=""))
            found[uid] = {str(i.SOPClassUID) for i in images if i.get("SOPClassUID")}
    return found


def _query(level: str, study_uid: str, **keys: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    query.StudyInstanceUID = study_uid
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def retrieve_series(
    location: PacsLocation,
    credentials: Credentials,
    study_uid: str,
    series: dict[str, set[str]],
    folder: Path,
) -> list[Path]:
    """C-GET each series into ``folder`` (the node sends its instances back on the same association)."""
    sop_classes = sorted(set().union(*series.values()))
    if len(sop_classes) + 1 > MAX_CONTEXTS:
        raise PacsError(f"{location.url}: the study holds {len(sop_classes)} SOP classes; C-GET takes 127")
    ae = _entity(credentials)
    ae.add_requested_context(GET)
    for uid in sop_classes:
        ae.add_requested_context(uid, ALL_TRANSFER_SYNTAXES)
    written: list[Path] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        path = folder / f"{len(written):05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
        return SUCCESS

    roles = [build_role(uid, scp_role=True) for uid in sop_classes]
    with associated(ae, location, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
        for uid in series:
            for status, _ in assoc.send_c_get(_query("SERIES", study_uid, SeriesInstanceUID=uid), GET):
                code = int(status.get("Status", -1)) if status else -1
                if code not in (SUCCESS, *PENDING):
                    raise PacsError(f"{location.url}: C-GET of series {uid} failed (status {code:#06x})")
    return written


def store(location: PacsLocation, credentials: Credentials, datasets: Sequence[Dataset]) -> dict[str, str]:
    """C-STORE each dataset; each SOPInstanceUID the node did not accept, with its status."""
    ae = _entity(credentials)
    contexts = {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    refused = {}
    with associated(ae, location) as assoc:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except ValueError as error:  # no presentation context the node accepted for this SOP class
                refused[str(ds.SOPInstanceUID)] = " ".join(str(error).split())
                continue
            code = int(status.get("Status", -1)) if status else -1
            if code != SUCCESS and code >> 12 != 0xB:  # 0xBxxx: stored, with a warning
                comment = status.get("ErrorComment", "") if status else ""
                refused[str(ds.SOPInstanceUID)] = f"status {code:#06x}" + (f" ({comment})" if comment else "")
    return refused
