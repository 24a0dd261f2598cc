#!/usr/bin/env bash
# make kind-up: a local cluster with the Training Operator and standalone Kubeflow Pipelines.
#   KIND_WITH_KFP=0 skips KFP (then kind-e2e runs the TFJob only); KIND_DRY_RUN=1 prints, runs nothing.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kind kubectl docker

say "cluster $KIND_CLUSTER (k8s/kind/cluster.yaml)"
run kind create cluster --name "$KIND_CLUSTER" --config k8s/kind/cluster.yaml --wait 180s

say "Training Operator $TRAINING_OPERATOR_VERSION (standalone overlay: TFJob and the other v1 jobs)"
k apply --server-side \
    -k "github.com/kubeflow/trainer.git/manifests/overlays/standalone?ref=$TRAINING_OPERATOR_VERSION"
k -n kubeflow wait --for=condition=Available deployment/training-operator --timeout=300s

if [[ "${KIND_WITH_KFP:-1}" == 1 ]]; then
    say "Kubeflow Pipelines $KFP_VERSION (standalone, platform-agnostic)"
    k apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
    k wait --for=condition=established --timeout=60s crd/applications.app.k8s.io
    k apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
    k -n kubeflow wait --for=condition=Available deployment --all --timeout=900s
fi
say "cluster ready: make kind-deploy$( [[ "$KIND_DRY_RUN" == 1 ]] && echo " (dry run: nothing was run)")"
