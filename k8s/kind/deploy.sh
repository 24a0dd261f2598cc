#!/usr/bin/env bash
# make kind-deploy: build both images, load them into the kind nodes, apply the kind overlay.
# The server starts once a model is in place (make kind-e2e puts one there).
#   BASE_IMAGE=... and BUILD_NETWORK=host are passed to the build; KIND_DRY_RUN=1 prints only.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kind kubectl docker

say "images kubedetect-trainer:$KIND_IMAGE_TAG and kubedetect-server:$KIND_IMAGE_TAG"
build=(k8s/build-images.sh --tag "$KIND_IMAGE_TAG")
[[ -n "${BASE_IMAGE:-}" ]] && build+=(--base-image "$BASE_IMAGE")
[[ -n "${BUILD_NETWORK:-}" ]] && build+=(--network "$BUILD_NETWORK")
# build-images.sh prints each docker build itself, and honours KIND_DRY_RUN.
KIND_DRY_RUN="$KIND_DRY_RUN" "${build[@]}"
run kind load docker-image --name "$KIND_CLUSTER" \
    "kubedetect-trainer:$KIND_IMAGE_TAG" "kubedetect-server:$KIND_IMAGE_TAG"

say "kubedetect (k8s/overlays/kind) into namespace $KIND_NAMESPACE"
k apply -k k8s/overlays/kind
k -n "$KIND_NAMESPACE" wait --for=jsonpath='{.status.phase}'=Bound pvc/kubedetect-workspace --timeout=120s \
    || say "the workspace volume binds when its first pod is scheduled (local-path: WaitForFirstConsumer)"
say "deployed: make kind-e2e$( [[ "$KIND_DRY_RUN" == 1 ]] && echo " (dry run: nothing was run)")"
