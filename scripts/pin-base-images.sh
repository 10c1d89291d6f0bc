#!/usr/bin/env bash
# Pin every base and builder image by digest: each `FROM image:tag@sha256:...` in the Dockerfiles and each
# `name: image:tag@sha256:...` step of the Cloud Build configs gets the digest the registry serves for its tag now.
# The tag stays for readers; Docker and Cloud Build pull by the digest, so a re-pushed tag changes nothing until this
# script is run again and the diff reviewed. Needs registry access and `crane` (go-containerregistry) or `docker
# buildx`. tests/cloud/test_supply_chain.py fails on any image without a digest; `--check` fails on a digest that
# was never resolved (all zeros).
#
#   scripts/pin-base-images.sh          # resolve every tag, rewrite the files
#   scripts/pin-base-images.sh --check  # exit 1 if any image is unpinned or has the all-zero placeholder digest
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=(deploy/ingress.Dockerfile deploy/reconcile.Dockerfile templates/Dockerfile
       deploy/cloudbuild-ingress.yaml deploy/cloudbuild-reconcile.yaml templates/cloudbuild.yaml)
ZERO=sha256:0000000000000000000000000000000000000000000000000000000000000000
# image references: after FROM (Dockerfiles) or `- name:` (Cloud Build steps)
REF='^[[:space:]]*(FROM|- name:)[[:space:]]+([^[:space:]@]+)(@sha256:[0-9a-f]{64})?'

digest() {
  if command -v crane >/dev/null; then
    crane digest "$1"
  else
    docker buildx imagetools inspect "$1" --format '{{json .Manifest}}' | sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p'
  fi
}

status=0
for file in "${FILES[@]}"; do
  while IFS= read -r line; do
    [[ $line =~ $REF ]] || continue
    image=${BASH_REMATCH[2]}
    pinned=${BASH_REMATCH[3]}
    if [ "${1:-}" = --check ]; then
      if [ -z "$pinned" ] || [ "$pinned" = "@$ZERO" ]; then
        echo "$file: $image is not pinned to a resolved digest" >&2
        status=1
      fi
      continue
    fi
    resolved=$(digest "$image")
    [[ $resolved =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "$file: cannot resolve $image" >&2; exit 1; }
    sed -i -E "s#(${BASH_REMATCH[1]}[[:space:]]+)${image//./\\.}(@sha256:[0-9a-f]{64})?#\\1${image}@${resolved}#" "$file"
    echo "$file: $image@$resolved"
  done < "$file"
done
exit $status
