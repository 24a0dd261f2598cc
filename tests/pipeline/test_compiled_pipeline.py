"""The compiled pipeline YAML: the DAG, the caching settings, the Kubernetes platform settings and
the parameters that Kubeflow Pipelines will see."""

import pytest
import yaml

from kubedetect.config import (
    ClusterConfig,
    GateConfig,
    PipelineConfig,
    PreprocessConfig,
    TrainConfig,
)
from kubedetect.errors import KubedetectError
from pipelines.run import compile_pipeline


def compiled(tmp_path, settings=PipelineConfig(), cluster=ClusterConfig()):
    path = compile_pipeline(str(tmp_path / "pipeline.yaml"), settings, cluster)
    with open(path) as f:
        spec, platform = yaml.safe_load_all(f.read())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def gpu_local(tmp_path_factory):
    """Compiled to train inside the step on GPUs, with a private registry."""
    cluster = ClusterConfig(
        image="registry.example/kubedetect-trainer:1.2",
        gpus_per_worker=2,
        image_pull_secret="regcred",
    )
    return compiled(
        tmp_path_factory.mktemp("p"), PipelineConfig(launcher="local", parallelism=3), cluster
    )


def test_dag_fans_out_shards_then_candidates_then_selects_evaluates_quantizes_gates_deploys(
    tmp_path,
):
    spec, _ = compiled(tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    shard_loop, candidate_loop = sorted(name for name in tasks if name.startswith("for-loop"))
    assert tasks[shard_loop]["dependentTasks"] == ["plan-shards"]
    assert tasks[shard_loop]["parameterIterator"]["items"] == {
        "inputParameter": "pipelinechannel--plan-shards-Output"
    }
    assert tasks[shard_loop]["iteratorPolicy"] == {"parallelismLimit": PipelineConfig().parallelism}
    inner = spec["components"][f"comp-{shard_loop}"]["dag"]["tasks"]
    assert list(inner) == ["preprocess-shard"]
    assert inner["preprocess-shard"]["inputs"]["parameters"]["shard_index"] == {
        "componentInputParameter": "pipelinechannel--plan-shards-Output-loop-item",
        "parameterExpressionSelector": 'parseJson(string_value)["shard_index"]',
    }
    assert tasks["merge-shards"]["dependentTasks"] == [shard_loop]
    # The candidates: planned from the parameter, then one train step each, at most
    # candidate_parallelism at once (each holds its TFJob's GPUs).
    assert tasks["plan-candidates"]["inputs"]["parameters"]["candidates"] == {
        "componentInputParameter": "candidates"
    }
    assert tasks[candidate_loop]["parameterIterator"]["items"] == {
        "inputParameter": "pipelinechannel--plan-candidates-Output"
    }
    assert tasks[candidate_loop]["iteratorPolicy"] == {
        "parallelismLimit": PipelineConfig().candidate_parallelism
    }
    assert set(tasks[candidate_loop]["dependentTasks"]) == {"merge-shards", "plan-candidates"}
    inner = spec["components"][f"comp-{candidate_loop}"]["dag"]["tasks"]
    assert list(inner) == ["train"]
    assert inner["train"]["inputs"]["parameters"]["candidate"] == {
        "componentInputParameter": "pipelinechannel--plan-candidates-Output-loop-item",
        "parameterExpressionSelector": 'parseJson(string_value)["spec"]',
    }
    # The selection gathers every candidate's model, and what it chose goes on.
    select = tasks["select-candidates"]
    assert select["dependentTasks"] == [candidate_loop]
    assert select["inputs"]["artifacts"]["models"] == {
        "taskOutputArtifact": {"outputArtifactKey": "pipelinechannel--train-model",
                               "producerTask": candidate_loop}
    }  # fmt: skip
    for step in ("evaluate", "quantize"):
        assert set(tasks[step]["dependentTasks"]) == {"merge-shards", "select-candidates"}
        assert tasks[step]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
            "outputArtifactKey": "chosen", "producerTask": "select-candidates"
        }  # fmt: skip
    assert set(tasks["quality-gate"]["dependentTasks"]) == {"merge-shards", "quantize"}
    # Deploy always runs: it logs the gate's decision and acts on it.
    assert not any(name.startswith("condition") for name in tasks)
    deploy = tasks["deploy"]["inputs"]["parameters"]
    assert deploy["variant"]["taskOutputParameter"] == {
        "outputParameterKey": "variant", "producerTask": "quality-gate"
    }  # fmt: skip
    assert deploy["approved"]["taskOutputParameter"] == {
        "outputParameterKey": "Output", "producerTask": "quality-gate"
    }  # fmt: skip
    assert deploy["decision"]["taskOutputParameter"] == {
        "outputParameterKey": "summary", "producerTask": "quality-gate"
    }  # fmt: skip


