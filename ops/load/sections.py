"""BENCHMARKS.md is written by several benchmarks, each between its own `<!-- name:begin -->` / `:end -->` markers."""
from __future__ import annotations

from pathlib import Path


def write_section(path: Path, begin: str, end: str, markdown: str, *, new_at_top: bool = False) -> None:
    """Replace what lies between `begin` and `end` in `path` with `markdown`; a file without the markers gets them
    appended (or, with `new_at_top`, right after its title paragraph)."""
    text = path.read_text()
    if begin not in text:
        if new_at_top:
            title, _, rest = text.partition("\n\n")
            text = f"{title}\n\n{begin}\n{end}\n\n{rest}"
        else:
            text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{markdown}\n{end}{tail}")
