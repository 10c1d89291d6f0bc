# The ingress image for Cloud Run (both regions run this one image). Build context: the repository root.
# Base pinned by digest (scripts/pin-base-images.sh); dependencies hash-locked (deploy/requirements/ingress.txt,
# scripts/lock-requirements.sh): only what the ingress imports, no Beam.
FROM python:3.11-slim@sha256:0000000000000000000000000000000000000000000000000000000000000000

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY deploy/requirements/ingress.txt requirements.txt
RUN pip install --require-hashes --no-deps -r requirements.txt
COPY setup.py pyproject.toml ./
COPY schemas schemas
COPY ingress ingress
# The package itself without its install_requires (they include the pipeline's Beam); the import proves the
# locked set is complete for the ingress.
RUN pip install --no-deps . && python -c "import ingress.__main__"

RUN useradd --system --uid 10001 paynow
USER 10001

# Cloud Run sets PORT; HOST=0.0.0.0 comes from the service's environment (deploy/ingress.tf).
EXPOSE 8080
CMD ["python", "-m", "ingress"]