@pytest.mark.shared
def test_each_candidate_launches_a_tfjob_of_its_own_that_the_operator_accepts(tmp_path, tfjob_crd):
    """What the compiled train step submits for candidates 0 and 1 of one run: two jobs with
    names of their own, each valid under the operator's CRD, each with the candidate's flags."""
    import jsonschema

    from components.tfjob import build_tfjob, job_name, to_manifest
    from kubedetect.training.candidates import parse_flags, plan

    schema = yaml.safe_load(tfjob_crd.read_text())["spec"]["versions"][0]["schema"]
    spec, _ = compiled(tmp_path, PipelineConfig(launcher="tfjob"), ClusterConfig())
    command = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["command"][-1]
    assert 'job_name(f"{run_name}-{chosen.name}")' in command  # the compiled step names them
    run = "3f6c1e2a-5b7d-4c8e-9a0f-1d2e3c4b5a69"
    names = set()
    for candidate in plan(parse_flags("--seeds 0,1 --model-sizes tiny")):
        name = job_name(f"{run}-{candidate.name}")
        argv = ["/workspace/runs/x/shards", "/workspace/runs/x/model", *candidate.train_flags()]
        job = to_manifest(build_tfjob(name, argv, 2, ClusterConfig(gpus_per_worker=1)))
        jsonschema.validate(job, schema["openAPIV3Schema"])
        (container,) = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
        assert container["args"][2:6] == ["--seed", str(candidate.seed), "--model-size", "tiny"]
        assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] > 0
        names.add(job["metadata"]["name"])
    assert len(names) == 2 and all(len(n) <= 63 for n in names)


def test_every_step_runs_the_trainer_image_without_installing_kfp(gpu_local):
    """The CPU build everywhere but in a train step that trains on GPUs itself: its GPU build."""
    spec, _ = gpu_local
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 10
    for name, executor in executors.items():
        container = executor["container"]
        gpu = "-gpu" if name == "exec-train" else ""
        assert container["image"] == f"registry.example/kubedetect-trainer:1.2{gpu}", name
        assert "pip install" not in " ".join(container["command"]), name


def _train_task(spec: dict) -> dict:
    """The train step, inside the ParallelFor over the candidates."""
    loop = max(n for n in spec["root"]["dag"]["tasks"] if n.startswith("for-loop"))
    return spec["components"][f"comp-{loop}"]["dag"]["tasks"]["train"]


