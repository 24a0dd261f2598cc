"""The deploy step on a cluster, against the Kubernetes API stand-in (k8s_api_stub.py): it logs the
quality gate's decision whatever it was, acts only on an approval, and moves the workspace
volume's `models/current` (where the next run's gate finds the model in service) only once the
serving Deployment runs the new model; after a rollout that failed and was undone, `current`
still names the model that serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from servers import untrained_models

from components.rollout import MODEL_ENV
from kubedetect.config import ClusterConfig
from kubedetect.flags import to_dict
from kubedetect.inference import registry

from .k8s_api_stub import K8sApiStub

NAMESPACE = "ml"
DEPLOYMENT = "kubedetect-server"
DECISION = "deploy int8 (...; not worse than the model in service: mAP@0.5:0.95 0.5 against 0.4)"


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Two quantized models (untrained, made by the project's own code): in service, and new."""
    root = tmp_path_factory.mktemp("deploy-models")
    return (
        untrained_models(str(root / "old"), input_size=64, modes=("int8",)),
        untrained_models(str(root / "new"), input_size=96, modes=("int8",)),
    )


@pytest.fixture
def cluster(tmp_path, variants):
    """A workspace whose models/current is the old model, and the stub serving it."""
    with K8sApiStub() as api:
        workspace = tmp_path / "workspace"
        old = registry.install(f"{variants[0]}/int8", str(workspace / "models"))
        served = [{"name": MODEL_ENV, "value": f"/models/{old.rsplit('/', 1)[1]}"}]
        config = ClusterConfig(namespace=NAMESPACE, workspace_mount=str(workspace))
        env = {**os.environ, "KUBECONFIG": api.write_kubeconfig(tmp_path / "kubeconfig")}
        yield api, workspace / "models", old, (json.dumps(to_dict(config)), env), served


# The component function, called in a process of its own as KFP's executor calls it.
STEP = """
import sys
from kfp.dsl import Model
from components.deploy import deploy

print("returned:", deploy(
    variants=Model(name="variants", uri=sys.argv[1]),
    variant="int8",
    approved=sys.argv[2] == "approved",
    decision=sys.argv[3],
    target="cluster",
    serving_dir="",
    cluster=sys.argv[4],
))
"""


def _deploy(variants_dir: str, step, approved: bool = True) -> subprocess.CompletedProcess:
    config, env = step
    verdict = "approved" if approved else "held"
    command = [sys.executable, "-c", STEP, variants_dir, verdict, DECISION, config]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=110)


@pytest.mark.timeout(120)
def test_current_moves_once_the_new_model_serves(cluster, variants):
    api, models, old, step, served = cluster
    api.add_deployment(NAMESPACE, DEPLOYMENT, replicas=2, env=served, rollout_gets=1)
    done = _deploy(variants[1], step)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"quality gate: {DECISION}\n")
    new = registry.current(str(models))
    in_pod = f"/models/{new.rsplit('/', 1)[1]}"
    assert new != old and done.stdout.endswith(f"returned: {in_pod}\n")
    (container,) = api.deployments[(NAMESPACE, DEPLOYMENT)]["spec"]["template"]["spec"][
        "containers"
    ]
    assert {"name": MODEL_ENV, "value": in_pod} in container["env"]


@pytest.mark.timeout(120)
def test_after_a_failed_rollout_current_still_names_the_model_that_serves(cluster, variants):
    api, models, old, step, served = cluster
    api.add_deployment(NAMESPACE, DEPLOYMENT, replicas=2, env=served, rollout_gets=None)
    done = _deploy(variants[1], step)
    assert done.returncode != 0 and "Rolled back to the previous model" in done.stderr
    assert registry.current(str(models)) == old  # the next gate compares with what serves


@pytest.mark.timeout(120)
def test_a_held_model_is_logged_and_nothing_is_touched(cluster, variants):
    api, models, old, step, _ = cluster
    done = _deploy(variants[1], step, approved=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"quality gate: {DECISION}\nheld: the model in service stays\nreturned: \n"
    )
    assert registry.current(str(models)) == old
    assert api.requests == []  # not one request to the cluster
