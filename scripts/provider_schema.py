"""Extract the hashicorp/google provider schema of the types deploy/ uses from cdktn-provider-google's jsii assembly.

The PyPI wheel `cdktn-provider-google` is generated from the provider's own schema (`terraform providers schema
-json`) and ships it, as typed structs, in `cdktn_provider_google/_jsii/*.jsii.tgz`. This script turns the structs
of the resource and data-source types that `deploy/*.tf` declares into the small snapshot the offline test
(tests/cloud/test_provider_schema.py) reads, so the test never needs the 67 MB wheel or the network.

Regenerate after a provider bump (deploy/README.md, "Provider pin"):

    pip download --no-deps cdktn-provider-google==21.1.0 -d /tmp/x
    python scripts/provider_schema.py /tmp/x/cdktn_provider_google-21.1.0-py3-none-any.whl
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OUT = DEPLOY / "schema" / "google-provider.json"
PREFIX = "@cdktn/provider-google."
# "Represents a {@link https://registry.terraform.io/providers/hashicorp/google/8.7.0/docs/resources/x google_x}."
_REPRESENTS = re.compile(r"providers/hashicorp/google/([\d.]+)/docs/(resources|data-sources)/\w+ (google_\w+)\}")
# Each struct property's docs link ends in "#terraform_name": the real argument name, not a camelCase guess.
_ANCHOR = re.compile(r"/docs/[\w-]+/\w+#(\w+) ")


def read_assembly(wheel: Path) -> dict[str, Any]:
    """The jsii assembly (`package/.jsii`) inside the wheel's `_jsii/*.jsii.tgz`."""
    with zipfile.ZipFile(wheel) as archive:
        [member] = [n for n in archive.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(archive.read(member)), mode="r:gz") as tgz:
            handle = tgz.extractfile("package/.jsii")
            assert handle is not None, f"{member} has no package/.jsii"
            return json.load(handle)


def used_types(deploy: Path) -> tuple[set[str], set[str]]:
    """Resource and data-source types declared in deploy/*.tf."""
    resources: set[str] = set()
    data: set[str] = set()
    for path in sorted(deploy.glob("*.tf")):
        with path.open() as handle:
            doc = hcl2.load(handle)
        for kind, found in (("resource", resources), ("data", data)):
            for block in doc.get(kind, []):
                found.update(k.strip('"') for k in block)
    return resources, data


def _struct_of(type_ref: dict[str, Any]) -> tuple[str, str] | None:
    """("single"|"list", struct fqn) when a property is a nested block, None for an attribute."""
    if "fqn" in type_ref and type_ref["fqn"].startswith(PREFIX):
        return "single", type_ref["fqn"]
    for option in type_ref.get("union", {}).get("types", []):
        element = option.get("collection", {}).get("elementtype", {})
        if element.get("fqn", "").startswith(PREFIX):
            return "list", element["fqn"]
    return None


def _attribute_type(type_ref: dict[str, Any]) -> str:
    if "primitive" in type_ref:
        return type_ref["primitive"]
    if "collection" in type_ref:
        return f"{type_ref['collection']['kind']}({_attribute_type(type_ref['collection']['elementtype'])})"
    options = [o for o in type_ref.get("union", {}).get("types", []) if o.get("fqn") != "cdktn.IResolvable"]
    return _attribute_type(options[0]) if len(options) == 1 else "any"


def _tf_name(prop: dict[str, Any]) -> str:
    match = _ANCHOR.search(prop.get("docs", {}).get("remarks", ""))
    if match:
        return match.group(1)
    return re.sub(r"(?<!^)([A-Z])", r"_\1", prop["name"]).lower()


def struct_schema(types: dict[str, Any], fqn: str) -> dict[str, Any]:
    """{"attributes": {name: {"required", "type"}}, "blocks": {name: {"required", "nesting", ...}}} of a struct."""
    attributes: dict[str, Any] = {}
    blocks: dict[str, Any] = {}
    for prop in types[fqn].get("properties", []):
        name = _tf_name(prop)
        required = not prop.get("optional", False)
        nested = _struct_of(prop["type"])
        if nested:
            nesting, child = nested
            blocks[name] = {"required": required, "nesting": nesting, **struct_schema(types, child)}
        else:
            attributes[name] = {"required": required, "type": _attribute_type(prop["type"])}
    return {"attributes": dict(sorted(attributes.items())), "blocks": dict(sorted(blocks.items()))}


def extract(assembly: dict[str, Any], resources: set[str], data: set[str]) -> dict[str, Any]:
    types = assembly["types"]
    classes: dict[tuple[str, str], str] = {}
    versions: set[str] = set()
    for spec in types.values():
        match = _REPRESENTS.search(spec.get("docs", {}).get("summary", "")) if spec["kind"] == "class" else None
        if match and spec.get("initializer"):
            version, section, tf_type = match.groups()
            versions.add(version)
            config = [p for p in spec["initializer"]["parameters"] if p["name"] == "config"]
            if config:
                classes[("resource" if section == "resources" else "data", tf_type)] = config[0]["type"]["fqn"]
    [version] = versions
    missing = [f"{k} {t}" for k, names in (("resource", resources), ("data", data)) for t in sorted(names)
               if (k, t) not in classes]
    if missing:
        raise SystemExit(f"not in hashicorp/google {version}: {', '.join(missing)}")
    return {
        "provider": "registry.terraform.io/hashicorp/google",
        "version": version,
        "source": f"PyPI {assembly['name'].lstrip('@').replace('/', '-')} {assembly['version']} (jsii assembly), "
                  "extracted by scripts/provider_schema.py",
        "provider_config": struct_schema(types, f"{PREFIX}provider.GoogleProviderConfig"),
        "resources": {t: struct_schema(types, classes[("resource", t)]) for t in sorted(resources)},
        "data_sources": {t: struct_schema(types, classes[("data", t)]) for t in sorted(data)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="cdktn_provider_google-*.whl (pip download --no-deps ...)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"snapshot to write (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--also", action="append", default=[], metavar="TYPE",
                        help="an extra resource type to include (repeatable)")
    args = parser.parse_args(argv)
    resources, data = used_types(DEPLOY)
    snapshot = extract(read_assembly(args.wheel), resources | set(args.also), data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(snapshot, indent=1, separators=(",", ":")) + "\n")
    print(f"{args.out}: hashicorp/google {snapshot['version']}, {len(snapshot['resources'])} resource types, "
          f"{len(snapshot['data_sources'])} data sources, {args.out.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