def _caching(spec: dict) -> dict[str, bool]:
    """Whether KFP may reuse each task's earlier result (an empty cachingOptions is false)."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return {
        name: task.get("cachingOptions", {}).get("enableCache", False)
        for name, task in tasks.items()
        if "cachingOptions" in task
    }


def test_data_steps_are_cached_by_the_datas_fingerprint(tmp_path):
    """A rerun on a changed folder must not reuse the old shards: `plan shards` runs every time
    and hands the folder's fingerprint to every `preprocess shard`, whose cache key (KFP: the
    input parameters and artifacts) then changes with the data."""
    spec, _ = compiled(tmp_path)
    assert _caching(spec) == {
        "plan-shards": False,  # it looks at the folder: never a stale answer
        "preprocess-shard": True,
        "merge-shards": True,
        "plan-candidates": True,
        "train": True,
        "select-candidates": True,
        "evaluate": True,
        "quantize": True,
        "quality-gate": False,  # it looks at the model in service: never a stale answer
        "deploy": False,  # it acts on the cluster
    }
    # The fingerprint comes with every shard's loop item, an input of each shard step.
    loop = min(n for n in spec["root"]["dag"]["tasks"] if n.startswith("for-loop"))
    shard = spec["components"][f"comp-{loop}"]["dag"]["tasks"]["preprocess-shard"]
    assert shard["inputs"]["parameters"]["data_fingerprint"] == {
        "componentInputParameter": "pipelinechannel--plan-shards-Output-loop-item",
        "parameterExpressionSelector": 'parseJson(string_value)["data_fingerprint"]',
    }
    shard_inputs = spec["components"]["comp-preprocess-shard"]["inputDefinitions"]["parameters"]
    assert shard_inputs["data_fingerprint"] == {"parameterType": "STRING"}
    plan = spec["deploymentSpec"]["executors"]["exec-plan-shards"]["container"]["command"][-1]
    assert '"data_fingerprint": taken.digest' in plan  # each item: its shard and the fingerprint
    # Train gets the run's id (with the candidate, its TFJob's name): never another run's model.
    train = _train_task(spec)["inputs"]["parameters"]["run_name"]
    assert train["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


def test_no_cache_compiles_every_step_uncached(tmp_path):
    spec, _ = compiled(tmp_path, PipelineConfig(cache=False))
    assert set(_caching(spec).values()) == {False}


def test_tfjob_launcher_mounts_the_workspace_and_leaves_gpus_to_the_tfjob(tmp_path):
    spec, platform = compiled(
        tmp_path, PipelineConfig(launcher="tfjob"), ClusterConfig(gpus_per_worker=2)
    )
    mounts = {name: e.get("pvcMount") for name, e in platform.items()}
    for step in ("exec-plan-shards", "exec-preprocess-shard", "exec-train", "exec-deploy"):
        assert mounts[step][0]["constant"] == "kubedetect-workspace"
        assert mounts[step][0]["mountPath"] == "/workspace"
    assert (
        "accelerator"
        not in spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    )
    assert (
        "nodeSelector" not in platform["exec-train"] and "tolerations" not in platform["exec-train"]
    )
    train = _train_task(spec)["inputs"]["parameters"]
    assert '"gpus_per_worker": 2' in train["cluster"]["runtimeValue"]["constant"]  # for the TFJob
    assert train["launcher"]["runtimeValue"]["constant"] == "tfjob"
    assert train["share"]["runtimeValue"]["constant"] == 1  # each candidate has its own pods
    # The gate reads the model in service from the volume deploy installs into.
    assert mounts["exec-quality-gate"][0]["mountPath"] == "/workspace"
    gate = spec["root"]["dag"]["tasks"]["quality-gate"]["inputs"]["parameters"]
    assert gate["serving_root"]["runtimeValue"]["constant"] == "/workspace/models"
    # The steps that act on the cluster learn their own pod from the downward API (the TFJob's
    # owner; the namespace check).
    for step in ("exec-train", "exec-deploy"):
        assert platform[step]["fieldPathAsEnv"] == [
            {"name": "KUBEDETECT_POD_NAME", "fieldPath": "metadata.name"},
            {"name": "KUBEDETECT_POD_UID", "fieldPath": "metadata.uid"},
            {"name": "KUBEDETECT_POD_NAMESPACE", "fieldPath": "metadata.namespace"},
        ]


def test_local_launcher_on_gpus_schedules_the_train_step_on_gpu_nodes(gpu_local):
    spec, platform = gpu_local
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "2"
    assert platform["exec-train"]["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    assert platform["exec-train"]["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    for name in ("exec-evaluate", "exec-quantize", "exec-plan-shards"):
        assert "nodeSelector" not in platform.get(name, {})
    assert all(e["imagePullSecret"][0]["secretName"] == "regcred" for e in platform.values())
    assert len(platform) == 10  # every step can pull the private image
    assert spec["root"]["dag"]["tasks"]["for-loop-1"]["iteratorPolicy"] == {"parallelismLimit": 3}
    # Trained inside the steps, on the pods' own GPUs: each candidate has its pod's resources.
    assert _train_task(spec)["inputs"]["parameters"]["share"]["runtimeValue"]["constant"] == 1


def test_a_local_run_trains_as_many_candidates_at_once_as_the_cores_allow(tmp_path):
    """candidate_parallelism 0 (`pipeline run-local`): one per two cores of this machine, each
    told how many share it; the gate reads the model in service from the serving_dir."""
    from kubedetect.training.candidates import machine_parallelism
    from pipelines.run import LOCAL

    spec, _ = compiled(tmp_path, LOCAL)
    loop = max(n for n in spec["root"]["dag"]["tasks"] if n.startswith("for-loop"))
    parallel = machine_parallelism()
    assert spec["root"]["dag"]["tasks"][loop]["iteratorPolicy"] == {"parallelismLimit": parallel}
    share = _train_task(spec)["inputs"]["parameters"]["share"]
    assert share["runtimeValue"]["constant"] == parallel
    gate = spec["root"]["dag"]["tasks"]["quality-gate"]["inputs"]["parameters"]
    assert gate["serving_root"] == {"componentInputParameter": "serving_dir"}


def test_parameters_and_their_defaults_come_from_the_configs(tmp_path):
    spec, _ = compiled(tmp_path)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in params["data_uri"]  # the one parameter a user must give
    assert params["num_shards"]["defaultValue"] == PreprocessConfig().num_shards
    assert params["image_size"]["defaultValue"] == PreprocessConfig().image_size
    assert params["epochs"]["defaultValue"] == TrainConfig().epochs
    assert params["batch_size"]["defaultValue"] == TrainConfig().batch_size
    assert params["quantize_modes"]["defaultValue"] == "float32,float16,dynamic,int8"
    assert {"min_map", "max_map_drop", "workers", "classes", "train_flags", "serving_dir"} <= set(
        params
    )
    assert params["candidates"]["defaultValue"] == ""  # one candidate: the training's own
    assert params["min_map"]["defaultValue"] == GateConfig().min_map
    assert params["champion_margin"]["defaultValue"] == GateConfig().champion_margin


def test_unknown_settings_are_refused(tmp_path):
    with pytest.raises(KubedetectError, match="launcher"):
        compiled(tmp_path, PipelineConfig(launcher="slurm"))
    with pytest.raises(KubedetectError, match="--candidate-parallelism must be 0 or more"):
        compiled(tmp_path, PipelineConfig(candidate_parallelism=-1))


def test_a_gpu_image_that_cannot_be_named_is_refused_at_compile_time(tmp_path):
    """A digest-pinned --image has no tag to append -gpu to: say so now, not when train runs."""
    pinned = ClusterConfig(image="registry.example/trainer@sha256:" + "0" * 64, gpus_per_worker=1)
    with pytest.raises(KubedetectError, match="--tfjob-image"):
        compiled(tmp_path, PipelineConfig(), pinned)
    compiled(tmp_path, PipelineConfig(), ClusterConfig(image=pinned.image, tfjob_image="t:1-gpu"))
