"""Packaging for paynow-ledger: PayNow webhooks to an exactly-once points ledger."""
from setuptools import find_packages, setup

BEAM_VERSION = "2.77.0"  # matched by templates/Dockerfile; tests/test_templates.py checks the pin

setup(
    name="paynow-ledger",
    version="0.1.0",
    description="PayNow webhooks -> Avro on Pub/Sub -> Beam -> exactly-once Firestore points ledger",
    python_requires=">=3.11",
    packages=find_packages(include=["schemas", "schemas.*", "ingress", "ingress.*", "pipeline",
                                    "pipeline.*", "ops", "ops.*"]),
    package_data={"schemas": ["avro/*.avsc", "vendor/paynow/*"],
                  "ops.local": ["*.cfg", "consoles/*.html", "consoles/lib/*"]},
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        "google-cloud-firestore>=2.16,<3",
        "google-cloud-pubsub>=2.21,<3",
        "fastavro>=1.9,<2",
        "orjson>=3.9,<4",  # the delivery's parse, answers, minimised copy (schemas/paynow.py)
        "starlette>=0.40",
        "uvicorn[standard]>=0.30",
        "prometheus-client>=0.20",
        "rich>=13",
        "httpx>=0.27",
        "cachetools>=5.3,<7",  # bounded TTL caches (rate limits, recent events, customers); apache-beam[gcp] pins <7
        "pydantic-settings>=2.7,<3",  # the ingress's settings (NoDecode needs 2.7)
        "python-json-logger>=3.1,<5",  # JSON log lines (ingress and pipeline)
        "psutil>=5.9",  # the process harness (ops/local/process.py): start times, process groups, RSS, CPU
    ],
    extras_require={
        "test": [
            f"apache-beam[gcp,test]=={BEAM_VERSION}",
            "pytest>=8",
            "httpx2>=2",  # starlette.testclient's transport (its httpx one is deprecated)
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",  # make test-fast spreads its tests over the cores
            "hypothesis>=6.100",
            "schemathesis>=3.30",
            "python-hcl2>=4.3",
            "jsonschema>=4.20",
        ],
        "dev": ["ruff>=0.6", "mypy>=1.10", "py-spy>=0.3", "types-cachetools", "types-psutil"],
    },
    entry_points={"console_scripts": ["paynow=ops.cli:main"]},
)
