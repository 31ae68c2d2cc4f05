"""medmdm.settings: one settings object, validated once; a misspelt option is the same error everywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from medmdm import explainers
from medmdm.cli.main import main
from medmdm.errors import InputError, OptionError
from medmdm.pipeline.bundle_workflow import EXPLAIN_CONFIG
from medmdm.settings import Settings, read_config, settings_for_methods
from medmdm.testing import BoxModel
from medmdm.testing.internal.bundles import ct_with_ball, detector_bundle

MISSPELT = "unknown option 'stpes' for hdm (did you mean 'steps'?)"


def test_defaults_and_normalised_values():
    settings = Settings()
    assert (settings.method, settings.options, settings.formats, settings.device, settings.target) == (
        "hdm",
        {},
        None,
        "auto",
        None,
    )
    settings = Settings(method="dm", options={"seed": 3}, formats=" PNG,nifti ", device="CPU", target="1")
    assert settings.formats == ("nifti", "png")  # in the order of OUTPUT_FORMATS
    assert (settings.device, settings.target, settings.seed) == ("cpu", 1, 3)
    assert Settings(target="region:2").target == "region:2"
    with pytest.raises(AttributeError):
        settings.method = "hdm"  # frozen


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "hmd"}, "unknown explainer 'hmd'"),
        ({"options": {"stpes": 3}}, MISSPELT),
        ({"options": {"levels": 0}}, "levels"),
        ({"options": {"steps": "many"}}, "steps"),
        ({"formats": "nifti,tiff"}, "unknown output format tiff"),
        ({"formats": ""}, "unknown output format (none)"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"target": "kind:3"}, "target 'kind:3' is not understood"),
        ({"target": True}, "target must be"),
    ],
)
def test_invalid_settings_are_refused_when_made(fields, message):
    with pytest.raises(OptionError) as caught:
        Settings(**fields)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_cuda_device_without_cuda_is_refused():
    with pytest.raises(OptionError, match="no CUDA device"):
        Settings(device="cuda:0")


def test_a_misspelt_option_is_the_same_error_from_the_api_and_the_registry():
    model = BoxModel(((2, 4), (2, 4)))
    for make in (
        lambda: Settings(options={"stpes": 3}),
        lambda: explainers.create("hdm", model, stpes=3),
        lambda: explainers.make_options("hdm", {"stpes": 3}),
    ):
        with pytest.raises(OptionError) as caught:
            make()
        assert MISSPELT in str(caught.value)


def test_from_mapping_names_the_misplaced_or_unknown_setting():
    assert Settings.from_mapping({"method": "dm", "options": {"seed": 2}, "target": None}) == Settings(
        method="dm", options={"seed": 2}
    )
    with pytest.raises(OptionError, match="x: steps is an option of hdm; set it under options"):
        Settings.from_mapping({"steps": 3}, where="x")
    with pytest.raises(OptionError, match="unknown setting 'format' \\(did you mean 'formats'\\?\\)"):
        Settings.from_mapping({"format": "png"})
    with pytest.raises(OptionError, match="options must be a mapping"):
        Settings.from_mapping({"options": [1, 2]})


def test_bundle_recommendations_go_under_the_users_options_to_the_methods_that_have_them():
    recommended = {"baseline": "blur", "blur_sigma": 2.0}
    options = Settings(options={"steps": 7}).explainer_options(recommended)
    assert (options.baseline, options.blur_sigma, options.steps) == ("blur", 2.0, 7)
    assert Settings(options={"baseline": "mean"}).explainer_options(recommended).baseline == "mean"
    assert "baseline" not in Settings(method="saliency").explainer_options(recommended).to_dict()


def test_options_for_several_methods_go_where_they_apply():
    hdm, saliency = settings_for_methods(["hdm", "saliency"], {"steps": 9, "levels": 2, "seed": 4})
    assert hdm.options == {"steps": 9, "levels": 2, "seed": 4}
    assert saliency.options == {"seed": 4}  # saliency has no step budget and no levels
    with pytest.raises(OptionError, match="unknown option 'levles'"):
        settings_for_methods(["hdm", "saliency"], {"levles": 2})


def test_config_files(tmp_path):
    (tmp_path / "a.yaml").write_text("steps: 5\nbaseline: blur\n")
    (tmp_path / "b.json").write_text('{"seed": 1}')
    (tmp_path / "c.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "d.yaml").write_text("steps: [\n")
    assert read_config(tmp_path / "a.yaml") == {"steps": 5, "baseline": "blur"}
    assert read_config(tmp_path / "b.json") == {"seed": 1}
    with pytest.raises(InputError, match="must hold a mapping"):
        read_config(tmp_path / "c.yaml")
    with pytest.raises(InputError, match="cannot parse"):
        read_config(tmp_path / "d.yaml")
    with pytest.raises(InputError, match="cannot read"):
        read_config(tmp_path / "missing.yaml")


@pytest.fixture(scope="module")
def ball(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ball")
    (folder / "cases").mkdir()
    study, _ = ct_with_ball(folder / "cases" / "ct.nii.gz")
    config = folder / "options.yaml"
    config.write_text("stpes: 3\n")
    return study, detector_bundle(folder / "bundle"), config


@pytest.mark.parametrize("command", ["explain", "batch", "evaluate"])
def test_a_misspelt_option_in_a_config_is_the_same_error_in_every_command(ball, tmp_path, capsys, command):
    study, bundle, config = ball
    where = {"explain": [str(study)], "batch": [str(study)], "evaluate": [str(study.parent)]}[command]
    out = tmp_path / "out"
    argv = [command, *where, "--bundle", str(bundle), "--out", str(out), "--config", str(config)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medmdm: error:") and MISSPELT in err and "\n" not in err
    assert not out.exists()


def test_a_misspelt_option_in_the_bundle_workflow_is_the_same_error(ball, tmp_path):
    study, bundle, _ = ball
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", f"['{bundle}/configs/inference.json','{EXPLAIN_CONFIG}']",
        "--bundle_root", str(bundle),
        "--study", str(study),
        "--output_dir", str(tmp_path / "out"),
        "--medmdm#options#stpes", "3",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode != 0 and MISSPELT in finished.stderr
    assert not (tmp_path / "out").exists()


def test_common_flags_a_method_lacks_are_set_aside_with_a_note(ball, tmp_path, monkeypatch):
    study, bundle, _ = ball
    out = tmp_path / "out"
    argv = [
        "explain",
        str(study),
        "--bundle",
        str(bundle),
        "--method",
        "saliency",
        "--steps",
        "5",
        "--seed",
        "1",
    ]
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: model)  # compiling: tests/explainers
    assert main([*argv, "--compile", "--out", str(out), "--format", "json", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "--steps not used: saliency has no steps option" in report["warnings"]
    assert report["method"]["options"]["seed"] == 1 and report["method"]["options"]["compile"] is True
    config = tmp_path / "steps.yaml"
    config.write_text("steps: 5\n")  # an option named in a config is meant for this method: an error
    assert main([*argv[:6], "--config", str(config), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize(
    ("flags", "value"),
    [([], False), (["--compile"], True), (["--compile", "reduce-overhead"], "reduce-overhead")],
)
def test_the_compile_flag(flags, value, tmp_path, capsys):
    from medmdm.cli.common import settings_from_args
    from medmdm.cli.main import build_parser

    args = build_parser().parse_args(["batch", str(tmp_path), "--out", str(tmp_path / "out"), *flags])
    assert settings_from_args(args).explainer_options().compile == value
    assert main(["batch", str(tmp_path), "--out", str(tmp_path / "o"), "--compile", "fast"]) == 2
    assert "hdm option compile must be one of False, True, 'default'" in capsys.readouterr().err
