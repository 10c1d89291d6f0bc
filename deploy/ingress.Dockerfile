# The ingress image for Cloud Run (both regions run this one image). Build context: the repository root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY setup.py pyproject.toml ./
COPY schemas schemas
COPY ingress ingress
# setup.py's install_requires include Beam (the pipeline's), so this image is larger than the ingress needs.
RUN pip install . && pip check

RUN useradd --system --uid 10001 paynow
USER 10001

# Cloud Run sets PORT; HOST=0.0.0.0 comes from the service's environment (deploy/ingress.tf).
EXPOSE 8080
CMD ["python", "-m", "ingress"]
