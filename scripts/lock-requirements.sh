#!/usr/bin/env bash
# Regenerate the hash-locked requirements the images install with `pip install --require-hashes`:
#   deploy/requirements/ingress.in   -> deploy/requirements/ingress.txt    (deploy/ingress.Dockerfile)
#   deploy/requirements/reconcile.in -> deploy/requirements/reconcile.txt  (deploy/reconcile.Dockerfile)
#   templates/requirements.in        -> templates/requirements.txt         (templates/Dockerfile)
# with pip-tools (`pip install pip-tools`), on Python 3.11 like the images. Run after changing a .in file or to take
# updates; review and commit the .txt diff. Usage: scripts/lock-requirements.sh [PYTHON (default python3.11)]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-python3.11}
"$PYTHON" -m piptools --version >/dev/null 2>&1 || { echo "install pip-tools: $PYTHON -m pip install pip-tools" >&2; exit 2; }
for input in deploy/requirements/ingress.in deploy/requirements/reconcile.in templates/requirements.in; do
  CUSTOM_COMPILE_COMMAND="scripts/lock-requirements.sh" "$PYTHON" -m piptools compile --quiet --generate-hashes \
    --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --index-url https://pypi.org/simple \
    --output-file "${input%.in}.txt" "$input"
done
