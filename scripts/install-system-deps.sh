#!/usr/bin/env bash
# Install the Debian packages the stack, tests and benchmarks need when they are missing; check the rest.
set -euo pipefail

missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
# the local stack's Prometheus, and promtool for the alert unit tests (tests/prometheus)
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
command -v wrk >/dev/null || missing+=(wrk)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v python3.11 >/dev/null || command -v python3 >/dev/null || missing+=(python3 python3-venv)

if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v gcloud >/dev/null; then
  cat >&2 <<'MSG'
error: the Google Cloud CLI (gcloud) is not installed, and it is not in Debian's archive.
Install it with the emulator components, e.g. from Google's apt repository:
  apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator google-cloud-cli-firestore-emulator
or point CLOUDSDK_ROOT at an SDK that has platform/pubsub-emulator and platform/cloud-firestore-emulator.
MSG
  exit 1
fi
