"""Gunicorn settings for the inference service, from the KUBEDETECT_* environment.

`kubedetect serve` runs Gunicorn with this file; so does the container. Settings:
- workers and threads: KUBEDETECT_WORKERS (0: one per core) and KUBEDETECT_THREADS, Gunicorn's
  gthread worker (threads are what the batcher batches across), quitting once and leaving without
  Python's interpreter shutdown (serving/worker.py);
- preload_app: the master loads the app and checks the model once, then forks the workers;
- glibc's malloc told to unmap large blocks as soon as they are freed (serving/memory.py), before
  the workers fork: a worker's memory then follows what its decode budget counts;
- graceful_timeout: after SIGTERM, in-flight requests have this long to finish;
- no control socket (Gunicorn 27 would create ~/.gunicorn/...: read-only, non-root containers);
- JSON logs, access log included, to stdout;
- Prometheus multiprocess metrics in PROMETHEUS_MULTIPROC_DIR (made here if unset, emptied at
  start, dead workers marked).
"""

import glob
import os
import tempfile

from kubedetect.config import ServeConfig
from kubedetect.flags import from_env

_config = from_env(ServeConfig)

# Before anything imports prometheus_client (the app, preloaded below), so it counts in files.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="kubedetect-metrics-"))
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from serving.logs import logging_config  # noqa: E402
from serving.memory import release_large_frees  # noqa: E402

release_large_frees()

wsgi_app = "serving.wsgi:app"
bind = [
    f"[{_config.host}]:{_config.port}" if ":" in _config.host else f"{_config.host}:{_config.port}"
]
workers = _config.worker_count()
worker_class = "serving.worker.Worker"  # gthread, quitting once (serving/worker.py)
threads = _config.threads
preload_app = True
graceful_timeout = int(round(_config.graceful_timeout))  # Gunicorn takes whole seconds
timeout = max(30, int(3 * _config.request_timeout))  # a worker silent this long is replaced
keepalive = 5
control_socket_disable = True
accesslog = "-" if _config.access_log else None
errorlog = "-"
loglevel = _config.log_level
logconfig_dict = logging_config(_config.log_level, _config.access_log)
logger_class = "serving.logs.AccessLogger"  # the JSON access line, cheaply
proc_name = "kubedetect-serve"


def on_starting(server):
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)  # counts of an earlier run


def post_worker_init(worker):
    from serving.app import start_worker

    start_worker(worker.wsgi, worker)


def worker_exit(server, worker):
    from serving.worker import exit_now

    exit_now()


def child_exit(server, worker):
    from serving.prometheus import worker_exited

    worker_exited(worker.pid)
