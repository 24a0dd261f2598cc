"""Compile, submit, or run the pipeline here.

`compile_pipeline` writes the YAML that Kubeflow Pipelines takes; `submit` sends it to a KFP
endpoint through kfp.Client; `run_local` runs the very same DAG with kfp.local's
SubprocessRunner: every step a real process on this machine, artifacts under a local root.
"""

import builtins
import contextlib
import inspect
import logging
import os
import warnings
from dataclasses import dataclass

from kubedetect.config import ClusterConfig, PipelineConfig
from kubedetect.console import Console, shown
from kubedetect.errors import KubedetectError
from kubedetect.training.launch import WORKER_LOG_DIR

# Everything on this machine: the candidates share its cores (candidate_parallelism 0).
LOCAL = PipelineConfig(launcher="local", deploy_to="local", candidate_parallelism=0)


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
    model: str  # the chosen candidate's, or the ensemble of the best few
    candidates: str  # their table and plot (HTML)
    variants: str
    evaluation: str
    quantization_report: str
    gate: str
    deployed: bool
    log_dir: str  # every step's log


def run_local(
    params: dict,
    pipeline_root: str,
    settings: PipelineConfig = LOCAL,
    *,
    log_dir: str | None = None,
    console: Console | None = None,
    verbose: bool = False,
) -> LocalRun:
    """Run the whole pipeline on this machine and say where everything is.

    The console shows a line as each step starts and ends; each step's output goes to
    `log_dir/<step>.log` (default: PIPELINE_ROOT/logs), kfp.local's own to kfp-local.log, the
    training workers' to worker-<i>.log. With `verbose`, kfp.local's output is also shown as it
    comes. A failed step shows its last lines and its log's path; then KubedetectError.
    """
    from kfp import local  # noqa: PLC0415

    from pipelines.figures import describe, task_output, training_progress  # noqa: PLC0415
    from pipelines.pipeline import NAME, build_pipeline  # noqa: PLC0415
    from pipelines.tasklog import ANSI, TaskLogs  # noqa: PLC0415

    pipeline_root = os.path.abspath(pipeline_root)
    log_dir = os.path.abspath(log_dir or os.path.join(pipeline_root, "logs"))
    console = console or Console()
    os.makedirs(pipeline_root, exist_ok=True)
    before = set(os.listdir(pipeline_root))
    pipeline = build_pipeline(settings)
    # Every step inherits these: TensorFlow's start-up chatter off, and where the local
    # launcher writes each training worker's full log (kubedetect.training.launch).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ[WORKER_LOG_DIR] = log_dir
    logs = TaskLogs(
        log_dir,
        console,
        describe=describe,
        progress=training_progress,
        echo=console.stream if verbose else None,
    )
    # kfp.local swaps builtins.print and the root logger's handlers and level for the length of
    # each task (logging_utils.indented_print and local_logger_context), and the threads of a
    # ParallelFor swap them concurrently: a task finishing first puts back the state from
    # before both, which drops the other's "finished" record (INFO, below the default level),
    # and the last to finish can leave an indenting print and a stale handler for good
    # (kfp/local/logging_utils.py, kubeflow/pipelines 7b70c7b). So the state put back is a
    # handler into `logs` at INFO, and the state from before the run is restored after it.
    original_print = builtins.print
    root_logger = logging.getLogger()
    original_logging = (root_logger.handlers[:], root_logger.level)
    handler = logging.StreamHandler(logs)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    root_logger.handlers = [handler]
    root_logger.setLevel(logging.INFO)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(logs),
            contextlib.redirect_stderr(logs),
        ):
            warnings.simplefilter("always")  # every warning into kfp-local.log, none lost
            pipeline(**params)
    except RuntimeError as exc:
        if logs.failed:  # the console has shown its last lines
            task = logs.failed[0]
            raise KubedetectError(
                f"the pipeline stopped: step {task.label!r} failed (its log: "
                f"{shown(task.log_path)})"
            ) from None
        raise KubedetectError(
            f"the local pipeline run failed ({ANSI.sub('', str(exc))}); kfp.local's log: "
            f"{shown(logs.kfp_log_path)}"
        ) from None
    finally:
        builtins.print = original_print
        root_logger.handlers = original_logging[0]
        root_logger.setLevel(original_logging[1])
        os.environ.pop(WORKER_LOG_DIR, None)
        logs.close()
    runs = sorted(n for n in set(os.listdir(pipeline_root)) - before if n.startswith(NAME))
    if not runs:
        raise KubedetectError(f"{pipeline_root}: the run left no folder")
    root = os.path.join(pipeline_root, runs[-1])
    return LocalRun(
        root=root,
        dataset=os.path.join(root, "merge-shards", "dataset"),
        model=os.path.join(root, "select-candidates", "chosen"),
        candidates=os.path.join(root, "select-candidates", "plot"),
        variants=os.path.join(root, "quantize", "variants"),
        evaluation=os.path.join(root, "evaluate", "plots"),
        quantization_report=os.path.join(root, "quantize", "variants", "report.json"),
        gate=os.path.join(root, "quality-gate", "decision"),
        deployed=bool(task_output(os.path.join(root, "deploy"))),  # "" when the gate held it
        log_dir=log_dir,
    )
