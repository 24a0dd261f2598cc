"""The `kubedetect` command line: the outer layer, beside `serving/`, `components/`, `pipelines/`.

Each subcommand is a thin layer: it turns flags into the config dataclasses of
`kubedetect.config` and calls the library. Heavy modules (TensorFlow, Flask, kfp) are imported
inside the handlers, so `kubedetect --help` and `kubedetect data check` start in well under a
second. Errors in the user's input print as one line (no traceback) with a meaningful exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from kubedetect import __version__
from kubedetect.config import DataConfig, PreprocessConfig, ServeConfig
from kubedetect.console import Console, output_to, progress_wanted, shown
from kubedetect.errors import KubedetectError
from kubedetect.flags import add_arguments, from_args


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal only, and not with --quiet: redrawn into a file or a pipe,
    one bar becomes hundreds of lines."""
    return not args.quiet and progress_wanted()


# ----------------------------------------------------------------------------------------------
# data synth / data check
# ----------------------------------------------------------------------------------------------


def _data_synth(args: argparse.Namespace) -> int:
    from kubedetect.data.synth import synthesize

    summary = synthesize(
        args.out_dir, args.images, args.seed, progress=_progress(args), workers=args.workers
    )
    splits = ", ".join(f"{count} {split}" for split, count in summary["splits"].items())
    objects = ", ".join(f"{count} {name}s" for name, count in summary["objects"].items())
    print(f"wrote {summary['images']} images to {args.out_dir} ({splits}; {objects})")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from kubedetect.data.check import check
    from kubedetect.resources import available_cores

    data = from_args(DataConfig, args)
    workers = args.workers if args.workers > 0 else available_cores()
    report = check(args.data_dir, data, workers=workers, progress=_progress(args))
    print(report.summary())
    with open(args.report, "w") as f:
        json.dump(report.to_dict(), f, indent=1)
        f.write("\n")
    print(f"report: {args.report}")
    if args.strict and report.problems:
        print(f"--strict: {len(report.problems)} problems", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------
# preprocess / merge-shards
# ----------------------------------------------------------------------------------------------


def _preprocess(args: argparse.Namespace) -> int:
    from kubedetect.data.shards import preprocess, report_of

    config = from_args(PreprocessConfig, args, progress=_progress(args))
    result = preprocess(args.data_dir, args.out_dir, config, from_args(DataConfig, args))
    if config.shard_index is not None:
        images = len(result["images"])
        print(
            f"shard {config.shard_index} of {config.num_shards}: {images} images written to "
            f"{args.out_dir}; run `kubedetect merge-shards {args.out_dir}` once every shard is done"
        )
        return 0
    _print_manifest(result, args.out_dir, report_of(result))
    return 0


def _merge_shards(args: argparse.Namespace) -> int:
    from kubedetect.data.shards import merge_shards, report_of

    manifest = merge_shards(args.out_dir)
    _print_manifest(manifest, args.out_dir, report_of(manifest))
    return 0


def _print_manifest(manifest: dict, out_dir: str, report) -> None:
    print(report.summary())
    for split, entry in manifest["splits"].items():
        print(
            f"{split:<6} {entry['images']:>6} images {entry['objects']:>7} objects "
            f"in {len(entry['shards'])} shards"
        )
    print(f"shards, dataset.json and labels.json in {out_dir}")


# ----------------------------------------------------------------------------------------------
# serve
# ----------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from kubedetect.flags import from_env
    from serving.run import serve  # Flask and Gunicorn only here: the core library knows neither

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ServeConfig)
        if hasattr(args, f.name)
    }
    return serve(dataclasses.replace(from_env(ServeConfig), **given))


# ----------------------------------------------------------------------------------------------
# train / evaluate / quantize
# ----------------------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    if args.emit_tfjob:
        return _emit_tfjob(args)
    from kubedetect.training.train import run

    return run(args)


