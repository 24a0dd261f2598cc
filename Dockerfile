# kubedetect images, built from one file:
#   trainer  the project with TensorFlow, kfp and the training SDK: KFP pipeline steps, TFJob workers
#   server   the inference service only (LiteRT, Flask, Gunicorn): no TensorFlow
#
#   docker build --target trainer -t kubedetect-trainer .
#   docker build --target trainer --build-arg TF_EXTRA=tf-gpu -t kubedetect-trainer:gpu .
#   docker build --target server  -t kubedetect-server .
#
# Needs BuildKit (the pip cache mounts keep rebuilds to seconds). Every pip install is pinned by
# constraints.txt. Layers go from what changes least to what changes most: the base, the pinned
# dependencies (from pyproject.toml and constraints.txt only), then the project's own code, so that
# editing the code reuses the dependency layers. docs/DEPLOY.md has the details.

# checkov:skip=CKV_DOCKER_7: the base is FROM ${BASE_IMAGE}, which checkov does not expand; its default, python:3.11-slim, is a version tag, never latest
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# Build stages: a virtualenv per image, filled from the pins; nothing of these stages but
# /opt/venv reaches a final image.
# ---------------------------------------------------------------------------------------------
# Each image's requirements, from pyproject.toml's extras. Only these lists (and the pins) feed the
# dependency layers below, so an edit elsewhere in pyproject.toml does not reinstall anything.
FROM ${BASE_IMAGE} AS requirements
WORKDIR /build
COPY pyproject.toml k8s/docker/requirements.py ./
# tf-cpu (tensorflow-cpu) or tf-gpu (tensorflow[and-cuda]: CUDA and cuDNN come as pip wheels).
ARG TF_EXTRA=tf-cpu
# matplotlib (a core dependency, for evaluation plots) is left out of the server: serving draws
# with Pillow, and matplotlib with its fonts would take about 70 MB of its 400 MB budget.
RUN python3 requirements.py --core serve --exclude matplotlib > server.txt \
    && python3 requirements.py --core "${TF_EXTRA}" train pipeline > trainer.txt

FROM ${BASE_IMAGE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /build
RUN python3 -m venv /opt/venv
COPY constraints.txt ./

FROM venv AS server-deps
COPY --from=requirements /build/server.txt ./requirements.txt
# The service never installs anything at run time: pip and setuptools leave with the build.
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install -c constraints.txt -r requirements.txt \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

FROM venv AS trainer-deps
COPY --from=requirements /build/trainer.txt ./requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install -c constraints.txt -r requirements.txt

# The project itself, built once as a wheel and laid out under /project as it will sit in
# /opt/venv (lib/python3.11/site-packages/..., bin/kubedetect). The final images copy it over
# their dependency layer: a code change rebuilds a small layer, never the dependencies.
FROM venv AS project
COPY pyproject.toml README.md ./
COPY kubedetect ./kubedetect
COPY cli ./cli
COPY serving ./serving
COPY components ./components
COPY pipelines ./pipelines
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps --no-index --no-compile --prefix /project /wheels/*.whl

# ---------------------------------------------------------------------------------------------
# trainer: `python -m kubedetect.training.train ...` in TFJob workers (container `tensorflow`), and the base
# image of the KFP components. Runs as a non-root user (uid 10001).
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS trainer
# KFP's launcher keeps artifacts under /gcs, /minio and /s3 at the root: made here for the user.
RUN groupadd --system --gid 10001 kubedetect \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin kubedetect \
    && mkdir -p /gcs /minio /s3 /workspace \
    && chown 10001:10001 /gcs /minio /s3 /workspace
COPY --from=trainer-deps /opt/venv /opt/venv
COPY --from=project /project/ /opt/venv/
# Byte-compiled here, where the sources finally live (tracebacks name these paths).
RUN /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3.11/site-packages/kubedetect \
        /opt/venv/lib/python3.11/site-packages/cli \
        /opt/venv/lib/python3.11/site-packages/serving /opt/venv/lib/python3.11/site-packages/components \
        /opt/venv/lib/python3.11/site-packages/pipelines
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /tmp
USER 10001:10001
# A training or pipeline step is a batch process, not a service: nothing to probe.
HEALTHCHECK NONE
CMD ["kubedetect", "--help"]

# ---------------------------------------------------------------------------------------------
# server: `kubedetect serve` (Gunicorn) serving the quantized model folder mounted at
# /models/serving, as a non-root user, on a read-only root filesystem: its only scratch space is
# /tmp (an emptyDir on Kubernetes, a tmpfs under `docker run --read-only`). Gunicorn's control
# socket is disabled by serving/gunicorn.conf.py (it would go to ~/.gunicorn). Settings come from
# KUBEDETECT_* variables or flags after the image name: docker run IMAGE --workers 4
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS server
RUN groupadd --system --gid 10001 kubedetect \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin kubedetect
COPY --from=server-deps /opt/venv /opt/venv
COPY --from=project /project/ /opt/venv/
# Byte-compiled at build time: on a read-only root filesystem nothing can be cached at run time.
RUN /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3.11/site-packages/kubedetect \
        /opt/venv/lib/python3.11/site-packages/cli \
        /opt/venv/lib/python3.11/site-packages/serving /opt/venv/lib/python3.11/site-packages/components \
        /opt/venv/lib/python3.11/site-packages/pipelines
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KUBEDETECT_MODEL_DIR=/models/serving \
    KUBEDETECT_HOST=0.0.0.0 \
    KUBEDETECT_PORT=8080
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2)"]
ENTRYPOINT ["kubedetect", "serve"]
