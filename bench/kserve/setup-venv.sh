#!/usr/bin/env bash
# Create the KServe virtualenv (default: .venv-kserve at the repository root), or do nothing if
# it already holds exactly the pins of constraints.txt beside this script. KServe lives apart
# from .venv because its pins (kubernetes, urllib3) conflict with kfp's.
#   bench/kserve/setup-venv.sh [VENV]        (also: KSERVE_VENV=..., PYTHON=python3.11)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${KSERVE_VENV:-$here/../../.venv-kserve}}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$venv/.installed-$(cat "$here/requirements.txt" "$here/constraints.txt" | sha256sum | cut -c1-16)"

mkdir -p "$(dirname "$venv")"
exec 9>"${TMPDIR:-/tmp}/kubedetect-kserve-venv-$(echo "$venv" | sha256sum | cut -c1-12).lock"
flock 9  # a test run and a benchmark may ask at once
if [ -f "$stamp" ]; then
    exit 0
fi
echo "creating the KServe virtualenv in $venv (about 500 MB, a minute or two)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
echo "*" > "$venv/.gitignore"  # never committed
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    -c "$here/constraints.txt" -r "$here/requirements.txt"
touch "$stamp"
