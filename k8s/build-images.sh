#!/usr/bin/env bash
# Build kubedetect's two images from the Dockerfile at the repository's root:
#   kubedetect-trainer:TAG   (--target trainer; TF_EXTRA=tf-gpu with --gpu)
#   kubedetect-server:TAG    (--target server)
#
# Usage: k8s/build-images.sh [--tag TAG] [--base-image IMAGE] [--network MODE] [--gpu]
#                            [--only trainer|server]
#   --tag         image tag (default: the project's version, 0.1.0)
#   --base-image  the Python base image (default: python:3.11-slim; a stand-in where none can be
#                 pulled, see k8s/ci/docker-engine.sh)
#   --network     the build's network (`host` where the engine has no bridge, as in CI)
#   --gpu         the trainer with tensorflow[and-cuda], tagged TAG-gpu
# With DRY_RUN=1 (or KIND_DRY_RUN=1) it prints the commands and runs none.
#
# BuildKit is needed (pip cache mounts). `docker build` uses it through the buildx plugin; a
# Docker CLI older than 23 has it built in (DOCKER_BUILDKIT=1). Where `docker` on PATH is a newer
# CLI without buildx (as on these CI machines, beside Debian's docker.io 20.10 CLI), the script
# picks the first docker on PATH that can build with BuildKit; DOCKER=/path/to/docker overrides.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="0.1.0"
BASE_IMAGE=""
NETWORK=""
GPU=0
ONLY=""
DRY_RUN="${DRY_RUN:-${KIND_DRY_RUN:-0}}"

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --tag) TAG="$2"; shift 2 ;;
        --base-image) BASE_IMAGE="$2"; shift 2 ;;
        --network) NETWORK="$2"; shift 2 ;;
        --gpu) GPU=1; shift ;;
        --only) ONLY="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "build-images.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case "$ONLY" in "" | trainer | server) ;; *) echo "build-images.sh: --only trainer or server" >&2; exit 2 ;; esac

# A word as the shell would need it: bare when safe, quoted otherwise.
quote() {
    local word
    for word in "$@"; do
        if [[ "$word" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s ' "$word"; else printf '%s ' "${word@Q}"; fi
    done
}

# A docker CLI that builds with BuildKit, and how.
pick_docker() {
    if [[ -n "${DOCKER:-}" ]]; then
        echo "$DOCKER"
        return
    fi
    local candidate major
    while read -r candidate; do
        if "$candidate" buildx version >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
        major="$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)" || true
        if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 23)); then
            echo "$candidate"
            return
        fi
    done < <(type -ap docker)
    echo "build-images.sh: no docker CLI here can build with BuildKit: install the buildx plugin" >&2
    exit 1
}

build() {
    local target="$1" image="$2"
    shift 2
    local cmd=(env DOCKER_BUILDKIT=1 "$DOCKER" build --target "$target" --tag "$image")
    [[ -n "$BASE_IMAGE" ]] && cmd+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    [[ -n "$NETWORK" ]] && cmd+=(--network "$NETWORK")
    cmd+=("$@" .)
    local line
    line="$(quote "${cmd[@]}")"
    printf '+ %s\n' "${line% }"
    if [[ "$DRY_RUN" != 1 ]]; then
        "${cmd[@]}"
    fi
}

cd "$REPO"
if [[ "$DRY_RUN" == 1 ]]; then DOCKER="${DOCKER:-docker}"; else DOCKER="$(pick_docker)"; fi

if [[ -z "$ONLY" || "$ONLY" == trainer ]]; then
    if ((GPU)); then
        build trainer "kubedetect-trainer:$TAG-gpu" --build-arg TF_EXTRA=tf-gpu
    else
        build trainer "kubedetect-trainer:$TAG"
    fi
fi
if [[ -z "$ONLY" || "$ONLY" == server ]]; then
    build server "kubedetect-server:$TAG"
fi
