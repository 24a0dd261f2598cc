"""The deploy component: the gated int8 model goes to serving."""

from kfp.dsl import Input, Model


def deploy(
    variants: Input[Model],
    variant: str,
    approved: bool,
    decision: str,
    target: str,
    serving_dir: str,
    cluster: str,
) -> str:
    """Install the model and point serving at it, if the quality gate `approved` it; returns
    where it now lives ("" when it was held). Either way the gate's `decision` (its checks,
    the new model's score and the one in service's) is this step's first line.

    target='local': into the local registry `serving_dir` (its `current` link), where
    `kubedetect serve` picks it up. target='cluster': into the workspace volume's models/ folder,
    then a rolling update of the serving Deployment to it, waited for; a rollout that misses
    the Deployment's progress deadline is undone to the previous model, and the step fails. The
    volume's `models/current` names the new model once it serves (the next run's champion).
    target='inferenceservice': the model's folder on the volume becomes the STORAGE_URI of
    KServe's InferenceService of that name (k8s/overlays/kserve), waited for likewise.
    """
    import json
    import os

    from kubedetect.config import ClusterConfig
    from kubedetect.inference import registry
    from kubedetect.io.modelcard import ModelCard

    print(f"quality gate: {decision}")
    if not approved:
        print("held: the model in service stays")
        return ""
    folder = os.path.join(variants.path, variant)
    if target == "local":
        installed = registry.install(folder, serving_dir)
        current = os.path.join(serving_dir, registry.CURRENT)
        print(f"deployed {variant} model to {installed} ({current})")
        return installed
    if target not in ("cluster", "inferenceservice"):
        raise ValueError(f"target must be 'cluster', 'inferenceservice' or 'local', got {target!r}")
    from components.rollout import roll_deployment
    from components.steppod import StepPod

    config = ClusterConfig(**json.loads(cluster))
    pod = StepPod.from_env()
    if pod is not None:  # the Deployment must mount the volume this step writes the model to
        pod.require_namespace(config.namespace)
    models = os.path.join(config.workspace_mount, "models")
    installed = registry.install(folder, models, make_current=False)  # current once it serves
    sha256 = ModelCard.load(folder).sha256
    if target == "inferenceservice":
        from components.inferenceservice import roll_inference_service, storage_uri

        uri = storage_uri(config.workspace_pvc, f"models/{os.path.basename(installed)}")
        roll_inference_service(config.serving_deployment, config.namespace, uri, sha256)
        registry.set_current(models, installed)
        return uri
    in_pod = f"{config.serving_models_mount}/{os.path.basename(installed)}"
    roll_deployment(config.serving_deployment, config.namespace, in_pod, sha256)
    registry.set_current(models, installed)
    return in_pod
