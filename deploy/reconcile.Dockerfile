# The reconciler's image for the Cloud Run job (deploy/reconcile.tf). Build context: the repository root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY setup.py pyproject.toml ./
COPY schemas schemas
COPY ops ops
# setup.py's install_requires include Beam (the pipeline's), so this image is larger than the job needs.
RUN pip install . && pip check

RUN useradd --system --uid 10001 paynow
USER 10001

# Arguments (--since, --min-age, --json-log) come from the job's container args.
ENTRYPOINT ["python", "-m", "ops.admin.reconcile"]
