"""The train component: one candidate trained by the same entrypoint as everywhere, launched as a
TFJob or locally, then scored on the validation split."""

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
    candidate: str = "",
    share: int = 1,
):
    """Train one candidate (`candidate`: kubedetect.training.candidates.Candidate as JSON; "" the
    training's own settings) on the dataset, export it, and score it on the validation split;
    `epochs` 0: as long as the `images_seen` budget asks for (kubedetect.training.budget).

    launcher='tfjob': put the shards on the workspace volume (a bootstrap candidate's sample of
    them), submit a TFJob of `workers` replicas of `python -m kubedetect.training.train`
    (checkpoints on the volume, so restarted workers resume), stream the chief's log, copy the
    export back as this step's artifact. The job is named after `run_name` and the candidate (the
    pipeline gives the run's id: unique per run and candidate, the same when the step is retried,
    which then follows or replaces its job and resumes from its checkpoints); it is deleted if the
    step fails or is terminated (components/tfjob.py).
    launcher='local': the local launcher, `workers` processes with their own TF_CONFIG, with a
    `share`-th of this machine's cores and memory when `share` candidates train side by side.
    """
    import json
    import os
    import shlex
    import shutil
    import tempfile
    import time

    from kubedetect.config import ClusterConfig, gpu_model_size
    from kubedetect.io.modelcard import ModelCard
    from kubedetect.training.candidates import Candidate, bootstrap_shards, score, train_locally

    config = ClusterConfig(**json.loads(cluster))
    chosen = Candidate.from_json(candidate) if candidate else Candidate(0)
    flags = [
        *("--epochs", str(epochs), "--images-seen", str(images_seen)),
        *("--batch-size", str(batch_size), *shlex.split(train_flags)),
    ]
    flags += chosen.train_flags()  # after the common flags: the candidate's own win
    print(f"candidate {chosen.name}: {chosen.describe()}", flush=True)
    started = time.monotonic()
    if launcher == "local":
        if config.gpus_per_worker > 0 and "--require-gpus" not in flags:
            flags += ["--require-gpus", str(config.gpus_per_worker)]  # the step was given GPUs
        flags = gpu_model_size(flags, config.gpus_per_worker)  # and so trains the large model
        from kubedetect.training.launch import WORKER_LOG_DIR

        shards, scratch = dataset.path, None
        if chosen.bootstrap:
            scratch = tempfile.mkdtemp(prefix=f"bootstrap-{chosen.name}-")
            shards = os.path.join(scratch, "shards")
            bootstrap_shards(dataset.path, shards, chosen.bootstrap)
        logs = os.environ.get(WORKER_LOG_DIR)  # each candidate's workers' logs apart
        try:
            train_locally(
                shards,
                model.path,
                flags,
                workers,
                parallel=share,
                log_dir=os.path.join(logs, chosen.name) if logs else None,
            )
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
    elif launcher == "tfjob":
        from components.steppod import StepPod
        from components.tfjob import build_tfjob, job_name, run_tfjob

        pod = StepPod.from_env()
        if pod is not None:
            pod.require_namespace(config.namespace)
        owner = pod.owner_reference() if pod else None
        name = job_name(f"{run_name}-{chosen.name}")  # one job per run and candidate
        run_dir = os.path.join(config.workspace_mount, "runs", name)  # per run, not per attempt
        shards, exported = os.path.join(run_dir, "shards"), os.path.join(run_dir, "model")
        if chosen.bootstrap:
            bootstrap_shards(dataset.path, shards, chosen.bootstrap)
        else:
            shutil.copytree(dataset.path, shards, dirs_exist_ok=True)
        argv = [shards, exported, "--checkpoint-dir", os.path.join(run_dir, "checkpoints"), *flags]
        run_tfjob(build_tfjob(name, argv, workers, config, owner=owner), owner=owner)
        shutil.copytree(exported, model.path, dirs_exist_ok=True)
    else:
        raise ValueError(f"launcher must be 'tfjob' or 'local', got {launcher!r}")
    seconds = time.monotonic() - started

    card = ModelCard.load(model.path)
    model.metadata["sha256"] = card.sha256
    model.metadata["classes"] = list(card.classes)
    model.metadata["input_size"] = card.input_size
    # Scored by the one evaluator on the whole split it was not trained on: what candidates
    # are chosen by, whatever the training measured along the way.
    metrics = score(model.path, dataset.path)
    model.metadata["candidate"] = chosen.to_json()
    model.metadata["settings"] = chosen.describe()
    model.metadata["train_seconds"] = round(seconds, 1)
    for key in ("map50", "map50_95", "precision", "recall"):
        model.metadata[key] = round(float(metrics[key]), 4)
    print(
        f"candidate {chosen.name}: val mAP@0.5:0.95 {metrics['map50_95']:.4f}, mAP@0.5 "
        f"{metrics['map50']:.4f}, trained in {seconds:.0f} s",
        flush=True,
    )
