"""PACS URLs, credentials, and what a failed send leaves: no server needed."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from medmdm.cli.main import main
from medmdm.pacs import Credentials, PacsError, PacsLocation, credentials, is_pacs_url, parse_url

SAMPLE_RADIOGRAPH = Path(__file__).resolve().parents[2] / "sample_data" / "studies" / "cr_lesion.dcm"
SECRET = "s3cret-Pa55word"


@pytest.mark.parametrize(
    ("url", "location", "public"),
    [
        (
            "dicomweb://pacs.example:8042/dicom-web/",
            PacsLocation("dicomweb", "pacs.example", 8042, "/dicom-web"),
            "dicomweb://pacs.example:8042/dicom-web",
        ),
        (
            "DICOMWEBS://alice@pacs.example/wado",
            PacsLocation("dicomwebs", "pacs.example", 443, "/wado", user="alice"),
            "dicomwebs://pacs.example:443/wado",
        ),
        (
            "dicom://ORTHANC@10.0.0.5:4242",
            PacsLocation("dicom", "10.0.0.5", 4242, called_ae_title="ORTHANC"),
            "dicom://ORTHANC@10.0.0.5:4242",
        ),
        (
            "dicom://PACS@host",
            PacsLocation("dicom", "host", 104, called_ae_title="PACS"),
            "dicom://PACS@host:104",
        ),
    ],
)
def test_urls_parse_and_their_public_form_has_no_user(url, location, public):
    assert is_pacs_url(url)
    assert parse_url(url) == location
    assert parse_url(url).url == public
    assert parse_url(url).user == location.user


def test_the_http_url_of_a_dicomweb_server():
    assert parse_url("dicomwebs://h:8443/dw").http_url == "https://h:8443/dw"
    assert parse_url("dicomweb://h:80/dicom-web").http_url == "http://h:80/dicom-web"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://host/dicom-web", "not a PACS URL"),
        ("dicomweb://:8042/x", "names no host"),
        ("dicomweb://host:port/x", "the port is not a number"),
        ("dicom://host:104", "a DICOM node is dicom://AET@host:port"),
        ("dicom://A_TITLE_OF_17_CHARS@host:104", "up to 16 characters"),
        ("dicom://AET@host:104/path", "and no path"),
    ],
)
def test_bad_urls_are_one_line(url, message):
    assert not is_pacs_url("sample_data/studies/ct_nodule") and not is_pacs_url(Path("x"))
    with pytest.raises(PacsError, match=message):
        parse_url(url)


def test_a_password_in_a_url_is_refused_without_repeating_it(capsys):
    url = f"dicomweb://alice:{SECRET}@host:8042/dicom-web"
    with pytest.raises(PacsError) as caught:
        parse_url(url)
    assert SECRET not in str(caught.value) and "MEDMDM_PACS_PASSWORD" in str(caught.value)
    assert main(["explain", url, "--study", "1.2.3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medmdm: error: dicomweb://host:8042: no password in the URL") and SECRET not in err


def test_a_pacs_url_needs_a_study_uid(tmp_path, capsys):
    assert main(["explain", "dicomweb://127.0.0.1:1/dicom-web", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "medmdm: error: dicomweb://127.0.0.1:1/dicom-web: name the study to read with --study UID\n"
    )


def test_a_study_uid_needs_a_pacs_url(tmp_path, capsys):
    assert main(["explain", str(SAMPLE_RADIOGRAPH), "--study", "1.2.3", "--out", str(tmp_path / "out")]) == 2
    assert "--study names a study in a PACS" in capsys.readouterr().err


def test_credentials_come_from_the_environment_over_the_config_file(tmp_path):
    config = tmp_path / "pacs.json"
    config.write_text(json.dumps({"user": "bob", "password": "from-file", "ae_title": "FROMFILE"}))
    environ = {"MEDMDM_PACS_CONFIG": str(config), "MEDMDM_PACS_PASSWORD": SECRET}
    found = credentials(parse_url("dicomweb://alice@h:1/x"), environ)
    assert found == Credentials(user="bob", password=SECRET, ae_title="FROMFILE")
    assert SECRET not in repr(found)
    token = credentials(None, {"MEDMDM_PACS_TOKEN": SECRET, "HOME": str(tmp_path)})
    assert token == Credentials(token=SECRET) and token.ae_title == "MEDMDM"
    assert credentials(parse_url("dicomweb://alice@h:1/x"), {"HOME": str(tmp_path)}).user == "alice"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1]", "a JSON object of strings"),
        ('{"user": 3}', "a JSON object of strings"),
        ('{"pasword": "x"}', "unknown key"),
        ("{", "not a readable JSON file"),
        ('{"ae_title": "A_TITLE_OF_17_CHARS"}', "longer than 16 characters"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, content, message):
    config = tmp_path / "pacs.json"
    config.write_text(content)
    with pytest.raises(PacsError, match=message):
        credentials(None, {"MEDMDM_PACS_CONFIG": str(config)})
    with pytest.raises(PacsError, match="no such PACS config file"):
        credentials(None, {"MEDMDM_PACS_CONFIG": str(tmp_path / "absent.json")})


def test_a_failed_send_is_one_line_and_exit_1_and_the_outputs_stay(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, url = tmp_path / "out", f"dicomweb://127.0.0.1:{port}/dicom-web"
    argv = ["explain", str(SAMPLE_RADIOGRAPH), "--out", str(out), "--method", "saliency", "--device", "cpu"]
    assert main([*argv, "--format", "dicom-pm,json", "--send-to", url, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == f"medmdm: error: sending to {url} failed: {url}: cannot connect\n"
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["sent"].pop("seconds") < 10
    assert report["sent"] == {
        "url": url,
        "protocol": "STOW-RS",
        "ok": False,
        "error": f"{url}: cannot connect",
        "objects": [],
    }
    assert (out / "saliency_pm.dcm").is_file()


def test_a_bad_send_to_url_is_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLE_RADIOGRAPH), "--out", str(out), "--send-to", "dicom://host:104"]) == 2
    assert "a DICOM node is dicom://AET@host:port" in capsys.readouterr().err
    assert not out.exists()
