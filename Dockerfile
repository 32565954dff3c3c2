# syntax=docker/dockerfile:1
# One image for every mmrag process: `mmrag up`, `mmrag agent NAME`, or `python -m edge_api`.
#
#   docker build -t mmrag:dev .                                           # CPU torch, models exported at first start
#   docker build -t mmrag:prod-baked --build-arg BAKE_MODELS=1 .          # ONNX embedder + OCR models baked in
#   docker build -t mmrag:gpu --build-arg TORCH_SPEC=torch==2.13.0 .      # PyPI's (CUDA) torch instead of the lock's
#
# Every dependency is installed from requirements/runtime.txt, checked against its hashes (decision 77; `make lock`
# regenerates it), then the project with --no-deps. The lock is for Linux x86_64 and CPython 3.11: PYTHON_IMAGE
# must stay a 3.11 image.
#
# Build args:
#   TORCH_SPEC       empty: the lock's torch, the CPU build, hash-checked. A torch requirement (a GPU build):
#                    installed over the rest of the lock, NOT hash-checked (requirements/install.sh).
#   TORCH_INDEX_URL  the only index the lock's CPU torch is fetched from (PyPI does not serve CPU builds).
#   BAKE_MODELS      1 = run `mmrag models` at build time with MMRAG_EMBEDDING_CACHE_DIR=/opt/mmrag/onnx, so no
#                    replica exports the ONNX model at start (needed for MMRAG_EMBEDDING_BACKEND=onnx in prod).
#                    Required on a read-only root filesystem (the Kubernetes manifests; the prod overlay runs the
#                    tag `prod-baked`): without it an agent that must export the model stops at start, naming the fix.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: every dependency from the lock, then the project, in one virtualenv to copy ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
ARG TORCH_SPEC=""
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements/install.sh requirements/runtime.txt requirements/
# The lock's CPU torch is fetched alone from TORCH_INDEX_URL into /wheels (no second index beside PyPI for the rest),
# then install.sh installs it from there like every other entry: checked against the lock's hash.
RUN mkdir /wheels \
    && if [ -z "$TORCH_SPEC" ]; then \
        pip download --no-deps --dest /wheels --index-url "$TORCH_INDEX_URL" \
            "$(grep -o '^torch==[^ ]*' requirements/runtime.txt)"; \
    fi \
    && PIP_FIND_LINKS=/wheels sh requirements/install.sh pip requirements/runtime.txt "$TORCH_SPEC" \
    && rm -rf /wheels
COPY pyproject.toml README.md ./
COPY contracts contracts
COPY telemetry telemetry
COPY bus bus
COPY documents documents
COPY models models
COPY search search
COPY agents agents
COPY edge_api edge_api
COPY mmrag mmrag
# The project alone: its dependencies are all in the lock, and the lock's setuptools builds it (build isolation would
# fetch setuptools unpinned). `pip check` fails the build if the lock misses a dependency.
RUN pip install --no-deps --no-build-isolation . \
    && pip check

# ---- runtime: slim base, the virtualenv, a non-root user ----
FROM ${PYTHON_IMAGE} AS runtime
ARG BAKE_MODELS=0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    MMRAG_DATA_DIR=/data \
    MMRAG_METRICS_HOST=0.0.0.0 \
    MMRAG_EMBEDDING_CACHE_DIR=/opt/mmrag/onnx
# libgomp: torch/onnxruntime threads; libgl/libglib: opencv (rapidocr) on slim images.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 mmrag \
    && useradd --system --uid 10001 --gid mmrag --create-home --home-dir /home/mmrag mmrag \
    && mkdir -p /data /opt/mmrag/onnx \
    && chown -R mmrag:mmrag /data /opt/mmrag
COPY --from=builder /opt/venv /opt/venv
WORKDIR /home/mmrag
USER 10001:10001
RUN if [ "$BAKE_MODELS" = "1" ]; then mmrag models; fi
EXPOSE 8080 9464
# The edge API answers /health on MMRAG_PORT (8080); an agent answers /health on MMRAG_METRICS_PORT (9464).
# Whichever of the two this container runs must answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os,urllib.request as u;u.urlopen('http://127.0.0.1:'+os.environ.get('MMRAG_PORT','8080')+'/health',timeout=3)" \
     || python -c "import os,urllib.request as u;u.urlopen('http://127.0.0.1:'+os.environ.get('MMRAG_METRICS_PORT','9464')+'/health',timeout=3)"
# Embedded mode; in a cluster run `mmrag agent NAME` per Deployment and `python -m edge_api` for the API.
CMD ["mmrag", "up", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/data"]
