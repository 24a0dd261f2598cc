"""The kubedetect pipeline: a VOC folder in, a served detector out.

    plan_shards ─▶ ParallelFor(shard) preprocess_shard ─▶ merge_shards ─▶ plan_candidates ─┐
      ┌────────────────────────────────────────────────────────────────────────────────────┘
      └▶ ParallelFor(candidate) train ─▶ select_candidates ─┬▶ evaluate
                                                            └▶ quantize ─▶ quality_gate ─▶ deploy

The same DAG runs on Kubeflow Pipelines (compiled to YAML and submitted) and on this machine
(kfp.local's SubprocessRunner). What differs is fixed at compile time by `PipelineConfig`: the
train step submits a TFJob or runs the local launcher, deploy rolls the serving Deployment or
installs into a local folder, how many candidates train at once, and whether KFP may reuse
earlier results. Cluster settings (`ClusterConfig`: the images, the workspace PVC, GPU
scheduling, pull secrets) become kfp-kubernetes settings, which the local runner ignores.

Candidates: `plan candidates` turns the `candidates` parameter (`kubedetect candidates` flags:
seeds, learning rates, model sizes, bootstrap samples, the ensemble's size) into one item per
training; each is a `train` step of its own (a TFJob of its own on a cluster), at most
`candidate_parallelism` at once since each holds GPUs, and scores its model on the validation
split. `select candidates` keeps the best (or fuses the best few into one ensemble model),
which goes on to evaluation and quantization. The quality gate then compares the variant to
serve with the model in service (the registry knows it) on the same test split; deploy logs
that decision and acts on it.

Caching: `plan shards` runs every time and fingerprints the data folder; the fingerprint is an
input of every `preprocess shard`, so their cache key (and through their outputs, that of every
later step) changes exactly when the data does. `train` gets the run's id (its TFJob's name), so
it never reuses another run's model. The quality gate looks at the model in service, which
changes outside the pipeline's view, and `deploy` acts on the cluster: both always run.
"""

import json

from kfp import dsl, kubernetes

from components.deploy import deploy
from components.evaluate import evaluate
from components.merge_shards import merge_shards
from components.plan_candidates import plan_candidates
from components.plan_shards import plan_shards
from components.preprocess_shard import preprocess_shard
from components.quality_gate import quality_gate
from components.quantize import quantize
from components.select_candidates import select_candidates
from components.steppod import FIELDS as STEP_POD_FIELDS
from components.train import train
from kubedetect.config import (
    ClusterConfig,
    DataConfig,
    GateConfig,
    PipelineConfig,
    PreprocessConfig,
    QuantizeConfig,
    TrainConfig,
)
from kubedetect.errors import KubedetectError
from kubedetect.flags import to_dict
from kubedetect.training.candidates import machine_parallelism

NAME = "kubedetect"
DEFAULTS = {  # the pipeline's parameters and their defaults, from the one config of each concern
    "num_shards": PreprocessConfig().num_shards,
    "image_size": PreprocessConfig().image_size,
    "val_fraction": DataConfig().val_fraction,
    "epochs": TrainConfig().epochs,
    "images_seen": TrainConfig().images_seen,
    "batch_size": TrainConfig().batch_size,
    "max_map_drop": QuantizeConfig().max_map_drop,
    "min_map": GateConfig().min_map,
    "champion_margin": GateConfig().champion_margin,
}


