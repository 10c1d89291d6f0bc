#!/usr/bin/env bash
# Build and launch the paynow-ledger Dataflow Flex Template: every gcloud parameter spelled out.
#
#   scripts/flex-template.sh image    # Cloud Build, as paynow-builder: templates/Dockerfile -> Artifact Registry
#                                     # (launcher + worker image) and the template spec JSON on gs://$PROJECT-templates
#   scripts/flex-template.sh build    # the same Cloud Build (only the builder may write template specs)
#   scripts/flex-template.sh run      # gcloud dataflow flex-template run: start the streaming job in $REGION
#   scripts/flex-template.sh update   # the same job name, --update: in-place update (step names are stable)
#   scripts/flex-template.sh replace  # drain the running job, wait until it is drained, then run: for a graph the
#                                     # in-place update refuses (in-flight messages stay on the subscription)
#   scripts/flex-template.sh all      # image + run
#
# Settings come from the environment (defaults in brackets): PROJECT (required), REGION [us-central1],
# ROLE [primary; standby for the second job], REPOSITORY [paynow], BUCKET [$PROJECT-dataflow],
# TEMPLATE_BUCKET [$PROJECT-templates],
# TAG [image, build, all: git short hash; run, update, replace: required, a template that was built],
# MIN_COMPATIBLE [update, replace: the running job's own value (its min_compatible label); run: the newest job of
# that name's, else 2], TRANSFORM_NAME_MAPPINGS [update: none; JSON {"OldStep":"NewStep"} for renamed steps],
# PIPELINE_LOG_LEVEL [DEBUG: the per-event lines the log-based metrics read; deploy/README.md "Cost"],
# FIRESTORE_DATABASE [(default)], MAX_WORKERS [3], NUM_WORKERS [1], MACHINE_TYPE [n2-standard-2].
# DRY_RUN=1 prints the commands instead of running them (no gcloud needed; read-only queries are printed too).
set -euo pipefail

cd "$(dirname "$0")/.."

usage() {
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
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
  run | update | replace) TAG=${TAG:?set TAG to a built template: gcloud storage ls gs://${BUCKET}/templates/ (paynow-ledger-TAG.json)} ;;
  *) TAG=${TAG:-$(git rev-parse --short HEAD 2>/dev/null || date -u +%Y%m%d-%H%M%S)} ;;
esac
MIN_COMPATIBLE=${MIN_COMPATIBLE:-}
TRANSFORM_NAME_MAPPINGS=${TRANSFORM_NAME_MAPPINGS:-}
PIPELINE_LOG_LEVEL=${PIPELINE_LOG_LEVEL:-DEBUG}
TEMPLATE_BUCKET=${TEMPLATE_BUCKET:-${PROJECT}-templates}
FIRESTORE_DATABASE=${FIRESTORE_DATABASE:-(default)}
MAX_WORKERS=${MAX_WORKERS:-3}
NUM_WORKERS=${NUM_WORKERS:-1}
MACHINE_TYPE=${MACHINE_TYPE:-n2-standard-2}

# The pipeline's per-event log lines (logger "pipeline", DEBUG) feed the log-based metrics in deploy/monitoring.tf
# (worker p95, dead letters, schema drops); only that logger is raised, Beam's own loggers stay at INFO.
# The image and template live in the primary region's registry and one bucket; both jobs use the same ones.
IMAGE_REGION=${IMAGE_REGION:-us-central1}
IMAGE="${IMAGE_REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/paynow-ledger-pipeline:${TAG}"
TEMPLATE="gs://${TEMPLATE_BUCKET}/paynow-ledger-${TAG}.json" # writable by paynow-builder only (deploy/iam.tf)
JOB_NAME="paynow-ledger-${REGION}"
SERVICE_ACCOUNT="pipe-${REGION}@${PROJECT}.iam.gserviceaccount.com" # deploy/iam.tf
BUILD_ACCOUNT="projects/${PROJECT}/serviceAccounts/paynow-builder@${PROJECT}.iam.gserviceaccount.com"
SUBSCRIPTION="projects/${PROJECT}/subscriptions/paynow-events-pipeline"
DLQ_TOPIC="projects/${PROJECT}/topics/paynow-events-dlq"
# deploy/network.tf: the region's subnet with Private Google Access; workers get no public IP.
SUBNETWORK="https://www.googleapis.com/compute/v1/projects/${PROJECT}/regions/${REGION}/subnetworks/paynow-dataflow-${REGION}"

