#!/usr/bin/env bash
# make kind-down: delete the kind cluster (and everything in it). KIND_DRY_RUN=1 prints only.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kind

run kind delete cluster --name "$KIND_CLUSTER"
