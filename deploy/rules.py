"""Checks on rendered manifests that no offline schema or policy scanner covers.

Pure functions over parsed documents (lists of dicts), stdlib only, so unit tests
can feed them hand-built resources. Two groups:

* what the custom resources we commit (Strimzi ``Kafka``, ``KafkaNodePool``,
  ``KafkaTopic``, ``KafkaUser``; Prometheus Operator ``ServiceMonitor``, ``PodMonitor``,
  ``PrometheusRule``) must hold beyond their schemas: the project's choices (KRaft with
  node pools, pinned versions, explicit partitions, replicas and retention, one of alert /
  record) and what ties them together. Types, enums, patterns and the schemas' required
  fields are checked by a real API server with the CRDs generated from the operators' own
  artifacts (``python -m deploy.admit``, whose negative controls prove each one); the
  approximations of them that used to live here are gone;
* project invariants the issue states (events replicas bounded by the click
  topic's partitions, grace period longer than the drain, native gRPC probes,
  no committed secret values, ...).

Each function returns a list of human-readable error strings; empty means pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Doc = Mapping[str, Any]

# Mirrors recsys.kafka_io (a unit test keeps the two equal): the tool
# environment that runs these checks does not have the project installed.
REQUIRED_TOPICS = (
    "recsys.clicks.v1",
    "recsys.clicks.dlq.v1",
    "recsys.feedback.v1",
    "recsys.feedback.scored.v1",
    "recsys.feedback.dlq.v1",
)
CLICKS_TOPIC = "recsys.clicks.v1"
GRPC_SERVICES = ("recommender", "events", "sentiment")
DRAIN_SECONDS = 20  # the services' GRACE: they stop within this after SIGTERM

STRIMZI = "kafka.strimzi.io"
MONITORING = "monitoring.coreos.com"
_NODE_ROLES = {"controller", "broker"}


def group_of(doc: Doc) -> str:
    api = str(doc.get("apiVersion", ""))
    return api.split("/", 1)[0] if "/" in api else ""


def ref(doc: Doc) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def _get(doc: Any, *path: str) -> Any:
    cur = doc
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


# --------------------------------------------------------------------------
# custom resources
# --------------------------------------------------------------------------

CUSTOM_KINDS = {
    (STRIMZI, "Kafka"),
    (STRIMZI, "KafkaNodePool"),
    (STRIMZI, "KafkaTopic"),
    (STRIMZI, "KafkaUser"),
    (MONITORING, "ServiceMonitor"),
    (MONITORING, "PodMonitor"),
    (MONITORING, "PrometheusRule"),
}


def is_custom(doc: Doc) -> bool:
    return (group_of(doc), str(doc.get("kind"))) in CUSTOM_KINDS


def check_kafka(doc: Doc) -> list[str]:
    errs: list[str] = []
    r = ref(doc)
    annotations = _get(doc, "metadata", "annotations") or {}
    if annotations.get("strimzi.io/node-pools") != "enabled":
        errs.append(f"{r}: annotation strimzi.io/node-pools: enabled is required (KafkaNodePool)")
    if annotations.get("strimzi.io/kraft") != "enabled":
        errs.append(f"{r}: annotation strimzi.io/kraft: enabled is required (KRaft mode)")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        return [*errs, f"{r}: spec is required"]
    if "zookeeper" in spec:
        errs.append(f"{r}: spec.zookeeper must be absent in KRaft mode")
    kafka = spec.get("kafka")
    if not isinstance(kafka, Mapping):
        return [*errs, f"{r}: spec.kafka is required"]
    for key in ("version", "metadataVersion"):
        if not kafka.get(key):
            errs.append(f"{r}: spec.kafka.{key} is required (pin the Kafka version)")
    listeners = kafka.get("listeners")
    if not isinstance(listeners, list) or not listeners:
        errs.append(f"{r}: spec.kafka.listeners must be a non-empty list")
    if "storage" in kafka:
        errs.append(f"{r}: spec.kafka.storage belongs in the KafkaNodePool with node pools")
    return errs


def check_node_pool(doc: Doc) -> list[str]:
    errs: list[str] = []
    r = ref(doc)
    if not _get(doc, "metadata", "labels", "strimzi.io/cluster"):
        errs.append(f"{r}: label strimzi.io/cluster is required")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        return [*errs, f"{r}: spec is required"]
    roles = spec.get("roles")
    if not isinstance(roles, list) or not roles:
        errs.append(f"{r}: spec.roles must be a non-empty list")
    return errs


def check_topic(doc: Doc) -> list[str]:
    errs: list[str] = []
    r = ref(doc)
    if not _get(doc, "metadata", "labels", "strimzi.io/cluster"):
        errs.append(f"{r}: label strimzi.io/cluster is required (the topic operator ignores it)")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        return [*errs, f"{r}: spec is required"]
    # The schema allows both absent (the broker's defaults); the project wants them explicit.
    for key in ("partitions", "replicas"):
        if spec.get(key) is None:
            errs.append(f"{r}: spec.{key} is required (explicit, not the broker default)")
    retention = str(_get(spec, "config", "retention.ms"))
    if not re.fullmatch(r"-1|\d+", retention):
        errs.append(f"{r}: spec.config['retention.ms'] is required (explicit retention)")
    return errs


def check_kafka_user(doc: Doc) -> list[str]:
    errs: list[str] = []
    r = ref(doc)
    if not _get(doc, "metadata", "labels", "strimzi.io/cluster"):
        errs.append(f"{r}: label strimzi.io/cluster is required (the user operator ignores it)")
    acls = _get(doc, "spec", "authorization", "acls")
    if not isinstance(acls, list):
        return [*errs, f"{r}: spec.authorization needs a list of acls"]
    for i, acl in enumerate(acls):
        resource = _get(acl, "resource") or {}
        if resource.get("type") != "cluster" and not resource.get("name"):
            errs.append(f"{r}: spec.authorization.acls[{i}].resource needs a name")
        if not isinstance(_get(acl, "operations"), list) or not acl["operations"]:
            errs.append(f"{r}: spec.authorization.acls[{i}].operations must be a non-empty list")
    return errs


def check_service_monitor(doc: Doc) -> list[str]:
    r = ref(doc)
    errs: list[str] = []
    key = "podMetricsEndpoints" if doc.get("kind") == "PodMonitor" else "endpoints"
    endpoints = _get(doc, "spec", key)
    if not isinstance(endpoints, list) or not endpoints:
        errs.append(f"{r}: spec.{key} must be a non-empty list")
    else:
        for i, ep in enumerate(endpoints):
            if not isinstance(ep, Mapping) or not (ep.get("port") or ep.get("targetPort")):
                errs.append(f"{r}: spec.{key}[{i}] needs a port name")
    return errs


def check_prometheus_rule(doc: Doc) -> list[str]:
    r = ref(doc)
    groups = _get(doc, "spec", "groups")
    if not isinstance(groups, list) or not groups:
        return [f"{r}: spec.groups must be a non-empty list"]
    errs: list[str] = []
    for gi, group in enumerate(groups):
        rules = _get(group, "rules")
        if not isinstance(rules, list) or not rules:
            errs.append(f"{r}: spec.groups[{gi}].rules must be a non-empty list")
            continue
        for ri, rule in enumerate(rules):
            where = f"{r}: spec.groups[{gi}].rules[{ri}]"
            if not isinstance(rule, Mapping) or bool(rule.get("alert")) == bool(rule.get("record")):
                errs.append(f"{where} needs exactly one of alert / record")
    return errs


_CR_CHECKS = {
    "Kafka": check_kafka,
    "KafkaNodePool": check_node_pool,
    "KafkaTopic": check_topic,
    "KafkaUser": check_kafka_user,
    "ServiceMonitor": check_service_monitor,
    "PodMonitor": check_service_monitor,
    "PrometheusRule": check_prometheus_rule,
}


def check_custom_resources(docs: Sequence[Doc]) -> list[str]:
    """Required fields of each custom resource plus the cross-resource rules."""
    errs: list[str] = []
    for doc in docs:
        if is_custom(doc):
            errs.extend(_CR_CHECKS[str(doc["kind"])](doc))
    kafkas = {_get(d, "metadata", "name") for d in docs if _kind(d, STRIMZI, "Kafka")}
    pools = [d for d in docs if _kind(d, STRIMZI, "KafkaNodePool")]
    for cluster in sorted(str(k) for k in kafkas):
        mine = [p for p in pools if _get(p, "metadata", "labels", "strimzi.io/cluster") == cluster]
        roles = {role for p in mine for role in (_get(p, "spec", "roles") or [])}
        if not roles >= _NODE_ROLES:
            errs.append(f"Kafka/{cluster}: node pools must provide controller and broker roles")
        brokers = sum(
            int(_get(p, "spec", "replicas") or 0)
            for p in mine
            if "broker" in (_get(p, "spec", "roles") or [])
        )
        for topic in docs:
            if not _kind(topic, STRIMZI, "KafkaTopic"):
                continue
            if _get(topic, "metadata", "labels", "strimzi.io/cluster") != cluster:
                continue
            replicas = _get(topic, "spec", "replicas")
            if isinstance(replicas, int) and replicas > brokers:
                errs.append(f"{ref(topic)}: replicas {replicas} > {brokers} broker(s)")
    for doc in docs:
        if any(_kind(doc, STRIMZI, k) for k in ("KafkaTopic", "KafkaNodePool", "KafkaUser")):
            cluster = _get(doc, "metadata", "labels", "strimzi.io/cluster")
            if cluster and cluster not in kafkas:
                errs.append(f"{ref(doc)}: strimzi.io/cluster={cluster} names no Kafka here")
    names = {topic_name(d) for d in docs if _kind(d, STRIMZI, "KafkaTopic")}
    if kafkas:
        for missing in sorted(set(REQUIRED_TOPICS) - names):
            errs.append(f"KafkaTopic for {missing} is missing")
    return errs


def topic_name(doc: Doc) -> str:
    return str(_get(doc, "spec", "topicName") or _get(doc, "metadata", "name"))


def _kind(doc: Doc, group: str, kind: str) -> bool:
    return doc.get("kind") == kind and group_of(doc) == group


# --------------------------------------------------------------------------
# project invariants
# --------------------------------------------------------------------------


def _find(docs: Iterable[Doc], kind: str, name: str) -> Doc | None:
    for doc in docs:
        if doc.get("kind") == kind and _get(doc, "metadata", "name") == name:
            return doc
    return None


def _has_cpu_and_memory(resources: Any, key: str) -> bool:
    section = _get(resources, key) or {}
    return bool(section.get("cpu")) and bool(section.get("memory"))


def check_grpc_service(docs: Sequence[Doc], name: str) -> list[str]:
    """One of the three gRPC services: everything the issue asks of its Deployment."""
    dep = _find(docs, "Deployment", name)
    if dep is None:
        return [f"Deployment/{name} is missing"]
    r = ref(dep)
    errs: list[str] = []
    pod = _get(dep, "spec", "template", "spec") or {}
    sa = pod.get("serviceAccountName")
    if not sa or sa == "default":
        errs.append(f"{r}: needs its own serviceAccountName")
    elif _find(docs, "ServiceAccount", sa) is None:
        errs.append(f"{r}: ServiceAccount/{sa} is not rendered")
    grace = pod.get("terminationGracePeriodSeconds")
    if not isinstance(grace, int) or grace <= DRAIN_SECONDS:
        errs.append(
            f"{r}: terminationGracePeriodSeconds ({grace}) must exceed the {DRAIN_SECONDS} s drain"
        )
    if _get(pod, "securityContext", "runAsNonRoot") is not True:
        errs.append(f"{r}: pod securityContext.runAsNonRoot must be true")
    containers = pod.get("containers") or []
    main = next((c for c in containers if c.get("name") == name), None)
    if main is None:
        return [*errs, f"{r}: no container named {name}"]
    ports = {p.get("name"): p.get("containerPort") for p in main.get("ports") or []}
    if "grpc" not in ports:
        errs.append(f"{r}: container port named 'grpc' is required")
    for probe in ("readinessProbe", "livenessProbe"):
        grpc = _get(main, probe, "grpc")
        if not isinstance(grpc, Mapping):
            errs.append(f"{r}: {probe} must be a native grpc probe")
        elif grpc.get("port") != ports.get("grpc"):
            errs.append(f"{r}: {probe}.grpc.port must be the grpc container port")
    for key in ("requests", "limits"):
        if not _has_cpu_and_memory(main.get("resources"), key):
            errs.append(f"{r}: resources.{key} needs cpu and memory")
    sc = main.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        errs.append(f"{r}: readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        errs.append(f"{r}: allowPrivilegeEscalation must be false")
    if "ALL" not in (_get(sc, "capabilities", "drop") or []):
        errs.append(f"{r}: capabilities.drop must contain ALL")
    svc = _find(docs, "Service", name)
    if svc is None or "grpc" not in {p.get("name") for p in _get(svc, "spec", "ports") or []}:
        errs.append(f"Service/{name}: must exist with a port named grpc")
    return errs


#: The workloads that log in to Redis or Kafka, and the service (one Redis ACL user,
#: one Kafka user) each runs as: the two sentiment Deployments are one service.
CREDENTIAL_OWNERS = {
    "Deployment/events": "events",
    "Deployment/recommender": "recommender",
    "Deployment/sentiment": "sentiment",
    "Deployment/sentiment-consumer": "sentiment",
    "CronJob/trainer": "trainer",
    # The Spark training job (components/spark-training) is the same trainer on another engine.
    "CronJob/trainer-spark": "trainer",
}
#: Variables that carry a login: each must come from a Secret of its service's own.
CREDENTIAL_VARS = ("REDIS_USERNAME", "REDIS_PASSWORD", "KAFKA_SASL_PASSWORD")


def pod_spec(doc: Doc) -> Mapping[str, Any]:
    if doc.get("kind") == "CronJob":
        return _get(doc, "spec", "jobTemplate", "spec", "template", "spec") or {}
    return _get(doc, "spec", "template", "spec") or {}


def secret_refs(doc: Doc) -> list[tuple[str, str, str]]:
    """(variable, Secret, key) of every secretKeyRef in the workload's containers."""
    pod = pod_spec(doc)
    out: list[tuple[str, str, str]] = []
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        for env in container.get("env") or []:
            sref = _get(env, "valueFrom", "secretKeyRef")
            if isinstance(sref, Mapping):
                out.append((str(env.get("name")), str(sref.get("name")), str(sref.get("key"))))
    return out


