#!/usr/bin/env bash
# Build and launch the paynow-ledger Dataflow Flex Template: every gcloud parameter spelled out.
#
#   scripts/flex-template.sh image    # Cloud Build: templates/Dockerfile -> Artifact Registry (launcher + worker image)
#   scripts/flex-template.sh build    # gcloud dataflow flex-template build: template spec JSON on GCS
#   scripts/flex-template.sh run      # gcloud dataflow flex-template run: start the streaming job in $REGION
#   scripts/flex-template.sh update   # the same job name, --update: in-place update (step names are stable)
#   scripts/flex-template.sh all      # image + build + run
#
# Settings come from the environment (defaults in brackets): PROJECT (required), REGION [us-central1],
# ROLE [primary; standby for the second job], REPOSITORY [paynow], BUCKET [$PROJECT-dataflow],
# TAG [image, build, all: git short hash; run, update: required, a template that was built], MIN_COMPATIBLE [2],
# FIRESTORE_DATABASE [(default)], MAX_WORKERS [3], NUM_WORKERS [1], MACHINE_TYPE [n2-standard-2].
# DRY_RUN=1 prints the commands instead of running them (no gcloud needed).
set -euo pipefail

cd "$(dirname "$0")/.."

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -eq 1 ] || usage
command=$1

PROJECT=${PROJECT:?set PROJECT to the Google Cloud project id}
REGION=${REGION:-us-central1}
ROLE=${ROLE:-primary}
REPOSITORY=${REPOSITORY:-paynow}
BUCKET=${BUCKET:-${PROJECT}-dataflow}
# run/update never guess the tag: mid-incident the local checkout's HEAD is rarely a template that was built.
case "$command" in
  run | update) TAG=${TAG:?set TAG to a built template: gcloud storage ls gs://${BUCKET}/templates/ (paynow-ledger-TAG.json)} ;;
  *) TAG=${TAG:-$(git rev-parse --short HEAD 2>/dev/null || date -u +%Y%m%d-%H%M%S)} ;;
esac
MIN_COMPATIBLE=${MIN_COMPATIBLE:-2}
FIRESTORE_DATABASE=${FIRESTORE_DATABASE:-(default)}
MAX_WORKERS=${MAX_WORKERS:-3}
NUM_WORKERS=${NUM_WORKERS:-1}
MACHINE_TYPE=${MACHINE_TYPE:-n2-standard-2}

# The pipeline's per-event log lines (logger "pipeline", DEBUG) feed the log-based metrics in deploy/monitoring.tf;
# only that logger is raised to DEBUG, Beam's own loggers stay at INFO.
# The image and template live in the primary region's registry and one bucket; both jobs use the same ones.
IMAGE_REGION=${IMAGE_REGION:-us-central1}
IMAGE="${IMAGE_REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/paynow-ledger-pipeline:${TAG}"
TEMPLATE="gs://${BUCKET}/templates/paynow-ledger-${TAG}.json"
JOB_NAME="paynow-ledger-${REGION}"
SERVICE_ACCOUNT="pipe-${REGION}@${PROJECT}.iam.gserviceaccount.com" # deploy/iam.tf
BUILD_ACCOUNT="projects/${PROJECT}/serviceAccounts/paynow-builder@${PROJECT}.iam.gserviceaccount.com"
SUBSCRIPTION="projects/${PROJECT}/subscriptions/paynow-events-pipeline"
DLQ_TOPIC="projects/${PROJECT}/topics/paynow-events-dlq"

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

image() {
  run gcloud builds submit . \
    --project "$PROJECT" \
    --region "$IMAGE_REGION" \
    --service-account "$BUILD_ACCOUNT" \
    --gcs-source-staging-dir "gs://${BUCKET}/staging/cloudbuild-source" \
    --config templates/cloudbuild.yaml \
    --substitutions "_IMAGE=${IMAGE}"
}

build() {
  run gcloud dataflow flex-template build "$TEMPLATE" \
    --project "$PROJECT" \
    --image "$IMAGE" \
    --sdk-language PYTHON \
    --metadata-file templates/metadata.json
}

launch() {
  local update_flag=()
  [ "${1:-}" = update ] && update_flag=(--update)
  # Fail before touching the job when no template spec was built for TAG.
  run gcloud storage objects describe "$TEMPLATE" --format='value(name)'
  run gcloud dataflow flex-template run "$JOB_NAME" \
    "${update_flag[@]}" \
    --project "$PROJECT" \
    --region "$REGION" \
    --template-file-gcs-location "$TEMPLATE" \
    --service-account-email "$SERVICE_ACCOUNT" \
    --staging-location "gs://${BUCKET}/staging" \
    --temp-location "gs://${BUCKET}/temp" \
    --enable-streaming-engine \
    --num-workers "$NUM_WORKERS" \
    --max-workers "$MAX_WORKERS" \
    --worker-machine-type "$MACHINE_TYPE" \
    --additional-user-labels "app=paynow-ledger,role=${ROLE},template_tag=${TAG}" \
    --parameters "subscription=${SUBSCRIPTION}" \
    --parameters "dlq_topic=${DLQ_TOPIC}" \
    --parameters "firestore_database=${FIRESTORE_DATABASE}" \
    --parameters "min_compatible=${MIN_COMPATIBLE}" \
    --parameters "dedupe_ttl=3600" \
    --parameters "read_mode=native" \
    --parameters "max_write_attempts=5" \
    --parameters "product_refresh_seconds=60" \
    --parameters "event_ttl_days=30" \
    --parameters "metrics_port=0" \
    --parameters "sdk_container_image=${IMAGE}" \
    --parameters 'sdk_harness_log_level_overrides={"pipeline":"DEBUG"}'
}

case "$command" in
  image) image ;;
  build) build ;;
  run) launch ;;
  update) launch update ;;
  all) image; build; launch ;;
  *) usage ;;
esac
