"""No webhook secret on a command line: `paynow traffic` reads it from a file or stdin, never from an argument."""
from __future__ import annotations

from pathlib import Path

import pytest

from ops import cli


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    return int(stopped.value.code or 0), capsys.readouterr().err


def test_a_secret_argument_is_not_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(["traffic", "--target", "http://127.0.0.1:9", "--secret", "whsec_x"], capsys)
    assert code == 2 and "unrecognized arguments: --secret" in err


def test_an_unreadable_secret_file_is_a_precise_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYNOW_HOME", str(tmp_path))
    missing = tmp_path / "nope"
    code, err = _exit(["traffic", "--target", "http://127.0.0.1:9", "--secret-file", str(missing)], capsys)
    assert code == 2 and f"--secret-file {missing}: cannot be read (FileNotFoundError)" in err
    (tmp_path / "empty").write_text("")
    code, err = _exit(["traffic", "--target", "http://127.0.0.1:9", "--secret-file", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no webhook secret: give --secret-file PATH" in err


def test_the_secret_file_s_first_line_is_the_secret(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("whsec_from_file\nignored\n")
    assert cli._read_secret(tmp_path / "s") == "whsec_from_file"
