"""Configuration: one dataclass per concern, shared by the CLI, the KFP components and serving.

Each field carries its help text (`option`), so that the command line and the components are
generated from the same source and cannot drift apart (kubedetect.flags turns the fields into
flags and environment variables and back). Defaults live here and only here. This module imports
nothing heavy: serving and the CLI read it without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubedetect.errors import KubedetectError
from kubedetect.resources import available_cores


def option(default: Any, help: str, *, flag: str | None = None) -> Any:
    """A dataclass field that also describes its command-line flag."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class DataConfig:
    """How a Pascal VOC folder is read: which classes, which split, which limits."""

    classes: tuple[str, ...] | None = option(
        None, "Comma-separated class names, in id order. Default: every class in the data, sorted."
    )
    val_fraction: float = option(
        0.1,
        "Share of images put in 'val' by a hash of the file stem, where ImageSets/Main has no "
        "val list.",
    )
    max_xml_bytes: int = option(10_000_000, "Larger annotation files are refused (no huge trees).")
    max_image_pixels: int = option(
        80_000_000, "Larger images are refused as decompression bombs (width x height)."
    )


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become TFRecord shards."""

    image_size: int = option(256, "Square training size in pixels; images are resized to it.")
    workers: int = option(
        0, "Worker processes decoding and resizing images. 0: the cores available."
    )
    num_shards: int = option(4, "Shards per split; the unit of distribution across machines.")
    shard_index: int | None = option(
        None, "Process only this shard (0-based); then run merge-shards once all are written."
    )
    jpeg_quality: int = option(90, "JPEG quality of the resized images stored in the shards.")
    progress: bool = option(True, "Show a progress bar.")

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else available_cores()


@dataclass(frozen=True)
class ModelConfig:
    """The detector's architecture and initial weights (the input size comes from the shards)."""

    backbone: str = option(
        "tiny",
        "'tiny': kubedetect's own backbone of plain convolutions, sized by --model-size; or "
        "'mobilenetv2' (alpha 0.35).",
    )
    model_size: str | None = option(
        None,
        "'tiny' (about 200k parameters, 0.2 GFLOP a 256 px image: the right model on CPUs) or "
        "'large' (wider and deeper backbone and neck, about 3M parameters: for GPU pods). "
        "Default: tiny, but large for the workers of a TFJob with GPUs (--gpus-per-worker > 0).",
    )
    width: int | None = option(
        None, "Base channel width of the backbone and the neck. Default: the --model-size's."
    )
    weights: str | None = option(
        None,
        "Initial weights. 'imagenet' (mobilenetv2 only) downloads them; a path, local or gs://, "
        "names a file read by layer name: an earlier kubedetect model (its export folder or "
        "model.keras) or a Keras .h5 weights file (e.g. MobileNetV2's ImageNet weights, copied "
        "where the cluster can read them). Default: random.",
    )


GPU_MODEL_SIZE = "large"


