#!/usr/bin/env bash
# make kind-e2e: train a tiny model on the kind cluster, serve it, and call the service.
#
#   KIND_E2E=tfjob (default): a Job writes a synthetic VOC set and its shards to the workspace
#     volume, a 2-worker CPU TFJob trains on them (k8s/kind/e2e/tfjob), a Job quantizes the model to
#     int8, and the serving Deployment is pointed at it, as the pipeline's deploy step does.
#   KIND_E2E=pipeline: the same synthetic data, then the Kubeflow pipeline compiled and submitted
#     to the cluster's KFP (extra `--param k=v` words in KIND_PIPELINE_PARAMS), and its Argo
#     workflow waited for; the pipeline's deploy step rolls the server.
# Then: wait for the rollout, port-forward the Service to 127.0.0.1, check readiness, POST an
# image to /v1/detect and print the detections. KIND_DRY_RUN=1 prints every command, runs none.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need kubectl docker curl

MODE="${KIND_E2E:-tfjob}"
PORT="${KIND_E2E_PORT:-18080}"
KFP_PORT="${KIND_KFP_PORT:-18888}"
NS="$KIND_NAMESPACE"
MODEL_DIR=/models/e2e/quantized/int8  # the quantize Job's int8 variant, as the server sees it

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/kubedetect-kind-e2e.XXXXXX")"
FORWARDS=()
cleanup() {
    local pid
    for pid in "${FORWARDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

# A Job from a file, run afresh: Jobs are immutable, so an earlier run's is deleted first.
run_job() {
    local file="$1" name="$2" timeout="$3"
    k -n "$NS" delete -f "$file" --ignore-not-found --wait=true
    k -n "$NS" apply -f "$file"
    k -n "$NS" wait --for=condition=complete "job/$name" --timeout="$timeout"
}

# Forward a Service to 127.0.0.1:PORT in the background (stopped on exit).
forward() {
    local namespace="$1" service="$2" ports="$3"
    printf '+ %s &\n' "$(quote kubectl --context "$KIND_CONTEXT" -n "$namespace" port-forward --address 127.0.0.1 "svc/$service" "$ports")"
    if [[ "$KIND_DRY_RUN" != 1 ]]; then
        kubectl --context "$KIND_CONTEXT" -n "$namespace" port-forward --address 127.0.0.1 "svc/$service" "$ports" \
            >"$SCRATCH/forward-$service.log" 2>&1 &
        FORWARDS+=("$!")
    fi
}

# Poll a URL on loopback until it answers 2xx (a port-forward takes a moment to listen).
wait_for_url() {
    local url="$1" tries="${2:-60}"
    printf '+ %s   # until it answers, at most %s tries\n' "$(quote curl -fsS "$url")" "$tries"
    [[ "$KIND_DRY_RUN" == 1 ]] && return 0
    local i
    for ((i = 0; i < tries; i++)); do
        if curl -fsS "$url"; then echo; return 0; fi
        sleep 2
    done
    echo "kind-e2e: $url did not answer" >&2
    exit 1
}

say "synthetic data and shards on the workspace volume (Job kubedetect-e2e-data)"
k -n "$NS" apply -f k8s/kind/e2e/networkpolicy.yaml
run_job k8s/kind/e2e/data-job.yaml kubedetect-e2e-data 900s

if [[ "$MODE" == tfjob ]]; then
    say "2-worker TFJob kubedetect-train (MultiWorkerMirroredStrategy on CPU)"
    k -n "$NS" delete -k k8s/kind/e2e/tfjob --ignore-not-found --wait=true
    k -n "$NS" apply -k k8s/kind/e2e/tfjob
    k -n "$NS" wait --for=condition=Succeeded tfjob/kubedetect-train --timeout=1800s
    k -n "$NS" logs -l training.kubeflow.org/job-name=kubedetect-train,training.kubeflow.org/replica-index=0 --tail=20

    say "int8 quantization (Job kubedetect-e2e-quantize)"
    run_job k8s/kind/e2e/quantize-job.yaml kubedetect-e2e-quantize 900s

    say "deploy: point the server at $MODEL_DIR (what the pipeline's deploy step patches)"
    k -n "$NS" set env deployment/kubedetect-server "KUBEDETECT_MODEL_DIR=$MODEL_DIR"
elif [[ "$MODE" == pipeline ]]; then
    say "the Kubeflow pipeline, submitted to KFP $KFP_VERSION"
    need "$REPO/.venv/bin/kubedetect"
    # The steps and the TFJob workers run the kind-loaded trainer image, in the kind overlay's
    # namespace (where KFP runs the steps and the workspace PVC is).
    settings=(--image "kubedetect-trainer:$KIND_IMAGE_TAG" --namespace "$NS")
    run .venv/bin/kubedetect pipeline compile -o "$SCRATCH/pipeline.yaml" "${settings[@]}"
    forward kubeflow ml-pipeline-ui "$KFP_PORT:80"
    wait_for_url "http://127.0.0.1:$KFP_PORT/apis/v2beta1/healthz" 60
    # shellcheck disable=SC2206  # KIND_PIPELINE_PARAMS is a list of words on purpose
    params=(--param data_uri=/workspace/datasets/e2e ${KIND_PIPELINE_PARAMS:-})
    run .venv/bin/kubedetect pipeline submit --host "http://127.0.0.1:$KFP_PORT" \
        "${settings[@]}" --experiment kind-e2e "${params[@]}"
    say "waiting for the run's Argo workflow"
    if [[ "$KIND_DRY_RUN" == 1 ]]; then
        workflow="workflow/LATEST"
        k -n "$NS" get workflows --sort-by=.metadata.creationTimestamp -o name
    else
        workflow="$(kubectl --context "$KIND_CONTEXT" -n "$NS" get workflows \
            --sort-by=.metadata.creationTimestamp -o name | tail -n 1)"
    fi
    k -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded "$workflow" --timeout=3600s
else
    echo "kind-e2e: KIND_E2E is tfjob or pipeline, not '$MODE'" >&2
    exit 2
fi

say "the server's rollout"
k -n "$NS" rollout status deployment/kubedetect-server --timeout=600s

say "calling the service on 127.0.0.1:$PORT"
forward "$NS" kubedetect-server "$PORT:8080"
wait_for_url "http://127.0.0.1:$PORT/v2/health/ready" 60
# An image to detect on: one synthetic picture, made by the trainer image itself.
run docker run --rm --network none --user "$(id -u):$(id -g)" -v "$SCRATCH:/out" \
    "kubedetect-trainer:$KIND_IMAGE_TAG" kubedetect data synth /out/sample --images 1 --seed 3 --quiet
image="$SCRATCH/sample/JPEGImages/synth_000000.jpg"
if [[ "$KIND_DRY_RUN" != 1 ]]; then
    image="$(find "$SCRATCH/sample/JPEGImages" -name '*.jpg' | head -n 1)"
fi
run curl -fsS -X POST -H 'Content-Type: image/jpeg' --data-binary "@$image" \
    "http://127.0.0.1:$PORT/v1/detect"
echo
if [[ "$KIND_DRY_RUN" == 1 ]]; then
    say "dry run: the commands above were printed, none was run"
else
    say "kind-e2e passed: the model trained on the cluster answers at the Service"
fi
