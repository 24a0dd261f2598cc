"""The train component: the same entrypoint as everywhere, launched as a TFJob or locally."""

from kfp.dsl import Dataset, Input, Model, Output


def train(
    dataset: Input[Dataset],
    model: Output[Model],
    launcher: str,
    workers: int,
    epochs: int,
    batch_size: int,
    train_flags: str,
    run_name: str,
    cluster: str,
):
    """Train the detector on the dataset and export it.

    launcher='tfjob': copy the shards to the workspace volume, submit a TFJob of `workers`
    replicas of `python -m kubedetect.train` (checkpoints on the volume, so restarted workers
    resume), stream the chief's log, copy the export back as this step's artifact.
    launcher='local': the local launcher, `workers` processes with their own TF_CONFIG.
    """
    import json
    import os
    import shlex
    import shutil

    from kubedetect.config import ClusterConfig
    from kubedetect.modelcard import ModelCard

    flags = ["--epochs", str(epochs), "--batch-size", str(batch_size), *shlex.split(train_flags)]
    if launcher == "local":
        from kubedetect.errors import KubedetectError
        from kubedetect.launch import launch

        code = launch([dataset.path, model.path, *flags], workers)
        if code:
            raise KubedetectError(
                f"local training failed (exit {code}): see the workers' log above"
            )
    elif launcher == "tfjob":
        from components.tfjob import build_tfjob, job_name, run_tfjob

        config = ClusterConfig(**json.loads(cluster))
        run_dir = os.path.join(config.workspace_mount, "runs", job_name(run_name))
        shards, exported = os.path.join(run_dir, "shards"), os.path.join(run_dir, "model")
        shutil.copytree(dataset.path, shards, dirs_exist_ok=True)
        argv = [shards, exported, "--checkpoint-dir", os.path.join(run_dir, "checkpoints"), *flags]
        job = build_tfjob(job_name(run_name), argv, workers, config)
        run_tfjob(job, timeout_seconds=config.job_timeout_seconds)
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
