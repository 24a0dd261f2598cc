# Shared by the kind scripts (sourced, not run): settings, and `run`, which prints each command
# before running it, or only prints it under KIND_DRY_RUN=1.
# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings are used by the scripts that source this file

KIND_CLUSTER="${KIND_CLUSTER:-kubedetect}"
KIND_CONTEXT="kind-$KIND_CLUSTER"
# Where kubedetect runs on the kind cluster (the kind overlay's namespace: beside standalone KFP).
KIND_NAMESPACE="${KIND_NAMESPACE:-kubeflow}"
# Pinned versions: the Training Operator whose TFJob CRD the tests validate against, and the KFP
# backend release that matches the kfp-server-api pin in constraints.txt.
TRAINING_OPERATOR_VERSION="${TRAINING_OPERATOR_VERSION:-v1.9.4}"
KFP_VERSION="${KFP_VERSION:-2.17.3}"
# The image tag the kind overlay expects (k8s/overlays/kind/kustomization.yaml).
KIND_IMAGE_TAG="kind"
KIND_DRY_RUN="${KIND_DRY_RUN:-0}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO" || exit 1

say() { printf '==> %s\n' "$*" >&2; }

# A word as the shell would need it: bare when safe, quoted otherwise.
quote() {
    local word out=""
    for word in "$@"; do
        if [[ "$word" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+="$word "; else out+="${word@Q} "; fi
    done
    printf '%s' "${out% }"
}

# Print a command, then run it (unless KIND_DRY_RUN=1).
run() {
    printf '+ %s\n' "$(quote "$@")"
    if [[ "$KIND_DRY_RUN" != 1 ]]; then
        "$@"
    fi
}

# kubectl on the kind cluster's context only: never whatever context happens to be current.
k() { run kubectl --context "$KIND_CONTEXT" "$@"; }

# Fail early, with the reason, when a tool is missing (not needed for a dry run).
need() {
    [[ "$KIND_DRY_RUN" == 1 ]] && return 0
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "kind: '$tool' is needed and not on PATH (see docs/DEPLOY.md)" >&2
            exit 1
        fi
    done
}