def _emit_tfjob(args: argparse.Namespace) -> int:
    """Print the TFJob the pipeline would submit, for training without the pipeline."""
    from components.tfjob import build_tfjob, to_yaml
    from kubedetect.config import ClusterConfig, ModelConfig, TrainConfig
    from kubedetect.flags import to_argv

    workers = 1 if args.workers is None else args.workers
    if workers < 1:
        raise KubedetectError(f"--workers {workers}: a TFJob needs at least one worker")
    argv = [
        args.shards_dir,
        args.model_dir,
        *to_argv(from_args(TrainConfig, args)),
        *to_argv(from_args(ModelConfig, args)),
    ]
    job = build_tfjob(args.job_name, argv, workers, from_args(ClusterConfig, args))
    print(to_yaml(job), end="")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from kubedetect.config import EvalConfig
    from kubedetect.evaluation.evaluate import evaluate, summary

    out = args.out or os.path.join(
        args.model if os.path.isdir(args.model) else os.path.dirname(args.model), "evaluation"
    )
    metrics = evaluate(
        args.model, args.shards_dir, out, from_args(EvalConfig, args), progress=_progress(args)
    )
    print(summary(metrics))
    print(f"metrics and plots: {out}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from kubedetect.config import QuantizeConfig

    config = from_args(QuantizeConfig, args)
    os.makedirs(args.out_dir, exist_ok=True)
    log = os.path.join(args.out_dir, "quantize.log")
    with output_to(log):  # TensorFlow's start-up and its converter: a hundred lines a variant
        from kubedetect.network.quantize import quantize_model, report, report_table

        quantize_model(args.model_dir, args.out_dir, config)
        result = report(args.model_dir, args.out_dir, config) if config.report else None
    if result is not None:
        print(report_table(result))
        print(f"report: {os.path.join(args.out_dir, 'report.json')} and report.md")
    print(f"{', '.join(config.modes)} written to {args.out_dir}; the converter's log: {log}")
    return 0


def _candidates(args: argparse.Namespace) -> int:
    from kubedetect.config import CandidatesConfig, ModelConfig, TrainConfig
    from kubedetect.flags import to_argv
    from kubedetect.training.candidates import run

    train_argv = [
        *to_argv(from_args(TrainConfig, args, progress=False)),
        *to_argv(from_args(ModelConfig, args)),
    ]
    summary = run(
        args.shards_dir,
        args.out_dir,
        from_args(CandidatesConfig, args),
        train_argv,
        workers=args.workers,
    )
    print(f"the chosen model: {summary['model']}; table, plot and figures: {args.out_dir}")
    return 0


def _add_candidates_command(commands) -> None:
    from kubedetect.config import CandidatesConfig, ModelConfig, TrainConfig

    candidates = commands.add_parser(
        "candidates",
        help="train several candidates (seeds, learning rates, sizes, bootstrap samples), "
        "score them on the validation split and keep the best (or fuse the best few)",
        description="Every combination of the listed seeds, learning rates and model sizes "
        "(for each bootstrap sample, if any) is trained here through the local launcher, one "
        "after another or side by side as the cores allow, and scored on the validation "
        "split by mAP@0.5:0.95. OUT_DIR gets each candidate's model, chosen/ (the best, or "
        "an ensemble of the best --ensemble-size), candidates.md, candidates.png and "
        "candidates.json.",
    )
    candidates.add_argument("shards_dir", metavar="SHARDS_DIR")
    candidates.add_argument("out_dir", metavar="OUT_DIR")
    candidates.add_argument(
        "--workers", type=int, default=1, help="local worker processes per candidate (default: 1)"
    )
    add_arguments(candidates, CandidatesConfig)
    # Each candidate checkpoints into its own model folder; the rest as `kubedetect train`.
    add_arguments(candidates, TrainConfig, skip=("checkpoint_dir", "progress"))
    add_arguments(candidates, ModelConfig)
    candidates.set_defaults(handler=_candidates)


def _add_model_commands(commands) -> None:
    from kubedetect.config import EvalConfig, QuantizeConfig
    from kubedetect.training.train import add_train_arguments

    train = commands.add_parser(
        "train",
        help="train the detector (here, or as --workers N local processes)",
        description="Train on preprocessed shards. With --workers N, N local processes under "
        "MultiWorkerMirroredStrategy, each with the TF_CONFIG a TFJob would give it.",
    )
    add_train_arguments(train)
    emit = train.add_argument_group(
        "TFJob",
        "--emit-tfjob prints the TFJob that would run this training on a cluster "
        "(SHARDS_DIR and MODEL_DIR as the pods see them, e.g. on the workspace volume)",
    )
    emit.add_argument(
        "--emit-tfjob", action="store_true", help="print the TFJob YAML, train nothing"
    )
    emit.add_argument("--job-name", default="kubedetect-train", help="the TFJob's name")
    from kubedetect.config import ClusterConfig

    add_arguments(train, ClusterConfig)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", help="COCO metrics and plots of a model (export dir or .tflite) on a split"
    )
    evaluate.add_argument(
        "model",
        metavar="MODEL",
        help="a model folder (Keras export or TFLite variant) or .tflite file",
    )
    evaluate.add_argument("shards_dir", metavar="SHARDS_DIR")
    evaluate.add_argument("--out", default=None, help="output folder (default: MODEL/evaluation)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_arguments(evaluate, EvalConfig)
    evaluate.set_defaults(handler=_evaluate)

    quantize = commands.add_parser(
        "quantize", help="TFLite variants (float32, float16, dynamic, int8) of an exported model"
    )
    quantize.add_argument("model_dir", metavar="MODEL_DIR")
    quantize.add_argument("out_dir", metavar="OUT_DIR")
    add_arguments(quantize, QuantizeConfig)
    quantize.set_defaults(handler=_quantize)


# ----------------------------------------------------------------------------------------------
# pipeline compile / submit / run-local
# ----------------------------------------------------------------------------------------------


def _pipeline_settings(args: argparse.Namespace):
    from kubedetect.config import ClusterConfig, PipelineConfig

    return from_args(PipelineConfig, args), from_args(ClusterConfig, args)


def _pipeline_compile(args: argparse.Namespace) -> int:
    from pipelines.run import compile_pipeline

    path = compile_pipeline(args.output, *_pipeline_settings(args))
    print(f"compiled the pipeline to {path}")
    return 0


def _pipeline_submit(args: argparse.Namespace) -> int:
    from pipelines.run import parse_params, submit

    settings, cluster = _pipeline_settings(args)
    params = parse_params(args.param, settings)
    if "data_uri" not in params:
        raise KubedetectError("--param data_uri=... is required (a folder the steps can read)")
    url = submit(
        args.host,
        params,
        settings,
        cluster,
        namespace=args.kfp_namespace,
        experiment=args.experiment,
        run_name=args.run_name,
        service_account=args.service_account,
    )
    print(f"submitted: {url}")
    return 0


def _pipeline_run_local(args: argparse.Namespace) -> int:
    from pipelines.run import LOCAL, parse_params, run_local

    params = parse_params(args.param, LOCAL)
    if "data_uri" not in params:
        raise KubedetectError("--param data_uri=PATH is required (a Pascal VOC folder)")
    params.setdefault("serving_dir", os.path.join(args.root, "serving"))
    console = Console()
    console.line(
        f"every step's full log: {shown(args.log_dir or os.path.join(args.root, 'logs'))}/"
    )
    run = run_local(
        params, args.root, LOCAL, log_dir=args.log_dir, console=console, verbose=args.verbose
    )
    console.line(f"run folder: {shown(run.root)}")
    serving = os.path.join(params["serving_dir"], "current")
    console.line(f"serving:    {shown(serving) if run.deployed else '(not deployed)'}")
    return 0


def _add_pipeline_commands(commands) -> None:
    from kubedetect.config import ClusterConfig, PipelineConfig

    pipeline = commands.add_parser(
        "pipeline", help="compile, submit or locally run the Kubeflow pipeline"
    )
    sub = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")
    param_help = "a pipeline parameter NAME=VALUE (repeatable), e.g. data_uri=/workspace/data/cards"

    compile_ = sub.add_parser("compile", help="write the pipeline YAML for Kubeflow Pipelines")
    compile_.add_argument(
        "-o", "--output", default="pipeline.yaml", help="YAML path (default: pipeline.yaml)"
    )
    add_arguments(compile_, PipelineConfig)
    add_arguments(compile_, ClusterConfig)
    compile_.set_defaults(handler=_pipeline_compile)

    submit = sub.add_parser("submit", help="submit a run to a Kubeflow Pipelines endpoint")
    submit.add_argument(
        "--host", required=True, help="the KFP API endpoint, e.g. http://127.0.0.1:8888"
    )
    submit.add_argument(
        "--kfp-namespace", default=None, help="KFP (multi-user) namespace of the run"
    )
    submit.add_argument("--experiment", default=None, help="KFP experiment name")
    submit.add_argument("--run-name", default=None, help="the run's name")
    submit.add_argument(
        "--service-account",
        default=None,
        help="the Kubernetes service account the steps run as (multi-user KFP: "
        "kubedetect-pipeline, see docs/DEPLOY.md; default: KFP's own, pipeline-runner)",
    )
    submit.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help=param_help
    )
    add_arguments(submit, PipelineConfig)
    add_arguments(submit, ClusterConfig)
    submit.set_defaults(handler=_pipeline_submit)

    local = sub.add_parser("run-local", help="run the same pipeline here (kfp.local, subprocesses)")
    local.add_argument(
        "--root", default="kfp-local", help="where runs and artifacts go (default: kfp-local)"
    )
    local.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help=param_help
    )
    local.add_argument(
        "--log-dir", default=None, help="every step's full log goes here (default: ROOT/logs)"
    )
    local.add_argument(
        "-v", "--verbose", action="store_true", help="show every step's output as it comes"
    )
    local.set_defaults(handler=_pipeline_run_local)


