#!/usr/bin/env bash
# A Docker engine for the container tests on a machine that has none, as CI's machine has none.
#
# Installs docker.io, debootstrap and shellcheck from Debian (apt-get), starts
# `dockerd --bridge=none --iptables=false` in the background (no bridge, no NAT: every build and
# run uses --network host and talks only to loopback), waits until it answers, and builds the
# stand-in base image when it is absent: no image can be pulled here, so a Debian bookworm rootfs
# with python3 and venv (debootstrap), trimmed as Debian's slim images are (no docs, man pages or
# locales), stands in for python:3.11-slim. The Dockerfile takes it unchanged through
# --build-arg BASE_IMAGE=...
#
# Idempotent: a running engine and an existing base image are left as they are.
# Usage: k8s/ci/docker-engine.sh            (as root; prints the base image's name last)
# Environment: KUBEDETECT_BASE_IMAGE (default kubedetect-base:bookworm), DOCKERD_LOG,
#              DOCKER_ENGINE_TIMEOUT (seconds to wait for dockerd, default 120).
set -euo pipefail

BASE_IMAGE="${KUBEDETECT_BASE_IMAGE:-kubedetect-base:bookworm}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/kubedetect-dockerd.log}"
TIMEOUT="${DOCKER_ENGINE_TIMEOUT:-120}"
# The host's CA bundle: the package registries may be reached through a proxy with its own CA.
HOST_CA="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"

say() { printf 'docker-engine: %s\n' "$*" >&2; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
    if ((${#missing[@]})); then
        say "installing ${missing[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

engine_answers() { docker info >/dev/null 2>&1; }

start_engine() {
    if engine_answers; then
        say "engine already running"
        return
    fi
    say "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the engine outlives this script and the shell that ran it.
    setsid dockerd --bridge=none --iptables=false >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local waited=0
    until engine_answers; do
        if ((waited >= TIMEOUT)); then
            say "dockerd did not answer within ${TIMEOUT}s; the end of its log:"
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "engine up after ${waited}s"
}

build_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image $BASE_IMAGE present"
        return
    fi
    local rootfs
    rootfs="$(mktemp -d /var/tmp/kubedetect-rootfs.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the path is fixed once made
    trap "rm -rf '$rootfs'" EXIT
    say "building stand-in base image $BASE_IMAGE (debootstrap bookworm, about a minute)"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" >/dev/null
    if [[ -f "$HOST_CA" ]]; then
        cp "$HOST_CA" "$rootfs/etc/ssl/certs/ca-certificates.crt"
        printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
    fi
    # Trim as Debian's slim images do, now and for any later apt-get install in a build.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
    find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    say "base image $BASE_IMAGE built"
}

main() {
    if ((EUID != 0)); then
        say "run me as root (apt-get, dockerd)"
        exit 1
    fi
    install_packages
    start_engine
    build_base_image
    printf '%s\n' "$BASE_IMAGE"
}

main "$@"