die() {
  echo "flex-template.sh: $*" >&2
  exit 1
}

exec 3>&1 # the commands DRY_RUN prints, also from inside $(...)

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@" >&3
    printf '\n' >&3
  else
    "$@"
  fi
}

# A read-only query whose answer the script needs: DRY_RUN prints it and answers DRY_RUN_ANSWER [dry-run].
query() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    run "$@"
    echo "${DRY_RUN_ANSWER:-dry-run}"
  else
    "$@"
  fi
}

# The id of the job named $JOB_NAME in $REGION: the active one ($1 = active), or the newest of any state ($1 = all).
job_id() {
  query gcloud dataflow jobs list --project "$PROJECT" --region "$REGION" --status "$1" \
    --filter "name=${JOB_NAME}" --limit 1 --format 'value(id)'
}

# A job's own record of a setting: the label this script gave it at launch (jobs list does not return labels).
job_label() {
  query gcloud dataflow jobs describe "$1" --project "$PROJECT" --region "$REGION" --full --format "value(labels.$2)"
}

# update and replace keep the running job's min_compatible unless MIN_COMPATIBLE is given: a plain update must not
# undo a raise (RUNBOOK.md "Upgrading minCompatible to 3"). run takes the newest job's value, else the codec's 2.
resolve_min_compatible() {
  [ -n "$MIN_COMPATIBLE" ] && return
  local id
  id=$(job_id "$1")
  if [ -z "$id" ]; then
    [ "$1" = all ] || die "no active job ${JOB_NAME} in ${REGION}: start one with run"
    MIN_COMPATIBLE=2
    return
  fi
  MIN_COMPATIBLE=$(job_label "$id" min_compatible)
  [ "${DRY_RUN:-0}" = 1 ] && MIN_COMPATIBLE=2 && return
  [[ $MIN_COMPATIBLE =~ ^[0-9]+$ ]] || die "job $id has no min_compatible label: set MIN_COMPATIBLE explicitly"
}

# One Cloud Build as paynow-builder: the image, then the template spec (templates/cloudbuild.yaml runs
# `gcloud dataflow flex-template build` with templates/metadata.json).
image() {
  run gcloud builds submit . \
    --project "$PROJECT" \
    --region "$IMAGE_REGION" \
    --service-account "$BUILD_ACCOUNT" \
    --gcs-source-staging-dir "gs://${BUCKET}/staging/cloudbuild-source" \
    --config templates/cloudbuild.yaml \
    --substitutions "_IMAGE=${IMAGE},_TEMPLATE=${TEMPLATE}"
}

launch() {
  local update_flag=()
  if [ "${1:-}" = update ]; then
    update_flag=(--update)
    [ -n "$TRANSFORM_NAME_MAPPINGS" ] && update_flag+=(--transform-name-mappings "$TRANSFORM_NAME_MAPPINGS")
  fi
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
    --subnetwork "$SUBNETWORK" \
    --disable-public-ips \
    --additional-user-labels "app=paynow-ledger,role=${ROLE},template_tag=${TAG},min_compatible=${MIN_COMPATIBLE}" \
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
    --parameters "sdk_harness_log_level_overrides={\"pipeline\":\"${PIPELINE_LOG_LEVEL}\"}"
}

# Drain (finish in-flight work, acknowledge it, stop reading), wait for JOB_STATE_DRAINED, start the new job.
replace() {
  local id state
  id=$(job_id active)
  [ -n "$id" ] || die "no active job ${JOB_NAME} in ${REGION}: start one with run"
  # Before draining: a missing template would leave the region without a job.
  run gcloud storage objects describe "$TEMPLATE" --format='value(name)'
  run gcloud dataflow jobs drain "$id" --project "$PROJECT" --region "$REGION"
  while :; do
    state=$(query gcloud dataflow jobs describe "$id" --project "$PROJECT" --region "$REGION" --format 'value(currentState)')
    case "$state" in
      JOB_STATE_DRAINED | dry-run) break ;;
      JOB_STATE_DRAINING | JOB_STATE_RUNNING) sleep 30 ;;
      *) die "job $id is $state, not draining: look at it before starting a new one" ;;
    esac
  done
  launch
}

case "$command" in
  image | build) image ;;
  run) resolve_min_compatible all; launch ;;
  update) resolve_min_compatible active; launch update ;;
  replace) resolve_min_compatible active; replace ;;
  all) image; resolve_min_compatible all; launch ;;
  *) usage ;;
esac