def volume_secrets(doc: Doc) -> dict[str, list[str]]:
    """Volume name -> the Secrets it is made of (a ``secret`` volume, or a ``projected``
    one's ``secret`` sources); volumes with no Secret are left out."""
    out: dict[str, list[str]] = {}
    for volume in pod_spec(doc).get("volumes") or []:
        names = []
        if isinstance(volume.get("secret"), Mapping):
            names.append(str(volume["secret"].get("secretName")))
        for source in _get(volume, "projected", "sources") or []:
            if isinstance(source.get("secret"), Mapping):
                names.append(str(source["secret"].get("name")))
        if names:
            out[str(volume.get("name"))] = names
    return out


#: The Deployments that serve a gRPC API to clients: each requires credentials.
API_WORKLOADS = ("Deployment/recommender", "Deployment/sentiment")


def _secrets_only(volume: Mapping[str, Any]) -> bool:
    """A ``secret`` volume, or a ``projected`` one whose every source is a Secret."""
    if isinstance(volume.get("secret"), Mapping):
        return True
    sources = _get(volume, "projected", "sources") or []
    return bool(sources) and all(isinstance(s.get("secret"), Mapping) for s in sources)


def check_api_auth(docs: Sequence[Doc]) -> list[str]:
    """Each API Deployment sets ``AUTH_MODE=required`` and reads ``AUTH_CREDENTIALS_FILE``
    from a volume made only of Secrets (one per client; docs/operations.md, "API
    authentication"), so no overlay serves an API unauthenticated by omission."""
    errs: list[str] = []
    for doc in docs:
        r = ref(doc)
        if r not in API_WORKLOADS:
            continue
        volumes = {str(v.get("name")): v for v in pod_spec(doc).get("volumes") or []}
        for container in pod_spec(doc).get("containers") or []:
            env = {e.get("name"): e.get("value") for e in container.get("env") or []}
            if env.get("AUTH_MODE") != "required":
                errs.append(f"{r}: AUTH_MODE must be 'required' (the API serves clients)")
            path = str(env.get("AUTH_CREDENTIALS_FILE") or "").rstrip("/") + "/"
            mounts = [
                str(m.get("name"))
                for m in container.get("volumeMounts") or []
                if path.startswith(str(m.get("mountPath", "")).rstrip("/") + "/")
            ]
            if path == "/" or not mounts:
                errs.append(f"{r}: AUTH_CREDENTIALS_FILE must lie in a mounted volume")
            elif not _secrets_only(volumes.get(mounts[-1]) or {}):
                errs.append(f"{r}: the credentials volume {mounts[-1]!r} must be Secrets only")
    return errs


