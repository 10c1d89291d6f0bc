# The reconciler's image for the Cloud Run job (deploy/reconcile.tf). Build context: the repository root.
# Base pinned by digest (scripts/pin-base-images.sh); dependencies hash-locked (deploy/requirements/reconcile.txt,
# scripts/lock-requirements.sh): only what the reconciler imports, no Beam.
FROM python:3.11-slim@sha256:0000000000000000000000000000000000000000000000000000000000000000

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY deploy/requirements/reconcile.txt requirements.txt
RUN pip install --require-hashes --no-deps -r requirements.txt
COPY setup.py pyproject.toml ./
COPY schemas schemas
COPY ops ops
# The package itself without its install_requires (they include the pipeline's Beam); the import proves the
# locked set is complete for the reconciler.
RUN pip install --no-deps . && python -c "import ops.admin.reconcile"

RUN useradd --system --uid 10001 paynow
USER 10001

# Arguments (--since, --min-age, --json-log) come from the job's container args.
ENTRYPOINT ["python", "-m", "ops.admin.reconcile"]