def build_pipeline(
    settings: PipelineConfig = PipelineConfig(), cluster: ClusterConfig = ClusterConfig()
):
    """The pipeline function for these compile-time settings."""
    if settings.launcher not in ("tfjob", "local"):
        raise KubedetectError(f"--launcher must be 'tfjob' or 'local', got {settings.launcher!r}")
    if settings.deploy_to not in ("cluster", "inferenceservice", "local"):
        raise KubedetectError(
            "--deploy-to must be 'cluster', 'inferenceservice' or 'local', "
            f"got {settings.deploy_to!r}"
        )

    if settings.candidate_parallelism < 0:
        raise KubedetectError(
            f"--candidate-parallelism must be 0 or more, got {settings.candidate_parallelism}"
        )
    # 0: the candidates share this machine (a local run), as many at once as its cores allow,
    # each told its share of the cores and memory; else each step has its own pod.
    parallel = settings.candidate_parallelism or machine_parallelism()
    share = parallel if settings.candidate_parallelism == 0 else 1
    # Where the model in service is recorded: the local registry (the serving_dir parameter),
    # or the workspace volume's models/ folder that deploy installs into on a cluster.
    on_volume = "" if settings.deploy_to == "local" else f"{cluster.workspace_mount}/models"

    def component(func, image: str = cluster.image):
        return dsl.component(func, base_image=image, install_kfp_package=False)

    plan_op, shard_op, merge_op = (
        component(plan_shards),
        component(preprocess_shard),
        component(merge_shards),
    )
    # Training inside the step on GPUs needs the GPU build; a TFJob's workers get it themselves.
    # (Asked here in both cases: an image whose GPU build cannot be named is refused at compile
    # time, not when the train step runs.)
    worker_image = cluster.worker_image()
    training_image = worker_image if settings.launcher == "local" else cluster.image
    train_op = component(train, training_image)
    plan_candidates_op = component(plan_candidates)
    select_op = component(select_candidates)
    evaluate_op, quantize_op = component(evaluate), component(quantize)
    gate_op, deploy_op = component(quality_gate), component(deploy)
    cluster_json = json.dumps(to_dict(cluster), sort_keys=True)

    @dsl.pipeline(name=NAME, description="Pascal VOC in, a quantized, served object detector out.")
    def kubedetect_pipeline(
        data_uri: str,
        classes: str = "",
        num_shards: int = DEFAULTS["num_shards"],
        image_size: int = DEFAULTS["image_size"],
        val_fraction: float = DEFAULTS["val_fraction"],
        workers: int = 2,
        epochs: int = DEFAULTS["epochs"],
        images_seen: int = DEFAULTS["images_seen"],
        batch_size: int = DEFAULTS["batch_size"],
        train_flags: str = "",
        candidates: str = "",
        quantize_modes: str = "float32,float16,dynamic,int8",
        min_map: float = DEFAULTS["min_map"],
        max_map_drop: float = DEFAULTS["max_map_drop"],
        serve_variant: str = "",
        champion_margin: float = DEFAULTS["champion_margin"],
        serving_dir: str = "",
    ):
        plan = plan_op(
            data_uri=data_uri, num_shards=num_shards, classes=classes, val_fraction=val_fraction
        )
        plan.set_display_name("plan shards")
        with dsl.ParallelFor(plan.outputs["Output"], parallelism=settings.parallelism) as item:
            shard = shard_op(
                data_uri=data_uri,
                shard_index=item.shard_index,
                num_shards=num_shards,
                image_size=image_size,
                classes=classes,
                val_fraction=val_fraction,
                data_fingerprint=item.data_fingerprint,  # the cache key follows the data
            )
            shard.set_display_name("preprocess shard")
        merged = merge_op(shards=dsl.Collected(shard.outputs["shard"])).set_display_name(
            "merge shards"
        )
        dataset = merged.outputs["dataset"]

        planned = plan_candidates_op(candidates=candidates).set_display_name("plan candidates")
        with dsl.ParallelFor(planned.outputs["Output"], parallelism=parallel) as candidate:
            trained = train_op(
                dataset=dataset,
                launcher=settings.launcher,
                workers=workers,
                epochs=epochs,
                images_seen=images_seen,
                batch_size=batch_size,
                train_flags=train_flags,
                # The run's id: unique per run, the same for a retried step (with the
                # candidate's name, its TFJob's name and checkpoints). The run's name is
                # neither: users give two runs the same name.
                run_name=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                cluster=cluster_json,
                candidate=candidate.spec,
                share=share,
            ).set_display_name("train")
        selected = select_op(
            models=dsl.Collected(trained.outputs["model"]), candidates=candidates
        ).set_display_name("select candidates")
        model = selected.outputs["chosen"]
        # The final report: on `test` where the data has one (never seen in training, nor used
        # to pick the exported weights or the candidate), else on `val`
        # (kubedetect.evaluation.evaluate.final_split).
        evaluated = evaluate_op(model=model, dataset=dataset, split="auto").set_display_name(
            "evaluate"
        )
        quantized = quantize_op(
            model=model, dataset=dataset, modes=quantize_modes
        ).set_display_name("quantize")
        gate = gate_op(
            variants=quantized.outputs["variants"],
            dataset=dataset,
            min_map=min_map,
            max_map_drop=max_map_drop,
            serve_variant=serve_variant,
            champion_margin=champion_margin,
            serving_root=on_volume or serving_dir,
        ).set_display_name("quality gate")
        deployed = deploy_op(
            variants=quantized.outputs["variants"],
            variant=gate.outputs["variant"],  # the fastest within budget, where measured
            approved=gate.outputs["Output"],
            decision=gate.outputs["summary"],  # logged by deploy, whatever it decided
            target=settings.deploy_to,
            serving_dir=serving_dir,
            cluster=cluster_json,
        ).set_display_name("deploy")

        all_tasks = [plan, shard, merged, planned, trained, selected, evaluated, quantized, gate,
                     deployed]  # fmt: skip
        for task in all_tasks:  # explicit, whatever KFP_DISABLE_EXECUTION_CACHING_BY_DEFAULT says
            task.set_caching_options(settings.cache)
        plan.set_caching_options(False)  # it takes the data's fingerprint: it must look each time
        gate.set_caching_options(False)  # it compares with the model in service, as it is now
        deployed.set_caching_options(False)  # it acts on the cluster
        _on_cluster(
            cluster, settings, plan=plan, shard=shard, trained=trained, gate=gate,
            deployed=deployed, all_tasks=all_tasks,
        )  # fmt: skip

    return kubedetect_pipeline


