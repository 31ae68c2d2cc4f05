"""DICOMweb: QIDO-RS to find a study's series, WADO-RS to retrieve them, STOW-RS to store objects
(``dicomweb-client``)."""

from __future__ import annotations

from collections.abc import Sequence

import requests
from dicomweb_client import DICOMwebClient
from pydicom import Dataset

from medmdm.pacs.location import Credentials, PacsError, PacsLocation

SERIES_INSTANCE_UID = "0020000E"
TIMEOUT_S = 60.0


def client(location: PacsLocation, credentials: Credentials) -> DICOMwebClient:
    """A DICOMweb client of the server, authenticated by a bearer token or HTTP basic credentials."""
    session = requests.Session()
    if credentials.token:
        session.headers["Authorization"] = f"Bearer {credentials.token}"
    elif credentials.user:
        session.auth = (credentials.user, credentials.password)
    web = DICOMwebClient(location.http_url, session=session, timeout=TIMEOUT_S)
    web.set_http_retry_params(retry=False)  # a server that cannot be reached is said at once, not in 30 s
    return web


def find_series(web: DICOMwebClient, study_uid: str) -> list[str]:
    """The SeriesInstanceUIDs of a study (QIDO-RS)."""
    found = web.search_for_series(study_instance_uid=study_uid, fields=[SERIES_INSTANCE_UID])
    return [item[SERIES_INSTANCE_UID]["Value"][0] for item in found if item.get(SERIES_INSTANCE_UID)]


def retrieve_series(web: DICOMwebClient, study_uid: str, series_uid: str) -> list[Dataset]:
    """Every instance of one series (WADO-RS), as the server holds them."""
    return list(web.iter_series(study_uid, series_uid))


def store(web: DICOMwebClient, datasets: Sequence[Dataset]) -> dict[str, str]:
    """Store the datasets by STOW-RS; each SOPInstanceUID the server did not accept, with its reason.

    The STOW-RS response lists the stored instances (ReferencedSOPSequence) and the failed ones
    (FailedSOPSequence, with a FailureReason); an instance in neither was not stored.
    """
    try:
        response = web.store_instances(list(datasets))
        status = ""
    except requests.HTTPError as error:
        response, status = _failure_response(error), f"HTTP {error.response.status_code}"
    stored = {str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", [])}
    refused = {
        str(item.ReferencedSOPInstanceUID): f"failure reason {int(item.get('FailureReason', 0)):#06x}"
        for item in response.get("FailedSOPSequence", [])
    }
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        if uid not in stored and uid not in refused:
            refused[uid] = status or "not in the server's STOW-RS response"
    return refused


def _failure_response(error: requests.HTTPError) -> Dataset:
    """The STOW-RS response that came with an HTTP error status, or an empty one."""
    try:
        return Dataset.from_json(error.response.json())
    except ValueError:
        return Dataset()


def http_failure(location: PacsLocation, error: requests.RequestException) -> PacsError:
    """A one-line error for a request that failed (no credentials in it: the URL is the public one)."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        reason = f"HTTP {error.response.status_code} {error.response.reason}"
    elif isinstance(error, requests.ConnectionError):
        reason = "cannot connect"
    else:
        reason = type(error).__name__
    return PacsError(f"{location.url}: {reason}")
