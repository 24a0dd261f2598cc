"""The Kubernetes manifests under k8s/: what `kubectl apply -k` would send, checked before any
cluster sees it.

Every kustomization is rendered by the real `kubectl kustomize`; every rendered object is checked
by `kubernetes-validate --strict` against the API schemas of Kubernetes 1.30 and 1.37 (unknown or
misspelt fields fail), and every TFJob against the Training Operator v1.9.4 CRD schema in
../shared, made strict the same way. Then the properties users rely on: least-privilege RBAC,
the serving Deployment's probes, limits, hardening and shutdown timing, Pod Security "restricted"
for every pod the manifests create, the overlays' differences, and agreement with the settings
the pipeline uses when it submits TFJobs and rolls the server: one namespace everywhere, no
replica count where an HPA owns it, GPU TFJobs on the GPU image with their guard and /dev/shm.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from kubedetect.config import ClusterConfig, ServeConfig
from kubedetect.flags import env_name

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"

# Every kustomization in k8s/, by the directory `kubectl apply -k` takes.
KUSTOMIZATIONS = [
    "base",
    "overlays/kind",
    "overlays/gpu",
    "overlays/kserve",
    "tfjob",
    "kind/e2e/tfjob",
]
# Plain manifests applied with `kubectl apply -f` (the kind end-to-end run's Jobs).
PLAIN_FILES = ["kind/e2e/data-job.yaml", "kind/e2e/quantize-job.yaml"]
SOURCES = KUSTOMIZATIONS + PLAIN_FILES
# Those that hold only TFJobs (no built-in kinds for kubernetes-validate).
TFJOB_ONLY = ["tfjob", "kind/e2e/tfjob"]
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# Custom resources: TFJobs checked below, the KServe overlay's in test_k8s_kserve.py.
CRD_KINDS = {
    ("kubeflow.org/v1", "TFJob"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
PIPELINE_ARGS = ["/workspace/shards/r1", "/workspace/models/r1"]
POD_OWNERS = {"Deployment", "Job", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "CronJob"}


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------


@cache
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not on PATH: the manifests are rendered with the real `kubectl kustomize` "
            "(kubectl >= 1.27, kustomize v5). Install kubectl (the project's machine image has it)."
        )
    return path


@cache
def render(source: str) -> tuple[dict, ...]:
    """The objects of a kustomization (through kubectl kustomize) or of a plain manifest file."""
    path = K8S / source
    if path.is_file():
        text = path.read_text()
    else:
        done = subprocess.run(
            [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"kubectl kustomize k8s/{source} failed:\n{done.stderr}"
        text = done.stdout
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


def objects(source: str, kind: str | None = None) -> list[dict]:
    return [o for o in render(source) if kind is None or o["kind"] == kind]


def one(source: str, kind: str, name: str | None = None) -> dict:
    found = [o for o in objects(source, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"k8s/{source}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod an object makes: Deployments, Jobs, TFJob replicas."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["kind"] == "TFJob":
        return [
            (f"{name} {replica}", spec["template"]["spec"])
            for replica, spec in obj["spec"]["tfReplicaSpecs"].items()
        ]
    if obj["kind"] == "Pod":
        return [(name, obj["spec"])]
    if obj["kind"] == "CronJob":
        return [(name, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])]
    if obj["kind"] in POD_OWNERS:
        return [(name, obj["spec"]["template"]["spec"])]
    return []


def all_pod_templates() -> list[tuple[str, dict]]:
    found = []
    for source in SOURCES:
        for obj in render(source):
            found += [(f"k8s/{source}: {where}", pod) for where, pod in pod_templates(obj)]
    return found


@pytest.mark.parametrize("source", SOURCES)
def test_every_kustomization_renders(source):
    rendered = render(source)
    assert rendered, f"k8s/{source} renders nothing"
    for obj in rendered:
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name"), obj
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace"), (
                f"k8s/{source}: {obj['kind']}/{obj['metadata']['name']} has no namespace: "
                "it would land in whatever namespace kubectl's context points at"
            )


def test_every_kustomization_under_k8s_is_checked():
    """A kustomization added later cannot escape these tests."""
    found = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))
    assert found == sorted(KUSTOMIZATIONS)


# ------------------------------------------------------------------------------------------------
# Schemas: kubernetes-validate --strict for built-in kinds, the CRD's schema for TFJobs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", TFJOB_ONLY)
def test_tfjob_kustomizations_hold_only_tfjobs(source):
    """They are checked against the CRD below, not by kubernetes-validate (which skips CRDs)."""
    assert {o["kind"] for o in render(source)} == {"TFJob"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("source", [s for s in SOURCES if s not in TFJOB_ONLY])
def test_objects_pass_kubernetes_validate_strict(source, version, tmp_path):
    builtin = [o for o in render(source) if (o["apiVersion"], o["kind"]) not in CRD_KINDS]
    assert builtin
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    tool = Path(sys.executable).parent / "kubernetes-validate"
    done = subprocess.run(
        [str(tool), "--strict", "-k", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"k8s/{source} against Kubernetes {version}:\n{output}"
    # Every object really was validated (none skipped for want of a schema).
    passed = [line for line in output.splitlines() if " passed for resource " in line]
    assert len(passed) == len(builtin), output


def strict_schema(schema: dict) -> dict:
    """The CRD schema with unknown fields refused, as `kubectl apply --validate=strict` does.

    The API server prunes fields a structural schema does not declare: a misspelt field (say
    `restartPolicy` in the wrong place) would vanish silently instead of failing. So every object
    that declares its properties, and does not preserve unknown fields, gets
    additionalProperties: false. Object metadata is left as the API server checks it elsewhere.
    """
    schema = copy.deepcopy(schema)

    def walk(node: dict, top: bool = False) -> None:
        if not isinstance(node, dict):
            return
        props = node.get("properties")
        if (
            isinstance(props, dict)
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node
        ):
            node["additionalProperties"] = False
        for key, child in (props or {}).items():
            if not (top and key == "metadata"):
                walk(child)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                walk(child)

    walk(schema, top=True)
    return schema


@pytest.fixture(scope="module")
def tfjob_validator(tfjob_crd):
    crd = yaml.safe_load(tfjob_crd.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict_schema(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def all_tfjobs() -> list[tuple[str, dict]]:
    return [(f"k8s/{s}", o) for s in SOURCES for o in objects(s, "TFJob")]


def test_there_are_tfjobs_to_check():
    sources = {where for where, _ in all_tfjobs()}
    assert sources == {"k8s/tfjob", "k8s/overlays/gpu", "k8s/kind/e2e/tfjob"}


def test_every_tfjob_validates_against_the_operator_crd(tfjob_validator):
    for where, job in all_tfjobs():
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in tfjob_validator.iter_errors(job)
        ]
        assert not errors, f"{where}: TFJob {job['metadata']['name']}:\n" + "\n".join(errors)


def test_the_strict_crd_check_is_a_real_check(tfjob_validator):
    """A misspelt field and a wrong type are both refused (the plain CRD schema would let the
    misspelling through, and the API server would then silently drop it)."""
    _, job = all_tfjobs()[0]
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["tfReplicaSpecs"]["Worker"]["restartPolicies"] = "OnFailure"
    assert not tfjob_validator.is_valid(misspelt)
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["runPolicy"]["backoffLimit"] = "three"
    assert not tfjob_validator.is_valid(wrong_type)


def test_the_pipelines_tfjob_validates_against_the_strict_crd(tfjob_validator):
    """The TFJob the pipeline's train step builds (components.tfjob) passes the same check."""
    from components.tfjob import build_tfjob, to_manifest

    for cluster in (
        ClusterConfig(),
        ClusterConfig(gpus_per_worker=1),
        ClusterConfig(gpus_per_worker=2),
    ):
        job = to_manifest(build_tfjob("kubedetect-r1", PIPELINE_ARGS, 2, cluster))
        errors = [e.message for e in tfjob_validator.iter_errors(job)]
        assert not errors, errors


