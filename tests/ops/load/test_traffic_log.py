"""The traffic log's reader: a bad line is named, the line a running generator is still writing is skipped."""
from __future__ import annotations

from pathlib import Path

import pytest

from ops.load.traffic_log import read_log


def test_read_log_names_a_bad_line(tmp_path: Path) -> None:
    log = tmp_path / "bad.jsonl"
    log.write_text('{"kind":"webhook","ok":true,"eventId":"e"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_log(log)


def test_read_log_skips_the_line_a_running_generator_is_still_writing(tmp_path: Path) -> None:
    log = tmp_path / "live.jsonl"
    log.write_text('{"kind":"webhook","ok":true,"eventId":"e1"}\n{"kind":"webhook","ok":tr')
    assert [r["eventId"] for r in read_log(log)] == ["e1"]
