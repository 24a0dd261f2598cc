"""The train component: the same entrypoint as everywhere, launched as a TFJob or locally."""

from kfp.dsl import Dataset, Input, Model, Output


def train(
    dataset: Input[Dataset],
    model: Output[Model],
    launcher: str,
    workers: int,
    epochs: int,
    images_seen: int,
    batch_size: int,
    train_flags: str,
    run_name: str,
    cluster: str,
):
    """Train the detector on the dataset and export it; `epochs` 0: as long as the
    `images_seen` budget asks for (kubedetect.budget).

    launcher='tfjob': copy the shards to the workspace volume, submit a TFJob of `workers`
    replicas of `python -m kubedetect.train` (checkpoints on the volume, so restarted workers
    resume), stream the chief's log, copy the export back as this step's artifact. The job is
    named after `run_name` (the pipeline gives the run's id: unique per run, the same when the
    step is retried, which then follows or replaces its job and resumes from its checkpoints);
    it is deleted if the step fails or is terminated (components/tfjob.py).
    launcher='local': the local launcher, `workers` processes with their own TF_CONFIG.
    """
    import json
    import os
    import shlex
    import shutil

    from kubedetect.config import ClusterConfig, gpu_model_size
    from kubedetect.modelcard import ModelCard

    config = ClusterConfig(**json.loads(cluster))
    flags = [
        *("--epochs", str(epochs), "--images-seen", str(images_seen)),
        *("--batch-size", str(batch_size), *shlex.split(train_flags)),
    ]
    if launcher == "local":
        if config.gpus_per_worker > 0 and "--require-gpus" not in flags:
            flags += ["--require-gpus", str(config.gpus_per_worker)]  # the step was given GPUs
        flags = gpu_model_size(flags, config.gpus_per_worker)  # and so trains the large model
        from kubedetect.errors import KubedetectError
        from kubedetect.launch import launch

        code = launch([dataset.path, model.path, *flags], workers)
        if code:
            raise KubedetectError(
                f"local training failed (exit {code}): see the workers' log above"
            )
    elif launcher == "tfjob":
        from components.steppod import StepPod
        from components.tfjob import build_tfjob, job_name, run_tfjob

        pod = StepPod.from_env()
        if pod is not None:
            pod.require_namespace(config.namespace)
        owner = pod.owner_reference() if pod else None
        name = job_name(run_name)
        run_dir = os.path.join(config.workspace_mount, "runs", name)  # per run, not per attempt
        shards, exported = os.path.join(run_dir, "shards"), os.path.join(run_dir, "model")
        shutil.copytree(dataset.path, shards, dirs_exist_ok=True)
        argv = [shards, exported, "--checkpoint-dir", os.path.join(run_dir, "checkpoints"), *flags]
        run_tfjob(build_tfjob(name, argv, workers, config, owner=owner), owner=owner)
        shutil.copytree(exported, model.path, dirs_exist_ok=True)
    else:
        raise ValueError(f"launcher must be 'tfjob' or 'local', got {launcher!r}")

    card = ModelCard.load(model.path)
    model.metadata["sha256"] = card.sha256
    model.metadata["classes"] = list(card.classes)
    model.metadata["input_size"] = card.input_size
    for key, value in card.provenance.get("metrics", {}).items():
        if isinstance(value, int | float):
            model.metadata[key] = value
