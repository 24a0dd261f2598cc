"""The kind recipe (`make kind-up`, `kind-deploy`, `kind-e2e`, `kind-down`) in its dry-run mode.

No kind cluster can run here (no kind binary or node image can be fetched), so the scripts are
checked by what they would do: under KIND_DRY_RUN=1 each target prints every command it would run,
in order, and runs none of them. The tools a real run needs (kind, kubectl, docker, curl) are put
on PATH as tripwires that record any call: a dry run that touched one fails here.

The printed commands are also checked against the manifests they act on (image tags, the job and
Deployment names, the model folder the server is pointed at) and the pins they install.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TRIPWIRES = ("kind", "kubectl", "docker", "curl")


@pytest.fixture(scope="module")
def tripwire_dir(tmp_path_factory) -> Path:
    """Stand-ins for the real tools that only record that they were called, then fail."""
    bin_dir = tmp_path_factory.mktemp("tripwires")
    log = bin_dir / "called.log"
    for tool in TRIPWIRES:
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit 97\n')
        script.chmod(0o755)
    return bin_dir


def dry_run(tripwire_dir: Path, target: str, **env: str) -> list[str]:
    """The commands `make TARGET KIND_DRY_RUN=1` prints (the `+ ` lines), checking it ran none."""
    log = tripwire_dir / "called.log"
    log.unlink(missing_ok=True)
    environ = {**os.environ, "PATH": f"{tripwire_dir}:{os.environ['PATH']}", **env}
    done = subprocess.run(
        ["make", "-s", target, "KIND_DRY_RUN=1"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"make {target} KIND_DRY_RUN=1 failed:\n{done.stdout}{done.stderr}"
    assert not log.exists(), f"the dry run of {target} ran: {log.read_text()}"
    commands = [line[2:] for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert commands, done.stdout
    for command in commands:
        shlex.split(command.removesuffix(" &").split("   #")[0])  # printed as a shell would read it
    return commands


def in_order(commands: list[str], *patterns: str) -> None:
    """Each pattern matches a command, in this order (other commands may come between)."""
    position = 0
    for pattern in patterns:
        for index in range(position, len(commands)):
            if re.search(pattern, commands[index]):
                position = index + 1
                break
        else:
            listing = "\n".join(commands)
            pytest.fail(f"no command matching {pattern!r} after position {position}:\n{listing}")


@cache
def render(directory: str) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kind_objects(kind: str, source: str = "k8s/overlays/kind") -> list[dict]:
    return [o for o in render(source) if o["kind"] == kind]


def constraint(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def test_kind_cluster_config_pins_the_node_image():
    config = yaml.safe_load((REPO / "k8s/kind/cluster.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    images = {node["image"] for node in config["nodes"]}
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", image), image
    assert {node["role"] for node in config["nodes"]} == {"control-plane", "worker"}
    assert config["networking"]["apiServerAddress"] == "127.0.0.1"


def test_kind_up_creates_the_cluster_and_installs_the_operators(tripwire_dir):
    commands = dry_run(tripwire_dir, "kind-up")
    kfp = re.escape(constraint("kfp-server-api"))  # the backend release the client pin speaks to
    in_order(
        commands,
        r"^kind create cluster --name kubedetect --config k8s/kind/cluster.yaml\b",
        r"^kubectl .*apply --server-side -k "
        r"'?github\.com/kubeflow/trainer\.git/manifests/overlays/standalone\?ref=v1\.9\.4'?$",
        r"^kubectl .*-n kubeflow wait --for=condition=Available deployment/training-operator",
        rf"^kubectl .*apply -k '?github\.com/kubeflow/pipelines/manifests/kustomize/"
        rf"cluster-scoped-resources\?ref={kfp}'?$",
        r"^kubectl .*wait --for=condition=established .*crd/applications\.app\.k8s\.io",
        rf"^kubectl .*apply -k '?github\.com/kubeflow/pipelines/manifests/kustomize/env/"
        rf"platform-agnostic\?ref={kfp}'?$",
        r"^kubectl .*-n kubeflow wait --for=condition=Available deployment --all",
    )
    for command in commands:
        if command.startswith("kubectl"):
            assert "--context kind-kubedetect" in command, (
                f"not pinned to the kind cluster: {command}"
            )


def test_kind_up_can_leave_kfp_out(tripwire_dir):
    commands = dry_run(tripwire_dir, "kind-up", KIND_WITH_KFP="0")
    assert not [c for c in commands if "kubeflow/pipelines" in c]
    assert [c for c in commands if "kubeflow/trainer" in c]


def test_kind_deploy_builds_loads_and_applies(tripwire_dir):
    commands = dry_run(tripwire_dir, "kind-deploy")
    (deployment,) = kind_objects("Deployment")
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    (tfjob,) = kind_objects("TFJob", "k8s/kind/e2e/tfjob")
    (trainer,) = tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    # The images built and loaded are exactly those the kind manifests run.
    in_order(
        commands,
        rf"docker build --target trainer --tag {re.escape(trainer['image'])} .*\.$",
        rf"docker build --target server --tag {re.escape(server['image'])} .*\.$",
        rf"^kind load docker-image --name kubedetect {re.escape(trainer['image'])} "
        rf"{re.escape(server['image'])}$",
        r"^kubectl --context kind-kubedetect apply -k k8s/overlays/kind$",
    )
    for command in commands:
        if "docker build" in command:
            assert "DOCKER_BUILDKIT=1" in command


def test_kind_deploy_passes_the_base_image_and_network(tripwire_dir):
    commands = dry_run(
        tripwire_dir, "kind-deploy", BASE_IMAGE="my-python:3.11", BUILD_NETWORK="host"
    )
    builds = [c for c in commands if "docker build" in c]
    assert len(builds) == 2
    for build in builds:
        assert "--build-arg BASE_IMAGE=my-python:3.11" in build and "--network host" in build


def test_kind_e2e_trains_quantizes_deploys_and_calls_the_service(tripwire_dir):
    commands = dry_run(tripwire_dir, "kind-e2e")
    namespace = kind_objects("Deployment")[0]["metadata"]["namespace"]
    (tfjob,) = kind_objects("TFJob", "k8s/kind/e2e/tfjob")
    jobs = {
        path: yaml.safe_load((REPO / path).read_text())
        for path in ("k8s/kind/e2e/data-job.yaml", "k8s/kind/e2e/quantize-job.yaml")
    }
    data_job, quantize_job = (jobs[p]["metadata"]["name"] for p in jobs)
    # The server is pointed at the int8 variant the quantize Job writes, as the serving pods see
    # it (the workspace's models/ folder is mounted at /models).
    (quantize,) = jobs["k8s/kind/e2e/quantize-job.yaml"]["spec"]["template"]["spec"]["containers"]
    out_dir = quantize["args"][1]
    assert quantize["args"][2:] == ["--mode", "int8"] and out_dir.startswith("/workspace/models/")
    served = "/models/" + out_dir.removeprefix("/workspace/models/") + "/int8"
    ns = rf"-n {namespace}"
    in_order(
        commands,
        rf"{ns} apply -f k8s/kind/e2e/data-job\.yaml$",
        rf"{ns} wait --for=condition=complete job/{data_job} ",
        rf"{ns} apply -k k8s/kind/e2e/tfjob$",
        rf"{ns} wait --for=condition=Succeeded tfjob/{tfjob['metadata']['name']} ",
        rf"{ns} apply -f k8s/kind/e2e/quantize-job\.yaml$",
        rf"{ns} wait --for=condition=complete job/{quantize_job} ",
        rf"{ns} set env deployment/kubedetect-server KUBEDETECT_MODEL_DIR={re.escape(served)}$",
        rf"{ns} rollout status deployment/kubedetect-server ",
        rf"{ns} port-forward --address 127.0.0.1 svc/kubedetect-server (\d+):8080 &$",
        r"^curl -fsS http://127\.0\.0\.1:\d+/v2/health/ready",
        r"^docker run .*kubedetect-trainer:kind kubedetect data synth ",
        r"^curl -fsS -X POST .*--data-binary @\S+\.jpg http://127\.0\.0\.1:\d+/v1/detect$",
    )
    # Only loopback is ever called.
    for command in commands:
        for url in re.findall(r"https?://[^\s']+", command):
            assert url.startswith("http://127.0.0.1:"), url


def test_kind_e2e_can_run_the_pipeline_instead(tripwire_dir):
    commands = dry_run(
        tripwire_dir, "kind-e2e", KIND_E2E="pipeline", KIND_PIPELINE_PARAMS="--param epochs=1"
    )
    namespace = kind_objects("Deployment")[0]["metadata"]["namespace"]
    (data_job,) = yaml.safe_load_all((REPO / "k8s/kind/e2e/data-job.yaml").read_text())
    data_uri = data_job["spec"]["template"]["spec"]["containers"][0]["args"][0].split()[3]
    # The steps and TFJob workers run the kind-loaded image (a setting, not a parameter), in the
    # kind overlay's namespace, on the data the data Job wrote.
    settings = rf"--image kubedetect-trainer:kind --namespace {namespace}"
    in_order(
        commands,
        r"apply -f k8s/kind/e2e/data-job\.yaml$",
        rf"kubedetect pipeline compile -o \S+\.yaml {settings}$",
        r"port-forward --address 127\.0\.0\.1 svc/ml-pipeline-ui \d+:80 &$",
        rf"kubedetect pipeline submit --host http://127\.0\.0\.1:\d+ {settings} "
        rf"--experiment kind-e2e --param data_uri={re.escape(data_uri)} --param epochs=1$",
        r"wait '?--for=jsonpath=\{\.status\.phase\}=Succeeded'? workflow/",
        r"rollout status deployment/kubedetect-server ",
        r"^curl -fsS -X POST .* http://127\.0\.0\.1:\d+/v1/detect$",
    )
    assert not [c for c in commands if "tfjob" in c]


def test_kind_e2e_refuses_an_unknown_mode(tripwire_dir):
    environ = {**os.environ, "PATH": f"{tripwire_dir}:{os.environ['PATH']}", "KIND_E2E": "nope"}
    done = subprocess.run(
        ["make", "-s", "kind-e2e", "KIND_DRY_RUN=1"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "KIND_E2E is tfjob or pipeline" in done.stderr


def test_kind_down_deletes_the_cluster(tripwire_dir):
    assert dry_run(tripwire_dir, "kind-down") == ["kind delete cluster --name kubedetect"]


def test_without_dry_run_missing_tools_are_named(tmp_path):
    """A real run on a machine without kind says so first, before doing anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "make", "env", "sh"):  # what make and the script need
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True)
        (bin_dir / tool).symlink_to(real.stdout.strip())
    done = subprocess.run(
        ["make", "-s", "kind-down"],
        cwd=REPO,
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "'kind' is needed and not on PATH" in done.stderr
