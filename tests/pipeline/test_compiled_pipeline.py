"""The compiled pipeline YAML: the DAG, the caching settings, the Kubernetes platform settings and
the parameters that Kubeflow Pipelines will see."""

import pytest
import yaml

from kubedetect.config import ClusterConfig, PipelineConfig, PreprocessConfig, TrainConfig
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


def test_dag_fans_out_shards_then_trains_evaluates_quantizes_and_gates_deploy(tmp_path):
    spec, _ = compiled(tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    loop = next(name for name in tasks if name.startswith("for-loop"))
    condition = next(name for name in tasks if name.startswith("condition"))
    assert tasks[loop]["dependentTasks"] == ["plan-shards"]
    assert tasks[loop]["parameterIterator"]["items"] == {
        "inputParameter": "pipelinechannel--plan-shards-Output"
    }
    assert tasks[loop]["iteratorPolicy"] == {"parallelismLimit": PipelineConfig().parallelism}
    inner = spec["components"][f"comp-{loop}"]["dag"]["tasks"]
    assert list(inner) == ["preprocess-shard"]
    assert inner["preprocess-shard"]["inputs"]["parameters"]["shard_index"] == {
        "componentInputParameter": "pipelinechannel--plan-shards-Output-loop-item",
        "parameterExpressionSelector": 'parseJson(string_value)["shard_index"]',
    }
    assert tasks["merge-shards"]["dependentTasks"] == [loop]
    assert tasks["train"]["dependentTasks"] == ["merge-shards"]
    assert set(tasks["evaluate"]["dependentTasks"]) == {"merge-shards", "train"}
    assert set(tasks["quantize"]["dependentTasks"]) == {"merge-shards", "train"}
    assert tasks["quality-gate"]["dependentTasks"] == ["quantize"]
    assert tasks[condition]["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--quality-gate-Output'] == true"
    )
    gated = spec["components"][f"comp-{condition}"]["dag"]["tasks"]
    assert list(gated) == ["deploy"]
    # deploy serves the variant the gate chose (the fastest within budget where measured).
    assert gated["deploy"]["inputs"]["parameters"]["variant"] == {
        "componentInputParameter": "pipelinechannel--quality-gate-variant"
    }


def test_every_step_runs_the_trainer_image_without_installing_kfp(gpu_local):
    """The CPU build everywhere but in a train step that trains on GPUs itself: its GPU build."""
    spec, _ = gpu_local
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 8
    for name, executor in executors.items():
        container = executor["container"]
        gpu = "-gpu" if name == "exec-train" else ""
        assert container["image"] == f"registry.example/kubedetect-trainer:1.2{gpu}", name
        assert "pip install" not in " ".join(container["command"]), name


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
        "train": True,
        "evaluate": True,
        "quantize": True,
        "quality-gate": True,
        "deploy": False,  # it acts on the cluster
    }
    # The fingerprint comes with every shard's loop item, an input of each shard step.
    loop = next(n for n in spec["root"]["dag"]["tasks"] if n.startswith("for-loop"))
    shard = spec["components"][f"comp-{loop}"]["dag"]["tasks"]["preprocess-shard"]
    assert shard["inputs"]["parameters"]["data_fingerprint"] == {
        "componentInputParameter": "pipelinechannel--plan-shards-Output-loop-item",
        "parameterExpressionSelector": 'parseJson(string_value)["data_fingerprint"]',
    }
    shard_inputs = spec["components"]["comp-preprocess-shard"]["inputDefinitions"]["parameters"]
    assert shard_inputs["data_fingerprint"] == {"parameterType": "STRING"}
    plan = spec["deploymentSpec"]["executors"]["exec-plan-shards"]["container"]["command"][-1]
    assert '"data_fingerprint": taken.digest' in plan  # each item: its shard and the fingerprint
    # Train gets the run's id (its TFJob's name): never another run's model.
    train = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]["run_name"]
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
    cluster = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]["cluster"][
        "runtimeValue"
    ]["constant"]
    assert '"gpus_per_worker": 2' in cluster  # the TFJob asks for the GPUs
    assert (
        spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]["launcher"]["runtimeValue"][
            "constant"
        ]
        == "tfjob"
    )
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
    assert len(platform) == 8  # every step can pull the private image
    assert spec["root"]["dag"]["tasks"]["for-loop-1"]["iteratorPolicy"] == {"parallelismLimit": 3}


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


def test_unknown_settings_are_refused(tmp_path):
    with pytest.raises(KubedetectError, match="launcher"):
        compiled(tmp_path, PipelineConfig(launcher="slurm"))


def test_a_gpu_image_that_cannot_be_named_is_refused_at_compile_time(tmp_path):
    """A digest-pinned --image has no tag to append -gpu to: say so now, not when train runs."""
    pinned = ClusterConfig(image="registry.example/trainer@sha256:" + "0" * 64, gpus_per_worker=1)
    with pytest.raises(KubedetectError, match="--tfjob-image"):
        compiled(tmp_path, PipelineConfig(), pinned)
    compiled(tmp_path, PipelineConfig(), ClusterConfig(image=pinned.image, tfjob_image="t:1-gpu"))
