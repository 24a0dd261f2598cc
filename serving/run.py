"""`kubedetect serve`: check the model folder, then become Gunicorn with gunicorn.conf.py.

The settings travel as KUBEDETECT_* environment variables, the same way a container passes
them, so the command line and the container run one configuration path. The process execs
Gunicorn (no wrapper left behind), so SIGTERM reaches Gunicorn's master directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kubedetect.config import ServeConfig
from kubedetect.errors import KubedetectError
from kubedetect.flags import to_env
from kubedetect.inference.ensemble import verify
from kubedetect.io.modelcard import ModelCard

CONF = Path(__file__).resolve().parent / "gunicorn.conf.py"


def gunicorn_argv() -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--config", str(CONF)]


def serve(config: ServeConfig) -> int:
    if not config.model_dir:
        raise KubedetectError("serve: a model folder is needed (MODEL_DIR or KUBEDETECT_MODEL_DIR)")
    card = ModelCard.load(config.model_dir)
    if card.kind not in ("tflite", "ensemble"):
        raise KubedetectError(
            f"{config.model_dir}: holds a {card.kind} model; serve a TFLite variant"
        )
    verify(config.model_dir, kinds=("tflite",))  # an ensemble's members too
    os.environ.update(to_env(config))
    print(
        f"serving {config.model_dir} ({card.variant}) as {config.model_name!r} on "
        f"http://{config.host}:{config.port} with {config.worker_count()} workers",
        file=sys.stderr,
        flush=True,
    )
    argv = gunicorn_argv()
    os.execv(argv[0], argv)
    return 1  # not reached