def check_credentials(docs: Sequence[Doc]) -> list[str]:
    """Least privilege: every service logs in with credentials of its own.

    Each workload that reaches Redis composes REDIS_URL from REDIS_USERNAME /
    REDIS_PASSWORD out of one Secret; a Kafka password comes from a Secret too; and no
    Secret (hence no key of one) is read by the workloads of two services.
    """
    errs: list[str] = []
    users: dict[str, set[str]] = {}
    for doc in docs:
        if doc.get("kind") not in ("Deployment", "StatefulSet", "CronJob", "Job"):
            continue
        r = ref(doc)
        owner = CREDENTIAL_OWNERS.get(r, r)
        refs = secret_refs(doc)
        for _var, secret, _key in refs:
            users.setdefault(secret, set()).add(owner)
        for secrets in volume_secrets(doc).values():
            for secret in secrets:
                users.setdefault(secret, set()).add(owner)
        by_var = {var: secret for var, secret, _key in refs}
        for container in pod_spec(doc).get("containers") or []:
            env = {e.get("name"): e for e in container.get("env") or []}
            for var in CREDENTIAL_VARS:
                if var in env and var not in by_var:
                    errs.append(f"{r}: {var} must come from a Secret (secretKeyRef)")
            url = str((env.get("REDIS_URL") or {}).get("value", ""))
            if "REDIS_URL" in env and "$(REDIS_USERNAME):$(REDIS_PASSWORD)@" not in url:
                errs.append(f"{r}: REDIS_URL must log in as $(REDIS_USERNAME):$(REDIS_PASSWORD)")
        redis = {by_var.get(v) for v in ("REDIS_USERNAME", "REDIS_PASSWORD") if v in by_var}
        if len(redis) > 1:
            errs.append(f"{r}: REDIS_USERNAME and REDIS_PASSWORD must come from one Secret")
    for secret, owners in sorted(users.items()):
        if len(owners) > 1:
            errs.append(f"Secret/{secret} is shared by {', '.join(sorted(owners))}: one each")
    return errs