# ----------------------------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubedetect",
        description="Pascal VOC folders in, a served, quantized object detector out.",
    )
    parser.add_argument("--version", action="version", version=f"kubedetect {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="make or check Pascal VOC data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    synth = data_commands.add_parser("synth", help="write a synthetic VOC dataset of shapes")
    synth.add_argument("out_dir", metavar="OUT_DIR")
    synth.add_argument("--images", type=int, default=1000, help="number of images (default: 1000)")
    synth.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default: 0)")
    synth.add_argument("--workers", type=int, default=0, help="worker processes (0: all cores)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_data_synth)

    check = data_commands.add_parser(
        "check", help="parse every annotation, decode every image, report every problem"
    )
    check.add_argument("data_dir", metavar="DATA_DIR")
    check.add_argument("--strict", action="store_true", help="exit 1 if there is any problem")
    check.add_argument("--report", default="kubedetect-report.json", help="JSON report path")
    check.add_argument("--workers", type=int, default=0, help="worker processes (0: all cores)")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    add_arguments(check, DataConfig)
    check.set_defaults(handler=_data_check)

    pre = commands.add_parser("preprocess", help="write TFRecord shards from a VOC folder")
    pre.add_argument("data_dir", metavar="DATA_DIR")
    pre.add_argument("out_dir", metavar="OUT_DIR")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    add_arguments(pre, PreprocessConfig, skip=("progress",))
    add_arguments(pre, DataConfig)
    pre.set_defaults(handler=_preprocess)

    merge = commands.add_parser("merge-shards", help="write dataset.json once every shard is done")
    merge.add_argument("out_dir", metavar="OUT_DIR")
    merge.set_defaults(handler=_merge_shards)

    _add_model_commands(commands)
    _add_candidates_command(commands)
    _add_pipeline_commands(commands)

    serve = commands.add_parser(
        "serve",
        help="serve a TFLite model folder over HTTP (Gunicorn): /v1/detect, KServe V1 and V2, "
        "a web page",
        description="Flags override KUBEDETECT_* environment variables (KUBEDETECT_PORT, ...).",
    )
    serve.add_argument(
        "model_dir",
        metavar="MODEL_DIR",
        nargs="?",
        default=argparse.SUPPRESS,
        help="folder with a .tflite and its model.json (or KUBEDETECT_MODEL_DIR)",
    )
    add_arguments(serve, ServeConfig, skip=("model_dir",))
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KubedetectError as exc:
        print(f"kubedetect: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kubedetect: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
