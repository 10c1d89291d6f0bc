"""Edge and supply chain (issue 22): Cloud Armor on the backend, TLS 1.2 minimum, the Dataflow network, base images
pinned by digest, hash-locked requirements, lean images, the template bucket writable by the builder only."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .terraform import DEPLOY, block, load

ROOT = DEPLOY.parent
DOCKERFILES = [DEPLOY / "ingress.Dockerfile", DEPLOY / "reconcile.Dockerfile", ROOT / "templates" / "Dockerfile"]
BUILD_CONFIGS = [DEPLOY / "cloudbuild-ingress.yaml", DEPLOY / "cloudbuild-reconcile.yaml",
                 ROOT / "templates" / "cloudbuild.yaml"]
DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
# image -> (its Dockerfile's hash-locked requirements, the module the image runs)
IMAGES = {"ingress": (DEPLOY / "requirements" / "ingress", "ingress.__main__"),
          "reconcile": (DEPLOY / "requirements" / "reconcile", "ops.admin.reconcile"),
          "pipeline": (ROOT / "templates" / "requirements", "pipeline.main")}
DOCKERFILE_OF = {"ingress": DEPLOY / "ingress.Dockerfile", "reconcile": DEPLOY / "reconcile.Dockerfile",
                 "pipeline": ROOT / "templates" / "Dockerfile"}
# import name -> distribution, where they differ
DISTRIBUTION = {"google": None, "grpc": None, "pythonjsonlogger": "python-json-logger", "prometheus_client":
                "prometheus-client", "pydantic_settings": "pydantic-settings", "apache_beam": "apache-beam",
                "annotated_types": None, "pydantic": None, "pydantic_core": None, "referencing": None}


# --- edge --------------------------------------------------------------------------------------------------------

def test_the_backend_service_has_the_cloud_armor_policy() -> None:
    config = load()
    backend = config.resource("google_compute_backend_service", "ingress")
    assert backend["security_policy"] == "${google_compute_security_policy.edge.id}"
    rules = config.resource("google_compute_security_policy", "edge")["rule"]
    by_priority = {r["priority"]: r for r in rules}
    assert by_priority[2147483647]["action"] == "allow"  # the default rule the API requires
    allowed = config.render(config.locals["armor_allowed"])
    public = re.search(r"public_paths\s*=\s*\[([^\]]*)\]", (DEPLOY / "lb.tf").read_text())
    assert public, "lb.tf local.public_paths"
    for path in re.findall(r'"([^"]+)"', public.group(1)):
        assert path in allowed, f"Cloud Armor would refuse the public route {path}"
    throttle = [r for r in rules if r["action"] == "throttle"]
    assert throttle and block(throttle[0], "rate_limit_options")["exceed_action"] == "deny(429)"
    assert not any("preconfigured_waf" in str(r.get("match")) for r in rules)  # see edge.tf: no WAF on webhooks


def test_the_https_proxy_refuses_tls_below_1_2() -> None:
    config = load()
    assert config.resource("google_compute_target_https_proxy", "ingress")["ssl_policy"] == \
        "${google_compute_ssl_policy.edge.id}"
    policy = config.resource("google_compute_ssl_policy", "edge")
    assert policy["min_tls_version"] == "TLS_1_2" and policy["profile"] in ("MODERN", "RESTRICTED")


def test_load_balancer_logs_are_sampled_by_a_variable_with_a_low_default() -> None:
    config = load()
    log = block(config.resource("google_compute_backend_service", "ingress"), "log_config")
    assert log["sample_rate"] == "${var.lb_log_sample_rate}"
    assert 0 < config.default("lb_log_sample_rate") <= 0.1


# --- network -----------------------------------------------------------------------------------------------------

def test_every_region_has_a_private_google_access_subnet_and_the_launch_uses_it() -> None:
    config = load()
    subnet = config.resource("google_compute_subnetwork", "dataflow")
    assert subnet["for_each"] == "${var.regions}" and subnet["private_ip_google_access"] is True
    assert subnet["region"] == "${each.key}" and subnet["name"] == "paynow-dataflow-${each.key}"
    assert config.resource("google_compute_network", "dataflow")["auto_create_subnetworks"] is False
    assert set(config.default("regions")) <= set(config.default("dataflow_subnet_ranges"))
    for region in ("us-central1", "europe-west1"):
        out = subprocess.run(["bash", str(ROOT / "scripts" / "flex-template.sh"), "run"], capture_output=True,
                             text=True, timeout=20, check=True,
                             env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "PROJECT": "p", "TAG": "t",
                                  "REGION": region})
        [launch] = [line for line in out.stdout.splitlines() if "flex-template run" in line]
        assert f"--subnetwork https://www.googleapis.com/compute/v1/projects/p/regions/{region}/subnetworks/" \
               f"paynow-dataflow-{region} " in launch
        assert "--disable-public-ips" in launch


# --- images ------------------------------------------------------------------------------------------------------

def image_references() -> list[tuple[str, str]]:
    refs = []
    for path in DOCKERFILES:
        for line in path.read_text().splitlines():
            if line.split(None, 1)[:1] == ["FROM"]:
                refs.append((path.name, line.split()[1]))
    for path in BUILD_CONFIGS:
        refs += [(path.name, step["name"]) for step in yaml.safe_load(path.read_text())["steps"]]
    return refs


def test_every_base_and_builder_image_is_pinned_by_digest() -> None:
    refs = image_references()
    assert len(refs) >= 7
    unpinned = [f"{where}: {ref}" for where, ref in refs if not DIGEST.match(ref)]
    assert not unpinned, "pin by digest (scripts/pin-base-images.sh):\n" + "\n".join(unpinned)


def test_the_pin_script_checks_what_the_test_checks() -> None:
    """`pin-base-images.sh --check` is the deploy step's gate: it refuses the all-zero placeholder too."""
    script = ROOT / "scripts" / "pin-base-images.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
    files = re.search(r"FILES=\(([^)]*)\)", script.read_text())
    assert files and {ROOT / f for f in files.group(1).split()} == set(DOCKERFILES) | set(BUILD_CONFIGS)
    result = subprocess.run(["bash", str(script), "--check"], capture_output=True, text=True, timeout=20)
    placeholders = [ref for _, ref in image_references() if ref.endswith("@sha256:" + "0" * 64)]
    assert (result.returncode == 0) == (not placeholders), result.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_installs_hash_locked_requirements_only(image: str) -> None:
    lock, _ = IMAGES[image]
    dockerfile = DOCKERFILE_OF[image].read_text()
    installs = [line for line in re.sub(r"\\\n", " ", dockerfile).splitlines() if "pip install" in line]
    assert installs
    for line in installs:
        assert "--no-deps" in line, line  # nothing resolved at build time
    [locked] = [line for line in installs if "-r requirements.txt" in line]
    assert "--require-hashes" in locked
    assert f"COPY {lock.with_suffix('.txt').relative_to(ROOT).as_posix()} requirements.txt" in dockerfile
    text = lock.with_suffix(".txt").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\$", text, re.MULTILINE)
    assert pins and len(pins) == text.count("==")
    for block_ in re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n", 6)[-1]):
        if "==" in block_:
            assert "--hash=sha256:" in block_, block_.splitlines()[0]
    assert "scripts/lock-requirements.sh" in text  # generated by the documented command
    assert lock.with_suffix(".in").name in (ROOT / "scripts" / "lock-requirements.sh").read_text()


