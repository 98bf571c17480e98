"""Only the project's own errors become a one-line message; anything else keeps its traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlzoo import cli
from dlzoo.data import download as download_module
from dlzoo.errors import DlzooError, InvalidInput

PARAMS = str(Path(__file__).resolve().parents[2] / "params.yaml")


def _download_raising(monkeypatch, error: Exception) -> None:
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(download_module, "download", fail)


@pytest.mark.parametrize("error", [DlzooError("the fix is X"), InvalidInput("data.seed: the fix is X")])
def test_a_project_error_is_one_line_and_exit_code_2(monkeypatch, capsys, tmp_path, error):
    _download_raising(monkeypatch, error)
    assert cli.main(["--params", PARAMS, "download", "mnist", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"dlzoo download: error: {error}\n"


def test_any_other_value_error_is_a_bug_and_propagates_with_its_traceback(monkeypatch, tmp_path):
    _download_raising(monkeypatch, ValueError("an internal invariant broke"))
    with pytest.raises(ValueError, match="an internal invariant broke"):
        cli.main(["--params", PARAMS, "download", "mnist", "--out", str(tmp_path / "out")])


def test_a_bad_params_value_is_a_project_error(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(Path(PARAMS).read_text().replace("profile: demo ", "profile: tiny ", 1))
    assert cli.main(["--params", str(params), "download", "mnist", "--out", str(tmp_path / "out")]) == 2
    assert (
        "dlzoo download: error: data.profile: 'tiny' is not allowed; use one of demo, full"
        in capsys.readouterr().err
    )
