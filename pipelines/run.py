"""Compile, submit, or run the pipeline here.

`compile_pipeline` writes the YAML that Kubeflow Pipelines takes; `submit` sends it to a KFP
endpoint through kfp.Client; `run_local` runs the very same DAG with kfp.local's
SubprocessRunner: every step a real process on this machine, artifacts under a local root.
"""

import inspect
import logging
import os
from dataclasses import dataclass

from kubedetect.config import ClusterConfig, PipelineConfig
from kubedetect.errors import KubedetectError

LOCAL = PipelineConfig(launcher="local", deploy_to="local")


def compile_pipeline(path: str, settings: PipelineConfig, cluster: ClusterConfig) -> str:
    from kfp import compiler  # noqa: PLC0415

    from pipelines.pipeline import build_pipeline  # noqa: PLC0415

    if not path.endswith((".yaml", ".yml")):
        raise KubedetectError(f"{path}: the pipeline is written as YAML; name it *.yaml")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise KubedetectError(f"{path}: no such folder to write the pipeline into")
    compiler.Compiler().compile(build_pipeline(settings, cluster), package_path=path)
    return path


def parse_params(pairs: list[str], settings: PipelineConfig = LOCAL) -> dict:
    """`k=v` strings to the pipeline's parameters, typed by the pipeline's own signature."""
    from pipelines.pipeline import build_pipeline  # noqa: PLC0415

    signature = inspect.signature(build_pipeline(settings).pipeline_func)
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in signature.parameters:
            known = ", ".join(signature.parameters)
            raise KubedetectError(f"--param {pair!r}: expected NAME=VALUE with NAME one of {known}")
        kind = signature.parameters[key].annotation
        try:
            params[key] = kind(value) if kind in (int, float) else value
        except ValueError:
            noun = {int: "a whole number", float: "a number"}[kind]
            raise KubedetectError(f"--param {key}: {value!r} is not {noun}") from None
    return params


def submit(
    host: str,
    params: dict,
    settings: PipelineConfig,
    cluster: ClusterConfig,
    *,
    namespace: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    service_account: str | None = None,
) -> str:
    """Submit a run to a Kubeflow Pipelines endpoint; returns the run's URL.

    `service_account`: the Kubernetes service account the run's steps run as (multi-user KFP:
    `kubedetect-pipeline`, which k8s/ grants what the steps need); None leaves KFP's default
    (`pipeline-runner` with standalone KFP). Caching: the compiled per-step settings (see
    pipelines/pipeline.py); KFP's run-wide `enable_caching` is sent only to turn caching off,
    since turning it on run-wide would also cache the steps that must always run.
    """
    import kfp  # noqa: PLC0415

    from pipelines.pipeline import build_pipeline  # noqa: PLC0415

    pipeline = build_pipeline(settings, cluster)  # a bad setting is refused before any request
    # kfp.Client retries its health check (5 times, 5 s apart) and logs a traceback for each
    # failure; the one error below says what happened. Without --kfp-namespace, kfp keeps the
    # namespace of its own context file (~/.config/kfp/context.json), if any.
    logging.disable(logging.ERROR)
    try:
        client = kfp.Client(host=host, **({"namespace": namespace} if namespace else {}))
        result = client.create_run_from_pipeline_func(
            pipeline,
            arguments=params,
            experiment_name=experiment,
            run_name=run_name,
            namespace=namespace,
            enable_caching=None if settings.cache else False,
            service_account=service_account,
        )
    except Exception as exc:
        raise KubedetectError(
            f"{host}: could not submit the run ({' '.join(str(exc).split())[:300]})"
        ) from None
    finally:
        logging.disable(logging.NOTSET)
    return f"{host.rstrip('/')}/#/runs/details/{result.run_id}"


@dataclass(frozen=True)
class LocalRun:
    """Where a local run left its artifacts."""

    root: str  # the run's folder under the pipeline root
    dataset: str
    model: str
    variants: str
    evaluation: str
    quantization_report: str
    gate: str
    deployed: bool


def run_local(params: dict, pipeline_root: str, settings: PipelineConfig = LOCAL) -> LocalRun:
    """Run the whole pipeline on this machine and say where everything is."""
    from kfp import local  # noqa: PLC0415

    from pipelines.pipeline import NAME, build_pipeline  # noqa: PLC0415

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # every step inherits it
    pipeline_root = os.path.abspath(pipeline_root)
    os.makedirs(pipeline_root, exist_ok=True)
    before = set(os.listdir(pipeline_root))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root)
    try:
        build_pipeline(settings)(**params)
    except RuntimeError as exc:
        raise KubedetectError(f"the local pipeline run failed: {exc}") from None
    runs = sorted(n for n in set(os.listdir(pipeline_root)) - before if n.startswith(NAME))
    if not runs:
        raise KubedetectError(f"{pipeline_root}: the run left no folder")
    root = os.path.join(pipeline_root, runs[-1])
    return LocalRun(
        root=root,
        dataset=os.path.join(root, "merge-shards", "dataset"),
        model=os.path.join(root, "train", "model"),
        variants=os.path.join(root, "quantize", "variants"),
        evaluation=os.path.join(root, "evaluate", "plots"),
        quantization_report=os.path.join(root, "quantize", "variants", "report.json"),
        gate=os.path.join(root, "quality-gate", "decision"),
        deployed=os.path.isdir(os.path.join(root, "deploy")),
    )
