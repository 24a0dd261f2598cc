"""The same detector under KServe's Python model server: bench/serve.py's point of comparison.

A custom `kserve.Model` serving a kubedetect model folder over KServe V1 (`:predict` with
`{"instances": [{"image": {"b64": ...}}]}`), doing the same work as kubedetect's server: the
shared image loading, the LiteRT interpreter, the shared decode. Run by the KServe virtualenv
(bench/kserve/setup-venv.sh) with the repository on PYTHONPATH:

    KD_MODEL_DIR=... KD_PORT=8081 KD_WORKERS=1 \
        .venv-kserve/bin/python bench/kserve/detector_model.py

Settings come from the environment because KServe parses sys.argv itself at import. KServe
binds 0.0.0.0 (it has no setting for the address): call it on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import os
import threading

import kserve
import numpy as np

from kubedetect.inference.runtime import TFLiteDetector
from kubedetect.io.images import load_for_model


class Detector(kserve.Model):
    def __init__(self, name: str, model_dir: str, num_threads: int):
        super().__init__(name)
        self.model_dir = model_dir
        self.num_threads = num_threads
        self.ready = False

    def load(self) -> bool:
        self.runtime = TFLiteDetector(self.model_dir, num_threads=self.num_threads)
        self.size = self.runtime.input_size
        self.lock = threading.Lock()  # one interpreter, not thread-safe
        self.runtime.predict(np.zeros((1, self.size, self.size, 3), np.uint8))  # warm-up
        self.ready = True
        return self.ready

    # With KD_WORKERS > 1 KServe pickles the model into each spawned worker process: send the
    # settings, and load the interpreter again there.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("runtime", "lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.ready:
            self.load()

    def predict(self, payload: dict, headers: dict | None = None) -> dict:
        predictions = []
        for instance in payload["instances"]:
            data = base64.b64decode(instance["image"]["b64"])
            pixels, frame = load_for_model(
                data, size=self.size, max_pixels=40_000_000, resize=self.runtime.card.resize
            )
            width, height = frame.width, frame.height
            with self.lock:
                (found,) = self.runtime.predict(pixels[None])
            boxes = found.in_original(frame)
            predictions.append(
                {
                    "width": width,
                    "height": height,
                    "detections": [
                        {
                            "label": self.runtime.classes[int(c)],
                            "class_id": int(c),
                            "score": round(float(s), 5),
                            "box": dict(
                                zip(
                                    ("xmin", "ymin", "xmax", "ymax"),
                                    (round(float(v), 2) for v in b),
                                    strict=True,
                                )
                            ),
                        }
                        for b, s, c in zip(boxes, found.scores, found.class_ids, strict=True)
                    ],
                }
            )
        return {"predictions": predictions}


if __name__ == "__main__":
    model = Detector(
        os.environ.get("KD_MODEL_NAME", "detector"),
        os.environ["KD_MODEL_DIR"],
        int(os.environ.get("KD_NUM_THREADS", "1")),
    )
    model.load()
    kserve.ModelServer(
        http_port=int(os.environ.get("KD_PORT", "8080")),
        enable_grpc=False,
        workers=int(os.environ.get("KD_WORKERS", "1")),
    ).start([model])
