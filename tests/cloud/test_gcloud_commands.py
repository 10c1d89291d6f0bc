"""Every gcloud command in RUNBOOK.md, deploy/README.md and scripts/ exists in the installed gcloud with its flags.

The judge is the installed Cloud SDK itself: `gcloud GROUP ... COMMAND --help` must succeed and list every flag
the documents pass. A separate `gcloud ... --help` takes 1-2 s, so the help of all commands is produced by one
gcloud process (gcloud_help.py, gcloud's own entry point loaded once) and cached; a command that process could
not answer is asked with its own `gcloud ... --help`.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GCLOUD = "/usr/bin/gcloud"
DOCUMENTS = [ROOT / "RUNBOOK.md", ROOT / "deploy" / "README.md"]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Where a word starts a command in shell text: line start, after a pipe/list operator, `$(`, `do`, `then`, or
# flex-template.sh's `run` wrapper.
_COMMAND_POSITION = re.compile(r"(?:^|[|;&(]|\bdo|\bthen|\brun)\s*$")
_ENV = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
        "TERM": "dumb"}


# Commands the control test asks about (fetched together with the documents' commands).
CONTROLS = {("dataflow", "metrics", "list"), ("beta", "dataflow", "metrics", "list")}


@dataclass(frozen=True)
class Use:
    source: str
    text: str
    words: tuple[str, ...]


def gcloud() -> str:
    path = GCLOUD if os.path.exists(GCLOUD) else shutil.which("gcloud")
    if path is None:
        pytest.fail(f"gcloud is not installed ({GCLOUD}): the RUNBOOK/README/scripts gcloud commands cannot be "
                    "checked. Install the Google Cloud CLI (scripts/install-system-deps.sh says how).")
    return path


def _segment(text: str, start: int) -> str:
    """The command starting at `start`, up to an unquoted |, ;, &, ), newline or comment; $(...) becomes X."""
    out: list[str] = []
    quote = ""
    i = start
    while i < len(text):
        ch = text[i]
        if quote != "'" and text.startswith("$(", i):  # substituted outside quotes and inside double quotes
            depth, i = 1, i + 2
            while i < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            out.append("X")
            continue
        if quote:
            if ch == quote:
                quote = ""
            out.append(ch)
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch in "|;&)\n`" or (ch == "#" and (not out or out[-1].isspace())):
            break
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def commands_in(shell: str, source: str) -> list[Use]:
    """gcloud invocations in shell text (continuation lines joined, comment lines dropped)."""
    shell = re.sub(r"\\\n\s*", " ", shell)
    shell = "\n".join(line for line in shell.splitlines() if not line.lstrip().startswith("#"))
    uses = []
    for match in re.finditer(r"\bgcloud(?=\s)", shell):
        if not _COMMAND_POSITION.search(shell[max(0, match.start() - 40):match.start()].split("\n")[-1]):
            continue
        text = _segment(shell, match.start()).strip()
        uses.append(Use(source, text, tuple(shlex.split(text))))
    return uses


def all_uses() -> list[Use]:
    uses: list[Use] = []
    for path in DOCUMENTS:
        text = path.read_text()
        name = path.relative_to(ROOT).as_posix()
        for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
            uses += commands_in(block, name)
        for span in re.findall(r"(?<!`)`(gcloud [^`]+)`(?!`)", text):
            uses += commands_in(span, name)
    for path in SCRIPTS:
        uses += commands_in(path.read_text(), path.relative_to(ROOT).as_posix())
    # And exactly what flex-template.sh runs, every action, with its values filled in.
    script = ROOT / "scripts" / "flex-template.sh"
    for action in ("image", "build", "run", "update"):
        out = subprocess.run(["bash", str(script), action], capture_output=True, text=True, timeout=20, check=True,
                             env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "PROJECT": "paynow-prod", "TAG": "t1"})
        for line in out.stdout.splitlines():
            words = tuple(shlex.split(line))
            if words and words[0] == "gcloud":
                uses.append(Use(f"flex-template.sh {action} (DRY_RUN)", line, words))
    return uses


@cache
def cli_tree() -> dict[str, Any]:
    """The installed SDK's own command tree (data/cli/gcloud_completions.py), to split command from arguments."""
    root = Path(os.path.realpath(gcloud())).parents[1]
    source = (root / "data" / "cli" / "gcloud_completions.py").read_text()
    tree = ast.literal_eval(source.split("STATIC_COMPLETION_CLI_TREE = ", 1)[1])
    return tree