@pytest.mark.parametrize("where_job", all_tfjobs(), ids=lambda wj: wj[0])
def test_tfjob_is_shaped_for_the_training_operator(where_job):
    where, job = where_job
    spec = job["spec"]
    run_policy = spec["runPolicy"]
    # Explicit: the operator's own default cleanPodPolicy is None (pods linger after the job).
    assert run_policy.get("cleanPodPolicy") in ("Running", "All"), where
    assert isinstance(run_policy.get("backoffLimit"), int) and run_policy["backoffLimit"] >= 1
    assert isinstance(run_policy.get("ttlSecondsAfterFinished"), int)
    assert set(spec["tfReplicaSpecs"]) == {"Worker"}, "worker 0 is the chief; no Chief replica"
    worker = spec["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2, f"{where}: 2 workers (TF_CONFIG is only set for more than one)"
    assert worker["restartPolicy"] == "OnFailure"
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow", "the operator sets TF_CONFIG only in `tensorflow`"
    assert container["command"] == ["python", "-m", "kubedetect.training.train"]
    assert {"name": "tfjob-port", "containerPort": 2222, "protocol": "TCP"} in container["ports"]
    args = container["args"]
    assert args[0].startswith("/workspace/shards/") and args[1].startswith("/workspace/models/")
    assert args[args.index("--checkpoint-dir") + 1].startswith("/workspace/checkpoints/")
    assert "--cluster-timeout" in args, "a missing peer must end the run, not hang it"
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert {mounts[name] for name in claims} == {"/workspace"}
    assert set(claims.values()) == {one("base", "PersistentVolumeClaim")["metadata"]["name"]}
    assert pod["serviceAccountName"] == "kubedetect-trainer"
    assert pod["automountServiceAccountToken"] is False


def test_standalone_and_gpu_tfjobs_use_gpus_and_the_gpu_image():
    for source in ("tfjob", "overlays/gpu"):
        job = one(source, "TFJob")
        pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
        (container,) = pod["containers"]
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus == 1
        assert container["image"].endswith("-gpu"), "the tf-gpu build of the trainer"
        args = container["args"]
        assert args[args.index("--require-gpus") + 1] == str(gpus), "no GPU: stop, not crawl"
        (shm,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == shm]
        assert volume["emptyDir"]["medium"] == "Memory"
        assert isinstance(job["spec"]["runPolicy"]["activeDeadlineSeconds"], int)
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
    assert not objects("overlays/kind", "TFJob")


def test_kind_tfjob_runs_on_cpu_with_the_local_image():
    job = one("kind/e2e/tfjob", "TFJob")
    pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert not any("nvidia.com/gpu" in r for r in container["resources"].values())
    assert container["image"] == "kubedetect-trainer:kind"
    assert container["imagePullPolicy"] == "Never"
    assert (
        job["metadata"]["namespace"] == one("overlays/kind", "Deployment")["metadata"]["namespace"]
    )


# ------------------------------------------------------------------------------------------------
# RBAC: least privilege, evaluated as the API server would
# ------------------------------------------------------------------------------------------------


def allows(
    rules: list[dict], verb: str, group: str, resource: str, name: str | None = None
) -> bool:
    """Whether RBAC rules grant `verb` on `group/resource` (named `name`), as RBAC decides."""
    for rule in rules:
        if not any(g in (group, "*") for g in rule.get("apiGroups", [])):
            continue
        if not any(r in (resource, "*") for r in rule.get("resources", [])):
            continue
        if not any(v in (verb, "*") for v in rule.get("verbs", [])):
            continue
        names = rule.get("resourceNames")
        if names and name not in names:
            continue
        return True
    return False


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_no_cluster_wide_rights_anywhere(source):
    kinds = {o["kind"] for o in render(source)}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_pipeline_role_is_least_privilege(source):
    (role,) = objects(source, "Role")
    assert role["metadata"]["name"] == "kubedetect-pipeline"
    rules = role["rules"]
    deployment = one(source, "Deployment")["metadata"]["name"]
    tfjobs = ("kubeflow.org", "tfjobs")
    # What the pipeline needs: submit, watch and clean up TFJobs (and add a retried step's pod
    # to the owners of the job it takes over); read the workers' logs and events; roll the
    # serving Deployment (and undo a failed rollout).
    for verb in ("create", "get", "list", "watch", "patch", "delete"):
        assert allows(rules, verb, *tfjobs), verb
    for resource in ("pods", "pods/log"):
        assert allows(rules, "get", "", resource) and allows(rules, "list", "", resource)
    assert allows(rules, "list", "", "events")
    for verb in ("get", "watch", "patch"):
        assert allows(rules, verb, "apps", "deployments", deployment), verb
    # Nothing more.
    for verb in ("update", "deletecollection"):
        assert not allows(rules, verb, *tfjobs), f"{verb} tfjobs"
    for verb in ("create", "delete", "update", "patch"):
        assert not allows(rules, verb, "apps", "deployments", "some-other-deployment"), verb
    for verb in ("create", "delete", "update"):
        assert not allows(rules, verb, "apps", "deployments", deployment), f"{verb} the Deployment"
    for verb in ("create", "delete", "patch", "update"):
        assert not allows(rules, verb, "", "pods"), f"{verb} pods"
    for group, resource in [
        ("", "secrets"),
        ("", "configmaps"),
        ("", "pods/exec"),
        ("", "pods/attach"),
        ("", "serviceaccounts/token"),
        ("", "persistentvolumeclaims"),
        ("", "services"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("kubeflow.org", "pytorchjobs"),
        ("batch", "jobs"),
        ("apps", "statefulsets"),
    ]:
        for verb in (
            "get",
            "list",
            "create",
            "update",
            "patch",
            "delete",
            "escalate",
            "bind",
            "impersonate",
        ):
            assert not allows(rules, verb, group, resource, "any"), f"{verb} {group}/{resource}"
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard in {key}: {rule}"
    # A namespaced Role: the rights stop at its namespace.
    assert role["metadata"]["namespace"] == one(source, "Deployment")["metadata"]["namespace"]


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_only_the_pipeline_is_bound_to_anything(source):
    namespace = one(source, "Deployment")["metadata"]["namespace"]
    expected = {
        ("ServiceAccount", "kubedetect-pipeline", namespace),  # multi-user KFP: --service-account
        ("ServiceAccount", "pipeline-runner", namespace),  # standalone KFP's steps
    }
    subjects = set()
    for binding in objects(source, "RoleBinding"):
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "kubedetect-pipeline",
        }
        subjects |= {(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]}
    assert subjects == expected


def test_service_accounts_without_rights_carry_no_token():
    accounts = {sa["metadata"]["name"]: sa for sa in objects("base", "ServiceAccount")}
    assert set(accounts) == {"kubedetect-server", "kubedetect-trainer", "kubedetect-pipeline"}
    assert accounts["kubedetect-server"]["automountServiceAccountToken"] is False
    assert accounts["kubedetect-trainer"]["automountServiceAccountToken"] is False


# ------------------------------------------------------------------------------------------------
# The serving Deployment and its companions
# ------------------------------------------------------------------------------------------------


def server_container(source: str) -> dict:
    (container,) = one(source, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def serving_settings(source: str) -> dict[str, str]:
    deployment = one(source, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (ref,) = [e["configMapRef"]["name"] for e in container["envFrom"]]
    return one(source, "ConfigMap", ref)["data"]


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_probes_follow_the_open_inference_protocol(source):
    container = server_container(source)
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert container["args"] == ["--host", "0.0.0.0", "--port", str(port)]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/live"
    # The model load and warm-up get at least a minute before liveness may restart the pod.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    # Probes go to the health port, answered by each worker apart from its request threads.
    health = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert int(serving_settings(source)["KUBEDETECT_HEALTH_PORT"]) == health
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("health", health)


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_requests_and_limits(source):
    resources = server_container(source)["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"] and kind in resources["limits"], kind


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_serving_pod_is_hardened(source):
    pod = one(source, "Deployment")["spec"]["template"]["spec"]
    container = server_container(source)
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "kubedetect-server"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # The read-only root needs a scratch space: /tmp on an emptyDir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]]
    # The model comes read-only from the workspace PVC.
    (models,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
    assert models["readOnly"] is True
    assert volumes[models["name"]]["persistentVolumeClaim"]["claimName"] == "kubedetect-workspace"
    assert serving_settings(source)["KUBEDETECT_MODEL_DIR"].startswith("/models/")


def gunicorn_graceful_timeout(settings: dict[str, str]) -> float:
    """The graceful timeout Gunicorn will get from these settings (ServeConfig's default else)."""
    from kubedetect.flags import from_env

    return from_env(ServeConfig, settings).graceful_timeout


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_grace_period_covers_prestop_and_gunicorns_graceful_timeout(source):
    pod = one(source, "Deployment")["spec"]["template"]["spec"]
    container = server_container(source)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    graceful = gunicorn_graceful_timeout(serving_settings(source))
    grace = pod["terminationGracePeriodSeconds"]
    # Kubernetes counts the preStop hook inside the grace period; SIGKILL must not cut Gunicorn's
    # graceful shutdown short, and the margin stays small (pods should not linger).
    assert pre_stop + graceful <= grace <= pre_stop + graceful + 15, (pre_stop, graceful, grace)


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_serving_settings_are_real_serve_settings(source):
    """Every KUBEDETECT_* key of the ConfigMap is a `kubedetect serve` setting (a typo would be
    ignored silently), and the values parse as that setting's type."""
    known = {env_name(f.name) for f in dataclasses.fields(ServeConfig)}
    settings = serving_settings(source)
    assert set(settings) <= known, set(settings) - known
    from kubedetect.flags import from_env

    from_env(ServeConfig, settings)  # raises on a value of the wrong type


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_service_hpa_pdb_and_networkpolicy_point_at_the_server(source):
    deployment = one(source, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = server_container(source)
    container_port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]

    def selects(selector: dict) -> bool:
        return selector and all(pod_labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    service = one(source, "Service")
    assert selects(service["spec"]["selector"])
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ("http", container_port)
    assert selects(one(source, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])

    policy = one(source, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"]["matchLabels"])
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": container_port, "protocol": "TCP"}], (
        "only the service port"
    )
    assert policy["spec"]["egress"] == [], "the server opens no connections"

    hpas = objects(source, "HorizontalPodAutoscaler")
    if source == "overlays/kind":
        assert not hpas, "kind has no metrics-server"
        assert deployment["spec"]["replicas"] == 1
    else:
        (hpa,) = hpas
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert hpa["spec"]["minReplicas"] >= 2, "one pod can drain while another serves"


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_no_replica_count_where_an_hpa_owns_it(source):
    """`kubectl apply` of a Deployment with `replicas` resets the count the HPA has set, on
    every apply (and fights it on every rollout the pipeline makes)."""
    for hpa in objects(source, "HorizontalPodAutoscaler"):
        target = one(source, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], f"k8s/{source}: the HPA owns the replica count"


@pytest.mark.parametrize("source", ["base", "overlays/kind", "overlays/gpu"])
def test_the_serving_rollout_has_a_progress_deadline(source):
    """The deploy step undoes a rollout that the controller declares failed at this deadline."""
    assert one(source, "Deployment")["spec"]["progressDeadlineSeconds"] <= 900


def test_kind_overlay_uses_local_images_on_cpu():
    container = server_container("overlays/kind")
    assert container["image"] == "kubedetect-server:kind"
    assert container["imagePullPolicy"] == "Never", "kind-loaded images are never pulled"
    pvc = one("overlays/kind", "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"], "kind's local-path provisioner"
    assert not objects("overlays/kind", "Namespace"), "KFP's installation owns `kubeflow`"
    for obj in render("overlays/kind"):
        assert "nvidia.com/gpu" not in yaml.safe_dump(obj)


def test_base_and_gpu_pull_versioned_images():
    for source in ("base", "overlays/gpu"):
        container = server_container(source)
        name, _, tag = container["image"].rpartition(":")
        assert name == "kubedetect-server" and tag and tag != "latest"
        assert container["imagePullPolicy"] == "Always"
    assert one("base", "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("source", KUSTOMIZATIONS)
def test_no_kustomization_creates_or_relabels_a_namespace(source):
    """The namespace is KFP's (standalone: `kubeflow`): its installation owns the object, and its
    own pods do not meet Pod Security "restricted", so none is enforced from here (every pod
    kubedetect makes meets it: test_every_pod_meets_pod_security_restricted)."""
    assert not objects(source, "Namespace")


# ------------------------------------------------------------------------------------------------
# Pod Security "restricted", for every pod any manifest here creates
# ------------------------------------------------------------------------------------------------

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict) -> list[str]:
    """What the Pod Security Standard "restricted" (v1.30+) refuses in a pod spec."""
    problems = []
    pod_sc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(key)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}: {kinds - ALLOWED_VOLUMES}")
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    for c in containers:
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{where}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{where}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{where}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{where}: hostPort")
    return problems


def test_every_pod_meets_pod_security_restricted():
    templates = all_pod_templates()
    assert len(templates) >= 8  # 3 Deployments, 3 TFJobs, 2 Jobs
    for where, pod in templates:
        assert not restricted_violations(pod), f"{where}: {restricted_violations(pod)}"


def test_the_restricted_check_is_a_real_check():
    _, pod = all_pod_templates()[0]
    loose = copy.deepcopy(pod)
    loose["containers"][0]["securityContext"].pop("allowPrivilegeEscalation")
    loose["hostNetwork"] = True
    assert len(restricted_violations(loose)) == 2


def test_the_pipelines_tfjob_pods_meet_pod_security_restricted():
    """The pipeline's TFJobs land in the same namespaces as these manifests."""
    from components.tfjob import build_tfjob, to_manifest

    job = to_manifest(build_tfjob("kubedetect-r1", PIPELINE_ARGS, 2, ClusterConfig()))
    for where, pod in pod_templates(job):
        assert not restricted_violations(pod), f"{where}: {restricted_violations(pod)}"


# ------------------------------------------------------------------------------------------------
# Agreement with the pipeline's cluster settings (kubedetect.config.ClusterConfig)
# ------------------------------------------------------------------------------------------------


NAMESPACED = {
    "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "NetworkPolicy",
    "PersistentVolumeClaim", "PodDisruptionBudget", "Role", "RoleBinding", "Service",
    "ServiceAccount", "TFJob", "InferenceService", "PodMonitor",
}  # fmt: skip


@pytest.mark.parametrize("source", SOURCES)
def test_one_namespace_in_every_overlay_and_in_the_pipelines_defaults(source):
    """Steps, TFJobs, the workspace PVC and the server live in one namespace, the one KFP runs
    the steps in: a step mounts only a PVC of its own namespace, the workers and the server
    mount the same one, and a TFJob owned by a step's pod is garbage-collected at once if the
    pod is in another namespace. Every rendered object agrees with ClusterConfig's default."""
    cluster = ClusterConfig()
    rendered = render(source)
    kinds = {o["kind"] for o in rendered}
    assert kinds <= NAMESPACED, (
        f"k8s/{source}: a kind this test does not place: {kinds - NAMESPACED}"
    )
    for obj in rendered:
        where = f"k8s/{source}: {obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["namespace"] == cluster.namespace, where
        for subject in obj.get("subjects", []):
            assert subject.get("namespace") == cluster.namespace, f"{where}: {subject}"
    for pvc in objects(source, "PersistentVolumeClaim"):
        assert pvc["metadata"]["name"] == cluster.workspace_pvc
    for deployment in objects(source, "Deployment"):
        assert deployment["metadata"]["name"] == cluster.serving_deployment
    for where, pod in [(w, p) for obj in rendered for w, p in pod_templates(obj)]:
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] == cluster.workspace_pvc, where
    for job in objects(source, "TFJob"):
        pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
        assert pod["serviceAccountName"] == cluster.trainer_service_account


def test_manifests_agree_with_the_pipelines_cluster_settings():
    """What the pipeline's train and deploy steps create or patch on a cluster (by default) is
    what the kind overlay sets up: the namespace, the workspace PVC and its mount path, the
    trainer's ServiceAccount, the serving Deployment, the image names."""
    cluster = ClusterConfig()
    deployment = one("overlays/kind", "Deployment")
    assert deployment["metadata"]["namespace"] == cluster.namespace
    assert deployment["metadata"]["name"] == cluster.serving_deployment
    assert (
        one("overlays/kind", "PersistentVolumeClaim")["metadata"]["name"] == cluster.workspace_pvc
    )
    accounts = {sa["metadata"]["name"] for sa in objects("overlays/kind", "ServiceAccount")}
    assert cluster.trainer_service_account in accounts
    for where, job in all_tfjobs():
        (container,) = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {cluster.workspace_mount}, (
            where
        )
        assert container["image"].split(":")[0] == cluster.image.split(":")[0], where
    gpu_pod = one("overlays/gpu", "TFJob")["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    key, _, value = cluster.gpu_node_selector.partition("=")
    assert gpu_pod["nodeSelector"] == {key: value}
    assert gpu_pod["tolerations"][0]["key"] == cluster.gpu_toleration
