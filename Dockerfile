# One image for every mmrag process: `mmrag up`, `mmrag agent NAME`, or `python -m edge_api`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# torch first, so its build is chosen here: pass --build-arg TORCH_PIP_ARGS="--index-url <a CPU wheel index>"
# for a small CPU-only image, or leave it empty for the default (CUDA) build.
ARG TORCH_SPEC="torch>=2.2"
ARG TORCH_PIP_ARGS=""
RUN pip install $TORCH_PIP_ARGS "$TORCH_SPEC"

COPY pyproject.toml README.md ./
COPY contracts contracts
COPY agents agents
COPY edge_api edge_api
RUN pip install .

RUN useradd --create-home mmrag && mkdir -p /data && chown mmrag /data
USER mmrag
ENV MMRAG_DATA_DIR=/data MMRAG_METRICS_HOST=0.0.0.0
EXPOSE 8080
# Embedded mode; in a cluster run `mmrag agent NAME` per Deployment and `python -m edge_api` for the API.
CMD ["mmrag", "up", "--host", "0.0.0.0", "--port", "8080", "--data-dir", "/data"]
