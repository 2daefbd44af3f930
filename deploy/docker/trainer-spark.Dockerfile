# syntax=docker/dockerfile:1.7
# The Spark training job's driver: `recsys train --engine spark` (docs/scaling.md, "Training
# on Spark"). Build from the repository root:
#   docker build -f deploy/docker/trainer-spark.Dockerfile -t recsys-trainer-spark:TAG .
# The driver reads the sources, hands the confidence matrix to Spark and publishes the model;
# the executors run only JVM code (MLlib's ALS), so they use the stock Apache Spark image of
# the same Spark version as the pyspark pinned in constraints.txt
# (deploy/k8s/components/spark-training). Never used for serving: the recommender image
# stays free of Java and pyspark.

# ---- build stage: the venv with the [spark] extra -------------------------------
# One base for both stages (the venv's interpreter symlinks must stay valid), as a build
# argument like the other images.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7: FROM names the BASE_IMAGE argument, whose default above is pinned to an exact release (tests/unit/test_deploy_files.py resolves and checks it)
FROM ${BASE_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies (pyspark is ~450 MB) in a layer of their own, before any source is copied.
COPY constraints.txt pyproject.toml ./
RUN python -c 'import sys, tomllib; d = tomllib.load(open("pyproject.toml", "rb")); \
p = d["project"]; extras = sys.argv[1:]; \
print("\n".join(d["build-system"]["requires"] + p["dependencies"] \
+ [r for e in extras for r in p["optional-dependencies"][e]]))' spark > requirements.txt \
 && pip install --no-compile -c constraints.txt -r requirements.txt
COPY README.md ./
COPY recsys ./recsys
COPY services ./services
COPY recsys_tools ./recsys_tools
RUN pip install --no-compile --no-deps --no-build-isolation -c constraints.txt . \
 && python -m compileall -q /opt/venv/lib

# ---- runtime stage: interpreter, Java 17 for the Spark driver, the venv ---------
FROM ${BASE_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless=17.* \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 recsys \
 && useradd --system --uid 10001 --gid recsys --no-create-home --shell /usr/sbin/nologin recsys
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
# The driver's RPC and block-manager ports, which the executors connect back to.
EXPOSE 7078 7079
# A batch job: Kubernetes tracks it by its exit status, there is nothing to probe.
# checkov:skip=CKV_DOCKER_2: a batch job, judged by its exit status
ENTRYPOINT ["recsys"]