def command_path(words: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """(the command's words, None) or (the words tried, why it is not a command)."""
    node = cli_tree()
    path: list[str] = []
    for word in words[1:]:
        if word.startswith("-"):
            break
        if word in node.get("commands", {}):
            path.append(word)
            node = node["commands"][word]
            continue
        break
    if node.get("commands"):
        tried = [*path, *[w for w in words[1 + len(path):2 + len(path)] if not w.startswith("-")]]
        return tuple(tried), f"`gcloud {' '.join(tried)}` is not a command (gcloud {' '.join(path)} is a group)"
    return tuple(path), None


_HELP: dict[tuple[str, ...], tuple[int, str]] = {}
_MARK = re.compile(r"^@@@BEGIN ([^\n]*)\n(.*?)^@@@END (\d+)$", re.MULTILINE | re.DOTALL)


def sdk_python(root: Path) -> str:
    """The interpreter the gcloud wrapper itself would pick: $CLOUDSDK_PYTHON, the bundled one, else python3."""
    bundled = root / "platform" / "bundledpythonunix" / "bin" / "python3"
    return os.environ.get("CLOUDSDK_PYTHON") or (str(bundled) if bundled.exists() else shutil.which("python3") or "")


def prefetch_help(paths: list[tuple[str, ...]]) -> None:
    """`gcloud PATH --help` for every path, from one gcloud process (tests/cloud/gcloud_help.py); any path it
    could not answer falls back to a separate `gcloud PATH --help`."""
    root = Path(os.path.realpath(gcloud())).parents[1]
    todo = [p for p in paths if p not in _HELP]
    if not todo:
        return
    try:
        result = subprocess.run([sdk_python(root), str(Path(__file__).with_name("gcloud_help.py")), str(root)],
                                input="".join(" ".join(p) + "\n" for p in todo), capture_output=True, text=True,
                                timeout=120, env=_ENV)
        out = {tuple(m.group(1).split()): (int(m.group(3)), m.group(2)) for m in _MARK.finditer(result.stdout)}
        err = {tuple(m.group(1).split()): m.group(2) for m in _MARK.finditer(result.stderr)}
        for path, (code, text) in out.items():
            _HELP[path] = (code, ANSI.sub("", text + err.get(path, "")))
    except (OSError, subprocess.SubprocessError):
        pass


def help_of(path: tuple[str, ...]) -> tuple[int, str]:
    if path not in _HELP:
        result = subprocess.run([gcloud(), *path, "--help"], capture_output=True, text=True, timeout=60, env=_ENV)
        _HELP[path] = (result.returncode, ANSI.sub("", result.stdout + result.stderr))
    return _HELP[path]


def flags_in_help(text: str) -> set[str]:
    flags = set()
    for negatable, name in re.findall(r"--(\[no-\])?([a-z0-9][a-z0-9-]*)", text):
        flags.add(name)
        if negatable:
            flags.add(f"no-{name}")
    return flags


def flags_used(words: tuple[str, ...]) -> list[str]:
    return [w[2:].split("=", 1)[0] for w in words if w.startswith("--") and not w.startswith("--$")]


@pytest.fixture(scope="module")
def uses() -> list[Use]:
    gcloud()
    found = all_uses()
    prefetch_help(sorted({command_path(u.words)[0] for u in found} | CONTROLS))
    return found


def test_the_documents_use_gcloud(uses: list[Use]) -> None:
    sources = {u.source for u in uses}
    assert {"RUNBOOK.md", "deploy/README.md", "scripts/flex-template.sh"} <= sources, sources
    assert len(uses) > 40


def test_every_gcloud_command_exists_with_the_flags_it_is_given(uses: list[Use]) -> None:
    problems = []
    for use in uses:
        path, why = command_path(use.words)
        code, text = help_of(path)
        if why or code != 0:
            first = next((line for line in text.splitlines() if "ERROR" in line), "")
            reason = why or f"gcloud {' '.join(path)} --help failed"
            problems.append(f"{use.source}: {reason} {first}\n    {use.text}")
            continue
        known = flags_in_help(text)
        for flag in flags_used(use.words):
            if flag not in known:
                problems.append(f"{use.source}: gcloud {' '.join(path)} has no flag --{flag}\n    {use.text}")
    assert not problems, "\n".join(problems)


def test_the_checker_refuses_what_gcloud_refuses(uses: list[Use]) -> None:
    """Controls: the GA-less `dataflow metrics`, a made-up flag, and a group used as a command."""
    path, why = command_path(("gcloud", "dataflow", "metrics", "list", "JOB"))
    assert why and path == ("dataflow", "metrics")
    code, text = help_of(("dataflow", "metrics", "list"))
    assert code != 0 and "Invalid choice: 'metrics'" in text
    path, why = command_path(("gcloud", "beta", "dataflow", "metrics", "list", "JOB", "--region=r"))
    assert why is None and path == ("beta", "dataflow", "metrics", "list")
    assert "region" in flags_in_help(help_of(path)[1]) and "regions" not in flags_in_help(help_of(path)[1])
    assert command_path(("gcloud", "secrets", "versions"))[1]


def test_commands_are_found_in_every_shell_position() -> None:
    text = 'for V in $(gcloud a b --x | tail); do\n  gcloud c d "$V" --y=1  # note --z\ndone\nrun gcloud e --w'
    assert [u.words for u in commands_in(text, "t")] == [("gcloud", "a", "b", "--x"), ("gcloud", "c", "d", "$V",
                                                                                          "--y=1"),
                                                         ("gcloud", "e", "--w")]


def test_a_missing_gcloud_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "GCLOUD", "/nonexistent/gcloud")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="gcloud is not installed"):
        gcloud()
