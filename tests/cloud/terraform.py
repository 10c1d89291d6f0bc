"""deploy/*.tf parsed with python-hcl2 into plain Python values (quotes stripped), plus a small renderer."""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_REFERENCE = re.compile(r"\$\{(local|var)\.(\w+)\}")
_JOIN = re.compile(r'\$\{join\("([^"]*)", local\.(\w+)\)\}')


def _plain(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted and adds bookkeeping keys; drop both."""
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if value.startswith(("<<-EOT\n", "<<EOT\n")):
            value = textwrap.dedent(value.split("\n", 1)[1].rsplit("\n", 1)[0])
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    return value


@dataclass
class Config:
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return self.resources[(kind, name)]

    def default(self, variable: str) -> Any:
        return self.variables[variable].get("default")

    def render(self, text: str) -> str:
        """Substitute `${local.x}`, `${var.x}` (defaults) and `${join(sep, local.list)}` in a string."""
        text = _JOIN.sub(lambda m: m.group(1).join(self.locals[m.group(2)]), text)
        for _ in range(3):
            text = _REFERENCE.sub(lambda m: str(self.locals[m.group(2)] if m.group(1) == "local"
                                                else self.default(m.group(2))), text)
        return text


@cache
def load() -> Config:
    config = Config()
    for path in sorted(DEPLOY.glob("*.tf")):
        with path.open() as handle:
            doc = _plain(hcl2.load(handle))
        config.files.append(path.name)
        for block in doc.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    assert (kind, name) not in config.resources, f"{kind}.{name} declared twice"
                    config.resources[(kind, name)] = body
        for block in doc.get("locals", []):
            config.locals.update(block)
        for block in doc.get("variable", []):
            config.variables.update(block)
        for block in doc.get("data", []):
            for kind, named in block.items():
                config.data.update({(kind, name): body for name, body in named.items()})
        for block in doc.get("output", []):
            config.outputs.update(block)
    return config


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` of a resource body."""
    [found] = body[name]
    return dict(found)