def _on_cluster(
    cluster: ClusterConfig,
    settings: PipelineConfig,
    *,
    plan,
    shard,
    trained,
    gate,
    deployed,
    all_tasks,
) -> None:
    """kfp-kubernetes settings: where each step runs on a cluster (ignored by local runs)."""
    # The steps that read the data, or the volume the TFJobs and the server share (the gate:
    # the model in service).
    for task in (plan, shard, trained, gate, deployed):
        kubernetes.mount_pvc(
            task, pvc_name=cluster.workspace_pvc, mount_path=cluster.workspace_mount
        )
    if settings.launcher == "local" and cluster.gpus_per_worker > 0:
        # Training inside the step itself: it needs the GPUs (a TFJob's pods ask for their own).
        trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(
            cluster.gpus_per_worker
        )
        key, _, value = cluster.gpu_node_selector.partition("=")
        kubernetes.add_node_selector(trained, label_key=key, label_value=value)
        kubernetes.add_toleration(
            trained, key=cluster.gpu_toleration, operator="Exists", effect="NoSchedule"
        )
    # The step's own pod, from the downward API: the TFJob names it as its owner (so Kubernetes
    # deletes the job with the pod), and both steps check that they run in cluster.namespace.
    for task in (trained, deployed):
        for name, field_path in STEP_POD_FIELDS.items():
            kubernetes.use_field_path_as_env(task, env_name=name, field_path=field_path)
    trained.set_cpu_request("1").set_memory_request("2Gi")
    shard.set_cpu_request("2").set_memory_request("2Gi")
    if cluster.image_pull_secret:
        for task in all_tasks:
            kubernetes.set_image_pull_secrets(task, [cluster.image_pull_secret])