def check_spark_trainer(docs: Sequence[Doc]) -> list[str]:
    """The Spark training job runs the Spark engine, and only one trainer publishes into the
    model store: with ``trainer-spark`` present, the single-pod ``trainer`` is suspended."""
    spark = _find(docs, "CronJob", "trainer-spark")
    if spark is None:
        return []
    errs: list[str] = []
    commands = [c.get("command") or [] for c in pod_spec(spark).get("containers") or []]
    if not any(cmd[:2] == ["recsys", "train"] and "spark" in cmd for cmd in commands):
        errs.append(f"{ref(spark)}: must run `recsys train --engine spark`")
    trainer = _find(docs, "CronJob", "trainer")
    if trainer is not None and _get(trainer, "spec", "suspend") is not True:
        errs.append(
            f"{ref(trainer)}: must be suspended when CronJob/trainer-spark publishes into the "
            "same model store"
        )
    return errs


def check_project(docs: Sequence[Doc]) -> list[str]:
    errs: list[str] = check_credentials(docs) + check_api_auth(docs)
    for name in GRPC_SERVICES:
        errs.extend(check_grpc_service(docs, name))
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        if _find(docs, kind, "recommender") is None:
            errs.append(f"{kind}/recommender is missing")
    events = _find(docs, "Deployment", "events")
    clicks = next(
        (d for d in docs if _kind(d, STRIMZI, "KafkaTopic") and topic_name(d) == CLICKS_TOPIC),
        None,
    )
    if events is not None and clicks is not None:
        replicas = _get(events, "spec", "replicas")
        partitions = _get(clicks, "spec", "partitions")
        if isinstance(replicas, int) and isinstance(partitions, int) and replicas > partitions:
            errs.append(
                f"Deployment/events: {replicas} replicas > {partitions} partitions of "
                f"{CLICKS_TOPIC}; the extra consumers would sit idle"
            )
    for doc in docs:
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            errs.append(f"{ref(doc)}: secret values must not be committed; reference the Secret")
        if doc.get("kind") == "CronJob" and _get(doc, "metadata", "name") == "trainer":
            pod = _get(doc, "spec", "jobTemplate", "spec", "template", "spec") or {}
            commands = [c.get("command") or [] for c in pod.get("containers") or []]
            if not any(cmd[:2] == ["recsys", "train"] for cmd in commands):
                errs.append(f"{ref(doc)}: must run `recsys train`")
    if _find(docs, "CronJob", "trainer") is None:
        errs.append("CronJob/trainer is missing")
    errs.extend(check_spark_trainer(docs))
    if _find(docs, "Deployment", "tfserving") is None:
        errs.append("Deployment/tfserving is missing")
    return errs