def gpu_model_size(argv: list[str], gpus_per_worker: int) -> list[str]:
    """Training flags for workers given GPUs: the large model unless --model-size is set."""
    if gpus_per_worker <= 0 or any(a.split("=", 1)[0] == "--model-size" for a in argv):
        return list(argv)
    return [*argv, "--model-size", GPU_MODEL_SIZE]


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how the pipeline's steps and TFJobs run on Kubernetes (ignored locally).

    Everything lives in one namespace, the one Kubeflow Pipelines runs the steps in (`kubeflow`
    with standalone KFP, a profile's namespace with multi-user KFP): a step mounts only PVCs of
    its own namespace, the TFJob's workers and the serving pods mount the same workspace PVC, and
    a TFJob is garbage-collected with the step's pod only if it lives beside it. k8s/ installs
    into the same default namespace (tests/test_k8s_manifests.py checks that they agree).
    """

    image: str = option(
        "kubedetect-trainer:latest", "The trainer image of the pipeline steps (CPU build)."
    )
    tfjob_image: str | None = option(
        None,
        "The image of the TFJob workers (and of the train step with --launcher local on GPUs). "
        "Default: --image, or with --gpus-per-worker > 0 its GPU build, the same name with "
        "'-gpu' appended to the tag (as `k8s/build-images.sh --gpu` tags it).",
    )
    namespace: str = option(
        "kubeflow",
        "Namespace of the pipeline's steps (where KFP runs them: `kubeflow` for standalone KFP, "
        "the profile's namespace for multi-user KFP), and so of the TFJobs, the workspace PVC "
        "and the serving Deployment they use.",
    )
    workspace_pvc: str = option(
        "kubedetect-workspace", "PVC holding datasets, checkpoints and models (ReadWriteMany)."
    )
    workspace_mount: str = option("/workspace", "Where the workspace PVC is mounted.")
    gpus_per_worker: int = option(0, "nvidia.com/gpu per TFJob worker (0: CPU training).")
    worker_cpu: str = option("2", "CPU request per TFJob worker.")
    worker_memory: str = option("8Gi", "Memory request and limit per TFJob worker.")
    worker_shm: str = option(
        "2Gi",
        "Size of the memory-backed /dev/shm of each TFJob worker (NCCL's shared memory between "
        "GPUs; it counts against the memory limit).",
    )
    gpu_node_selector: str = option(
        "nvidia.com/gpu.present=true", "key=value node selector for GPU workers and steps."
    )
    gpu_toleration: str = option(
        "nvidia.com/gpu", "Taint key tolerated by GPU workers and steps (NoSchedule)."
    )
    image_pull_secret: str | None = option(None, "Secret for pulling the images, if private.")
    trainer_service_account: str = option(
        "kubedetect-trainer", "Service account of TFJob pods (they need no API access)."
    )
    serving_deployment: str = option(
        "kubedetect-server",
        "The serving Deployment (or InferenceService) that deploy rolls to a new model.",
    )
    serving_models_mount: str = option(
        "/models", "Where the serving pods mount the workspace's models/ folder."
    )
    job_backoff_limit: int = option(3, "TFJob runPolicy.backoffLimit: restarts before failing.")
    job_ttl_seconds: int = option(
        86400, "TFJob runPolicy.ttlSecondsAfterFinished: how long a finished job is kept."
    )
    job_timeout_seconds: int = option(
        6 * 3600,
        "TFJob runPolicy.activeDeadlineSeconds: the Training Operator fails a job that runs "
        "longer; the train step waits that long (and a minute), then deletes the job.",
    )

    def worker_image(self) -> str:
        """The image TFJob workers run: --tfjob-image, else --image or, on GPUs, its -gpu tag."""
        if self.tfjob_image:
            return self.tfjob_image
        if self.gpus_per_worker <= 0:
            return self.image
        name, sep, tag = self.image.rpartition(":")
        if "@" in self.image or not sep or "/" in tag:
            raise KubedetectError(
                f"--image {self.image}: no tag to derive the GPU image from; give the workers' "
                "image with --tfjob-image (e.g. the trainer built by k8s/build-images.sh --gpu)"
            )
        return self.image if tag.endswith("-gpu") else f"{name}:{tag}-gpu"


@dataclass(frozen=True)
class ServeConfig:
    """The inference service: where it listens, how many processes, how requests are batched.

    Every field is also read from a KUBEDETECT_* environment variable (`port` from
    KUBEDETECT_PORT), which is how the container and gunicorn.conf.py are configured.
    """

    model_dir: str | None = option(
        None, "Model folder: a .tflite with its model.json, or an ensemble of such folders."
    )
    host: str = option("127.0.0.1", "Address to listen on ('0.0.0.0' inside a container).")
    port: int = option(8080, "Port to listen on.")
    workers: int = option(0, "Gunicorn worker processes. 0: the cores available.")
    threads: int = option(4, "Request threads per worker; their images are batched together.")
    model_name: str = option("detector", "The model's name in the KServe V1 and V2 routes.")
    num_threads: int = option(1, "LiteRT interpreter threads per worker.")
    max_batch_size: int = option(8, "Most images run through the interpreter at once.")
    max_batch_delay_ms: float = option(
        0.0, "Longest a batch waits for more images (0: it runs what is queued at once)."
    )
    max_queue: int = option(
        32, "Images waiting for the interpreter, per worker; beyond it: 503 with Retry-After."
    )
    request_timeout: float = option(10.0, "Seconds a request may wait for its result (then 503).")
    max_body_bytes: int = option(16 * 2**20, "Larger request bodies are refused (413).")
    max_image_pixels: int = option(
        40_000_000, "Larger images are refused as decompression bombs (width x height)."
    )
    memory_limit: str | None = option(
        None,
        "Memory the whole server may use (bytes, or a quantity such as 1Gi); each worker's "
        "decode budget is planned from it. Default: the container's limit, else the RAM.",
    )
    health_port: int = option(
        0, "Port on which each worker answers /v2/health/* on a thread of its own (0: none)."
    )
    score_threshold: float | None = option(
        None, "Default lowest score returned. Default: the model card's."
    )
    max_detections: int | None = option(
        None, "Default most detections per image. Default: the model card's."
    )
    warmup_runs: int = option(
        1, "Warm-up inferences at each batch size before a worker reports ready."
    )
    warmup_timeout: float = option(
        600.0,
        "Seconds a worker waits for its warm-up before accepting connections "
        "(then it answers 503 'not ready' until warm).",
    )
    graceful_timeout: float = option(
        30.0, "Seconds in-flight requests get to finish after SIGTERM before workers are killed."
    )
    access_log: bool = option(True, "Log every request (JSON, to stdout).")
    log_level: str = option("info", "debug, info, warning or error.")

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else available_cores()


@dataclass(frozen=True)
class TrainConfig:
    """How the detector is trained (the same flags for one process, local workers and a TFJob)."""

    epochs: int = option(
        0,
        "Passes over the training split. 0: as many as --images-seen asks for, within "
        "--min-epochs and --max-epochs.",
    )
    images_seen: int = option(
        60_000,
        "The training budget when --epochs is 0: images the model sees in all (augmented "
        "copies of the training split), whatever the split's size.",
    )
    min_epochs: int = option(5, "Fewest epochs the --images-seen budget may give.")
    max_epochs: int = option(300, "Most epochs the --images-seen budget may give.")
    batch_size: int = option(32, "Global batch size, split evenly across workers (replicas).")
    learning_rate: float = option(
        4e-3, "Peak learning rate of AdamW (after warm-up, cosine decay)."
    )
    warmup_epochs: float = option(
        3.0, "Linear learning-rate warm-up, in epochs (at most a tenth of the run)."
    )
    weight_decay: float = option(1e-4, "Decoupled weight decay of AdamW.")
    steps_per_epoch: int = option(
        0, "Steps per epoch. 0: one pass over the training split (images // batch size)."
    )
    ema_decay: float = option(
        0.999,
        "Decay of the exponential moving average of the weights that is validated and exported "
        "(ramped up over the first steps). 0: the raw weights.",
    )
    seed: int = option(0, "Seeds initial weights, shuffling and augmentation: same seed, same run.")
    augment: bool = option(True, "Box-consistent augmentation: flips, scale/crop jitter, colour.")
    scale_jitter: float = option(
        0.25, "Random crop side relative to the image, in [1 - j, 1 + j] (more than 1 zooms out)."
    )
    colour_jitter: float = option(0.2, "Strength of brightness, contrast and saturation jitter.")
    mosaic: bool = option(
        False, "Every training image a mosaic of four (each a zoomed-in window at half size)."
    )
    shuffle_buffer: int = option(2048, "Examples in the shuffle buffer of each worker.")
    cache: str = option(
        "auto",
        "Decoded training images in memory: 'auto' when this worker's share fits --cache-budget "
        "(else streamed from the shards every epoch), 'memory' always, 'none' never.",
    )
    cache_budget: float = option(
        0.5,
        "Share of the process's memory limit (KUBEDETECT_MEMORY_LIMIT, else the cgroup's "
        "memory.max, else RAM) that --cache auto may fill with decoded images.",
    )
    checkpoint_dir: str | None = option(
        None,
        "Checkpoints, shared by all workers (a volume or bucket on a cluster); a restarted job "
        "resumes from the latest. Default: MODEL_DIR/checkpoints.",
    )
    checkpoint_every: int = option(100, "Steps between checkpoints (0: only at the end of epochs).")
    keep_checkpoints: bool = option(
        False, "Keep the default checkpoint folder after a successful export (it is removed)."
    )
    cluster_timeout: float = option(
        600.0, "Seconds to wait for every worker of TF_CONFIG to come up before failing."
    )
    threads: int = option(
        0,
        "CPU threads for TensorFlow ops and tf.data in this process. 0: the cores available "
        "(KUBEDETECT_CPUS, else the cgroup's CPU quota, else the CPUs it may run on).",
    )
    eval_every: int = option(
        0,
        "Epochs between validation mAP measurements (every worker predicts its slice of the "
        "val split; the chief scores them); the weights that score best are exported. "
        "0: --evaluations spread over the run.",
    )
    evaluations: int = option(
        10, "Validations over the run when --eval-every is 0 (1: after the last epoch only)."
    )
    eval_images: int = option(0, "Validation images for the per-epoch mAP. 0: the whole split.")
    log_every: int = option(
        50,
        "Steps between readings of the running loss for the progress bar (a host sync each; "
        "never read when no bar is shown). The epoch's loss is read once, at its end.",
    )
    mixed_precision: bool = option(True, "float16 compute on GPUs (ignored without a GPU).")
    progress: bool = option(True, "Show a progress bar per epoch (on terminals only).")
    require_gpus: int = option(
        0,
        "Stop at once, before training, unless TensorFlow sees at least this many GPUs (TFJobs "
        "that ask for GPUs pass it: a worker without its GPUs must not train on the CPU).",
    )


@dataclass(frozen=True)
class EvalConfig:
    """How a model is evaluated (COCO metrics through pycocotools)."""

    split: str = option(
        "auto",
        "The split of the shards to evaluate on. 'auto': 'test' where the shards have one (images "
        "training never saw), else 'val'.",
    )
    score_threshold: float | None = option(
        None,
        "Score above which a detection counts, for precision, recall, the confusion matrix and "
        "the image grid. Default: the model's own (model.json). mAP uses every detection.",
    )
    iou_threshold: float = option(
        0.5, "IoU at which a detection matches a true box (precision, recall, confusion)."
    )
    max_detections: int = option(100, "Detections per image (COCO's maxDets).")
    batch_size: int = option(16, "Images per forward pass.")
    threads: int = option(
        0,
        "CPU threads of the model (TFLite interpreter or TensorFlow). 0: the cores available "
        "(KUBEDETECT_CPUS, else the cgroup's CPU quota).",
    )
    max_images: int = option(0, "Evaluate only the first N images of the split. 0: all.")
    plots: bool = option(
        True, "Write the plots (PR curves, confusion matrix, image grid, training curves)."
    )
    grid_images: int = option(16, "Validation images in the grid of predicted and true boxes.")


@dataclass(frozen=True)
class QuantizeConfig:
    """How the exported model becomes TFLite variants, and how they are compared."""

    modes: tuple[str, ...] = option(
        ("float32", "float16", "dynamic", "int8"), "Variants to write.", flag="--mode"
    )
    shards: str | None = option(
        None,
        "Shards folder for calibration (train split) and the report (val split). Default: the "
        "one the model was trained on (model.json provenance).",
    )
    calibration_images: int = option(200, "Training images that calibrate the int8 ranges.")
    report: bool = option(False, "Evaluate every variant and write report.json and report.md.")
    threads: int = option(2, "Interpreter threads for the latency measurement of the report.")
    latency_runs: int = option(200, "Timed single-image runs per variant and round.")
    latency_rounds: int = option(
        3, "Rounds of latency measurement, the variants taking turns; the best round counts."
    )
    split: str = option("val", "Split on which the report measures mAP.")
    max_map_drop: float = option(
        2.0,
        "Accuracy budget: the report names the fastest variant on this CPU whose mAP@0.5 is at "
        "most this many points below float32's (the pipeline's quality gate serves it).",
    )


@dataclass(frozen=True)
class CandidatesConfig:
    """Several candidate trainings, the best (or a fusion of the best few) going on to serving.

    The candidates are every combination of the values listed (seeds x learning rates x model
    sizes), repeated for each bootstrap sample when there are any; what is not listed is the
    training's own setting. Each candidate is scored on the validation split, by mAP@0.5:0.95.
    """

    seeds: tuple[str, ...] | None = option(
        None, "Seeds of the candidates (initial weights, shuffling, augmentation), e.g. 0,1,2."
    )
    learning_rates: tuple[str, ...] | None = option(
        None, "Peak learning rates of the candidates, e.g. 2e-3,4e-3."
    )
    model_sizes: tuple[str, ...] | None = option(
        None, "Model sizes of the candidates (tiny, large), e.g. tiny,large."
    )
    bootstrap: int = option(
        0,
        "Bootstrap samples of the training split (as many images as it has, drawn with "
        "replacement, one sample per candidate set): the candidates are repeated for each. "
        "0: every candidate trains on the whole split.",
    )
    ensemble_size: int = option(
        1,
        "How many of the best candidates the served model combines: 1 serves the best alone; "
        "k > 1 fuses the boxes of the best k (weighted box fusion, each weighted by its "
        "validation mAP@0.5:0.95), at k times the interpreter time.",
    )
    fusion_iou: float = option(
        0.55, "IoU above which boxes of the same class from different models are fused."
    )
    fusion_skip: float = option(
        0.02, "Boxes a member scores below this take no part in fusion (fewer boxes to fuse)."
    )
    parallel: int = option(
        0,
        "Candidates trained side by side on this machine, sharing its cores and memory. "
        "0: one per two cores available.",
    )


@dataclass(frozen=True)
class GateConfig:
    """When a new model may replace the one in service: good enough on its own (min_map), and
    not worse than the model in service on the same test split by more than a margin."""

    min_map: float = option(0.5, "Lowest mAP@0.5 the variant to serve must reach.")
    champion_margin: float = option(
        1.0,
        "Points of mAP@0.5:0.95 on the test split (val where the data has no test split) by "
        "which the new model may fall short of the model in service and still replace it "
        "(negative: it must beat it by that much).",
    )


@dataclass(frozen=True)
class PipelineConfig:
    """Settings fixed when the pipeline is compiled; the rest are the pipeline's parameters."""

    launcher: str = option(
        "tfjob",
        "How the train step trains: 'tfjob' submits a TFJob, 'local' runs the local "
        "launcher inside the step.",
    )
    deploy_to: str = option(
        "cluster",
        "'cluster' rolls the serving Deployment; 'inferenceservice' rolls KServe's "
        "InferenceService of that name (k8s/overlays/kserve); 'local' installs into a folder.",
    )
    parallelism: int = option(4, "Shards preprocessed at the same time (ParallelFor).")
    candidate_parallelism: int = option(
        2,
        "Candidates trained at the same time (ParallelFor): TFJobs on a cluster, each holding "
        "its workers' GPUs. 0: as this machine's cores allow, each given its share of them "
        "(runs on this machine: `pipeline run-local`).",
    )
    cache: bool = option(
        True,
        "Let Kubeflow Pipelines reuse a step's earlier result when its inputs are the same. The "
        "data steps' inputs include a fingerprint of the data folder, taken afresh by `plan "
        "shards` on every run, so changed images or labels are preprocessed again; deploy always "
        "runs. --no-cache runs every step.",
    )