def third_party_imports(entry: str) -> set[str]:
    """Top-level third-party modules imported (anywhere, also inside functions) by `entry` and what it imports."""
    local = {"schemas", "ingress", "pipeline", "ops"}
    seen: set[str] = set()
    third: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        path = ROOT / name.replace(".", "/")
        file = path / "__init__.py" if (path / "__init__.py").exists() else path.with_suffix(".py")
        if name in seen or not file.exists():
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        package = name if file.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(file.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for found in names:
                top = found.split(".")[0]
                if top in local:
                    todo.append(found)
                elif top and top not in sys.stdlib_module_names:
                    third.add(top)
    return third


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_images_lock_covers_what_its_code_imports(image: str) -> None:
    lock, entry = IMAGES[image]
    locked = {normal(n) for n in re.findall(r"^([A-Za-z0-9_.-]+)==", lock.with_suffix(".txt").read_text(),
                                            re.MULTILINE)}
    imports = third_party_imports(entry)
    assert imports
    for module in imports:
        distribution = DISTRIBUTION.get(module, module)
        if distribution is not None:
            assert normal(distribution) in locked, f"{image} imports {module}: add it to {lock.with_suffix('.in')}"


@pytest.mark.parametrize("image", ["ingress", "reconcile"])
def test_the_ingress_and_reconcile_images_are_lean(image: str) -> None:
    """No Beam (and its numpy, pyarrow) in the images that do not run the pipeline (issue 22)."""
    lock, entry = IMAGES[image]
    locked = {normal(n) for n in re.findall(r"^([A-Za-z0-9_.-]+)==", lock.with_suffix(".txt").read_text(),
                                            re.MULTILINE)}
    assert not locked & {"apache-beam", "numpy", "pyarrow"}, locked & {"apache-beam", "numpy", "pyarrow"}
    assert "apache_beam" not in third_party_imports(entry)


# --- the template bucket -----------------------------------------------------------------------------------------

WRITE_ROLES = {"roles/storage.objectAdmin", "roles/storage.objectCreator", "roles/storage.objectUser",
               "roles/storage.admin", "roles/storage.legacyBucketWriter", "roles/storage.legacyBucketOwner"}


def test_only_the_builder_can_write_template_specs() -> None:
    config = load()
    writers = {name: body["member"] for name, body in config.of_type("google_storage_bucket_iam_member").items()
               if body["bucket"] == "${google_storage_bucket.templates.name}" and body["role"] in WRITE_ROLES}
    assert writers == {"builder_templates": "serviceAccount:${google_service_account.builder.email}"}
    assert not [n for n, b in config.of_type("google_project_iam_member").items()
                if b["role"].startswith("roles/storage.")], "project-wide storage roles write every bucket"
    script = (ROOT / "scripts" / "flex-template.sh").read_text()
    assert 'TEMPLATE="gs://${TEMPLATE_BUCKET}/' in script and 'TEMPLATE_BUCKET:-${PROJECT}-templates' in script
    assert config.resource("google_storage_bucket", "templates")["name"] == "${var.project_id}-templates"


def test_each_lock_is_generated_from_its_input() -> None:
    """Every requirement of the .in file is pinned in its .txt: an edited .in without a new lock fails here."""
    for lock, _ in IMAGES.values():
        inputs = [re.split(r"[\[<>=!~; ]", line.strip(), maxsplit=1)[0] for line in
                  Path(lock.with_suffix(".in")).read_text().splitlines() if line.strip() and not line.startswith("#")]
        locked = {normal(n) for n in re.findall(r"^([A-Za-z0-9_.-]+)==", lock.with_suffix(".txt").read_text(),
                                                re.MULTILINE)}
        assert inputs and {normal(n) for n in inputs} <= locked, lock
