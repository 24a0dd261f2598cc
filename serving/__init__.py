"""The inference service: the quantized detector behind Flask and Gunicorn.

Read it in this order:

- `lifecycle.py` the model's lifecycle (load, warm-up, ready) and its three steps, preprocess,
                 predict and postprocess, apart from any protocol (as in KServe's `kserve.Model`);
- `batching.py`  the batcher: a bounded queue per worker and one supervised thread running the
                 interpreter;
- `memory.py`    each worker's share of the pod's memory, and the budget its image decodes keep to;
- `health.py`    the probes, answered on a port of their own by a thread of each worker;
- `prometheus.py` the request, batch and readiness metrics, counted in every worker and summed
                 over them for /metrics;
- `app.py`       the application factory `create_app(config)`: one blueprint per protocol
                 (`api/`), errors as JSON, request metrics;
- `api/`         the protocols: kubedetect's own /v1/detect, KServe V1, the Open Inference
                 Protocol (KServe V2) with its binary tensor extension, /metrics, /openapi.json,
                 and the web page (`static/`, no front-end build step);
- `gunicorn.conf.py`, `worker.py` and `wsgi.py`  how Gunicorn runs it (`kubedetect serve` starts
                 Gunicorn).

Nothing here imports TensorFlow: the interpreter is LiteRT (ai-edge-litert).
"""
