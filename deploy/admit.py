"""Admit every rendered overlay in a real Kubernetes API server; exit non-zero on any rejection.

``python -m deploy.admit`` (what ``make admit`` and CI run when deploy/ changes):

1. builds ``kube-apiserver`` and ``kubectl`` from the ``k8s.io/kubernetes`` Go module at
   :data:`K8S_VERSION` (its zip has no ``staging/``: the staging ``replace`` directives
   become requirements of the matching published ``k8s.io/*`` versions), once, under
   ``~/.cache/recsys/admit`` (``$RECSYS_ADMIT_DIR``);
2. generates the custom resource definitions the manifests use from the operators' own
   published artifacts, once: Strimzi's ``crd-generator`` (Maven Central) over Strimzi's
   ``api`` jar with the arguments of Strimzi's own build, and ``controller-gen`` over the
   Prometheus operator's API module with the operator's own ``crd:crdVersions=v1``;
3. starts Debian's ``etcd`` and the API server on loopback (a self-signed serving
   certificate, a static token for kubectl), installs the CRDs;
4. for every overlay with every subset of the components (deploy/check.py's renders):
   server-side applies every object with ``--dry-run=server --validate=strict`` (unknown
   fields are errors), and dry-run creates a Pod from every pod template in a namespace that
   enforces PodSecurity ``restricted``;
5. negative controls, each of which the server must reject: a pod template with its
   securityContext stripped, an unknown field in a Deployment, a wrong-typed field and an
   unknown field in custom resources.

A missing tool is an error naming its package, never a skip. Ends with one JSON line:
``{"renders", "objects", "rejected", "pod_templates", "psa_violations", "negative_controls",
"negative_controls_rejected"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy import check

REPO = Path(__file__).resolve().parent.parent
K8S_ROOT = REPO / "deploy" / "k8s"
#: The API server the manifests are admitted by: the oldest release they target
#: (deploy/check.py validates offline against 1.30 as well), its last patch release.
K8S_VERSION = "1.30.14"
#: Strimzi 0.47 (the manifests say 0.45-0.47): its ``api`` jar, and the newest crd-generator
#: on Maven Central that runs on Java 17 (0.47 builds its generator in-tree without publishing
#: it; the separately released 1.x needs Java 21, which Debian bookworm does not ship).
STRIMZI_VERSION = "0.47.0"
STRIMZI_CRD_GENERATOR = "0.45.0"
#: The Prometheus operator whose monitoring.coreos.com/v1 CRDs the monitoring component uses.
PROMETHEUS_OPERATOR = "v0.85.0"
CONTROLLER_GEN = "v0.18.0"
#: Strimzi's own generator arguments (api/pom.xml of the release), per group of kinds.
STRIMZI_KINDS = (
    (
        "v1beta2",
        (
            "io.strimzi.api.kafka.model.kafka.Kafka",
            "io.strimzi.api.kafka.model.nodepool.KafkaNodePool",
            "io.strimzi.api.kafka.model.podset.StrimziPodSet",
        ),
    ),
    (
        "v1alpha1,v1beta1,v1beta2",
        (
            "io.strimzi.api.kafka.model.topic.KafkaTopic",
            "io.strimzi.api.kafka.model.user.KafkaUser",
        ),
    ),
)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet")
PSA_NAMESPACE = "recsys-admit-restricted"
GO_BUILD_TIMEOUT_S = 3 * 3600
TOOLS_PACKAGES = {
    "go": "golang (>= 1.22)",
    "etcd": "etcd-server",
    "java": "default-jre-headless",
    "mvn": "maven",
    "openssl": "openssl",
}


def log(message: str) -> None:
    print(f"admit: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    raw = os.environ.get("RECSYS_ADMIT_DIR", "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "recsys" / "admit"


def require_tools(names: Sequence[str]) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise SystemExit(
            "admit: missing "
            + ", ".join(f"{n} (Debian package {TOOLS_PACKAGES.get(n, n)})" for n in missing)
        )


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    input_text: str | None = None,
    check_rc: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        input=input_text,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if check_rc and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return proc


def go_env() -> dict[str, str]:
    """Builds share the machine: at most two packages compiled at once, and niced."""
    env = dict(os.environ)
    env["GOFLAGS"] = "-mod=mod -p=2"
    return env


def module_dir(module: str, version: str) -> Path:
    out = run(["go", "mod", "download", "-json", f"{module}@{version}"], timeout=1800).stdout
    return Path(json.loads(out)["Dir"])


# --------------------------------------------------------------------------
# kube-apiserver and kubectl from the k8s.io/kubernetes module
# --------------------------------------------------------------------------


def unstage_go_mod(text: str, version: str) -> str:
    """The module's go.mod without its ``./staging`` replaces: each staged ``k8s.io/x v0.0.0``
    requirement becomes the published ``k8s.io/x v0.<minor>.<patch>`` of the same release."""
    staged = set(re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", text, flags=re.M))
    if not staged:
        raise ValueError("no ./staging replace directives: not a k8s.io/kubernetes go.mod?")
    published = "v0." + version.split(".", 1)[1]
    text = re.sub(r"^\s*k8s\.io/[\w.-]+ => \./staging/.*\n", "", text, flags=re.M)
    for module in sorted(staged):
        text = re.sub(
            rf"^(\s*){re.escape(module)} v0\.0\.0\b",
            rf"\g<1>{module} {published}",
            text,
            flags=re.M,
        )
    return text


def kubernetes_bin() -> Path:
    return cache_dir() / f"kubernetes-v{K8S_VERSION}" / "bin"


def ensure_kubernetes() -> Path:
    """kube-apiserver and kubectl of :data:`K8S_VERSION`, built once (about half an hour on
    two shared cores, niced)."""
    bindir = kubernetes_bin()
    if all((bindir / b).exists() for b in ("kube-apiserver", "kubectl")):
        return bindir
    require_tools(["go"])
    root = bindir.parent
    src = root / "src"
    shutil.rmtree(src, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(module_dir("k8s.io/kubernetes", f"v{K8S_VERSION}"), src)
    for path in src.rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    src.chmod(0o755)
    for name in ("go.work", "go.work.sum"):
        (src / name).unlink(missing_ok=True)
    shutil.rmtree(src / "vendor", ignore_errors=True)
    (src / "go.mod").write_text(unstage_go_mod((src / "go.mod").read_text(), K8S_VERSION))
    log(f"building kube-apiserver and kubectl v{K8S_VERSION} (once; long)")
    started = time.monotonic()
    ldflags = " ".join(
        f"-X {pkg}.{k}={v}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for k, v in (("gitVersion", f"v{K8S_VERSION}"), ("gitMajor", "1"), ("gitMinor", "30"))
    )
    run(
        [
            "nice",
            "-n",
            "10",
            "go",
            "build",
            # No in-tree cloud providers (upstream's build tag for them): they add Google's
            # compute API clients, the slowest packages to compile, and admit nothing here.
            "-tags",
            "providerless",
            "-trimpath",
            "-ldflags",
            f"-s -w {ldflags}",
            "-o",
            str(bindir) + "/",
            "./cmd/kube-apiserver",
            "./cmd/kubectl",
        ],
        cwd=src,
        env=go_env(),
        timeout=GO_BUILD_TIMEOUT_S,
    )
    shutil.rmtree(src, ignore_errors=True)
    log(f"built in {time.monotonic() - started:.0f} s")
    return bindir


# --------------------------------------------------------------------------
# CRDs from the operators' own artifacts
# --------------------------------------------------------------------------


def crd_dir() -> Path:
    return (
        cache_dir()
        / f"crds-strimzi-{STRIMZI_VERSION}-cg{STRIMZI_CRD_GENERATOR}-prom-{PROMETHEUS_OPERATOR}"
    )


def strimzi_pom() -> str:
    deps = "".join(
        f"<dependency><groupId>io.strimzi</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for a, v in (("api", STRIMZI_VERSION), ("crd-generator", STRIMZI_CRD_GENERATOR))
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.recsys</groupId><artifactId>strimzi-crds</artifactId><version>1</version>"
        f"<dependencies>{deps}</dependencies></project>\n"
    )


def generate_strimzi(out: Path, work: Path) -> None:
    require_tools(["java", "mvn"])
    (work / "pom.xml").write_text(strimzi_pom())
    run(
        ["mvn", "-q", "-B", "dependency:build-classpath", "-Dmdep.outputFile=cp.txt"],
        cwd=work,
        timeout=1800,
    )
    classpath = (work / "cp.txt").read_text().strip()
    for versions, kinds in STRIMZI_KINDS:
        args = [
            "java",
            "-cp",
            classpath,
            "io.strimzi.crdgenerator.CrdGenerator",
            "--label",
            "app:strimzi",
            "--label",
            "strimzi.io/crd-install:true",
            "--target-kube",
            "1.16+",
            "--crd-api-version",
            "v1",
            "--api-versions",
            versions,
            "--storage-version",
            "v1beta2",
            "--yaml",
        ]
        args += [f"{k}={out / ('strimzi-' + k.rsplit('.', 1)[1].lower() + '.yaml')}" for k in kinds]
        run(args, timeout=600)


def generate_prometheus(out: Path, work: Path) -> None:
    require_tools(["go"])
    gobin = cache_dir() / f"controller-gen-{CONTROLLER_GEN}"
    controller_gen = gobin / "controller-gen"
    if not controller_gen.exists():
        env = go_env()
        env["GOBIN"] = str(gobin)
        run(
            [
                "nice",
                "-n",
                "10",
                "go",
                "install",
                f"sigs.k8s.io/controller-tools/cmd/controller-gen@{CONTROLLER_GEN}",
            ],
            env=env,
            timeout=GO_BUILD_TIMEOUT_S,
        )
    api = work / "monitoring"
    shutil.copytree(
        module_dir(
            "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring",
            PROMETHEUS_OPERATOR,
        ),
        api,
    )
    for path in [api, *api.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    gen = work / "prometheus"
    run(
        [
            str(controller_gen),
            "crd:crdVersions=v1",
            "paths=./v1/.",
            f"output:crd:dir={gen}",
        ],
        cwd=api,
        env=go_env(),
        timeout=1800,
    )
    for path in gen.glob("*.yaml"):
        shutil.copy(path, out / f"prometheus-{path.name}")


def ensure_crds() -> Path:
    out = crd_dir()
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        (Path(tmp) / "strimzi").mkdir()
        generate_strimzi(out, Path(tmp) / "strimzi")
        generate_prometheus(out, Path(tmp))
    (out / ".complete").write_text("")
    log(
        f"CRDs generated in {time.monotonic() - started:.0f} s: "
        f"{sorted(p.name for p in out.glob('*.yaml'))}"
    )
    return out


# --------------------------------------------------------------------------
# a throwaway API server on loopback
# --------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cluster:
    server: str
    token: str
    kubectl: str
    work: Path

    def kubectl_argv(self, *args: str) -> list[str]:
        return [
            self.kubectl,
            f"--server={self.server}",
            f"--token={self.token}",
            "--insecure-skip-tls-verify=true",
            *args,
        ]

    def kubectl_run(
        self, *args: str, input_text: str | None = None, check_rc: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(self.kubectl_argv(*args), input_text=input_text, check_rc=check_rc, timeout=600)


def wait_ready(url: str, token: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode} before it was ready")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=3) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s")


@contextlib.contextmanager
def api_server(bindir: Path) -> Iterator[Cluster]:
    """etcd and kube-apiserver on loopback, in a temporary directory, stopped on exit."""
    require_tools(["etcd", "openssl"])
    with tempfile.TemporaryDirectory(prefix="recsys-admit-") as tmp:
        work = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
            etcd_log = open(work / "etcd.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(
                subprocess.Popen(
                    [
                        "etcd",
                        f"--data-dir={work / 'etcd'}",
                        f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                        f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                        f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                        f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                        "--unsafe-no-fsync",
                    ],
                    stdout=etcd_log,
                    stderr=subprocess.STDOUT,
                )
            )
            sa_key = work / "sa.key"
            run(["openssl", "genrsa", "-out", str(sa_key), "2048"])
            token = secrets.token_hex(24)
            (work / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
            api_log = open(work / "apiserver.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [
                        str(bindir / "kube-apiserver"),
                        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                        "--bind-address=127.0.0.1",
                        "--advertise-address=127.0.0.1",
                        f"--secure-port={api_port}",
                        f"--cert-dir={work / 'certs'}",
                        f"--token-auth-file={work / 'tokens.csv'}",
                        "--authorization-mode=RBAC",
                        f"--service-account-key-file={sa_key}",
                        f"--service-account-signing-key-file={sa_key}",
                        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                        "--service-cluster-ip-range=10.96.0.0/16",
                        # PodSecurity and ServiceAccount are on by default; nothing turned off.
                        "--enable-admission-plugins=PodSecurity",
                    ],
                    stdout=api_log,
                    stderr=subprocess.STDOUT,
                )
            )
            server = f"https://127.0.0.1:{api_port}"
            try:
                wait_ready(f"{server}/readyz", token, 180, procs[-1])
            except RuntimeError as exc:
                tail = (work / "apiserver.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"kube-apiserver: {exc}\n{tail}") from None
            log(f"kube-apiserver v{K8S_VERSION} ready at {server}")
            yield Cluster(server, token, str(bindir / "kubectl"), work)
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# --------------------------------------------------------------------------
# admission
# --------------------------------------------------------------------------


def to_yaml(docs: Sequence[Mapping[str, Any]]) -> str:
    """JSON is YAML: one document per object, no YAML library needed in this interpreter."""
    return "".join("---\n" + json.dumps(doc) + "\n" for doc in docs)


def parse_yaml(text: str) -> list[dict[str, Any]]:
    venv = check.ensure_tools()
    out = run(
        [
            str(check.venv_python(venv)),
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d],"
            " sys.stdout)",
        ],
        input_text=text,
    ).stdout
    docs: list[dict[str, Any]] = json.loads(out)
    return docs


def apply_dry_run(cluster: Cluster, docs: Sequence[Mapping[str, Any]]) -> tuple[int, list[str]]:
    """Server-side apply, dry run, strict field validation: (objects admitted, errors)."""
    proc = cluster.kubectl_run(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--field-manager=recsys-admit",
        "--force-conflicts",
        "-o",
        "name",
        "-f",
        "-",
        input_text=to_yaml(docs),
        check_rc=False,
    )
    admitted = [line for line in proc.stdout.splitlines() if line.strip()]
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode != 0 and not errors:
        errors = [f"kubectl exited {proc.returncode}"]
    return len(admitted), errors


def pod_templates(docs: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload's pod template."""
    out: list[tuple[str, dict[str, Any]]] = []
    for doc in docs:
        kind = doc.get("kind")
        if kind not in WORKLOAD_KINDS:
            continue
        spec = doc["spec"]
        if kind == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pod = copy.deepcopy(spec["template"]["spec"])
        name = doc["metadata"]["name"]
        # The StatefulSet controller adds a claim volume per volumeClaimTemplate to each pod.
        for claim in spec.get("volumeClaimTemplates") or [] if kind == "StatefulSet" else []:
            claim_name = claim["metadata"]["name"]
            pod.setdefault("volumes", []).append(
                {
                    "name": claim_name,
                    "persistentVolumeClaim": {"claimName": f"{claim_name}-{name}-0"},
                }
            )
        out.append((f"{kind}/{name}", pod))
    return out


def as_pod(label: str, spec: Mapping[str, Any], index: int) -> dict[str, Any]:
    name = re.sub(r"[^a-z0-9-]", "-", label.lower())[:50] + f"-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": PSA_NAMESPACE},
        "spec": spec,
    }


def prepare_psa_namespace(
    cluster: Cluster, templates: Sequence[tuple[str, Mapping[str, Any]]]
) -> None:
    """The namespace that enforces ``restricted`` (latest), with the pods' ServiceAccounts
    (the ServiceAccount admission plugin rejects a pod whose account does not exist)."""
    accounts = sorted({spec.get("serviceAccountName", "default") for _, spec in templates})
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": PSA_NAMESPACE,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }
    ]
    docs += [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": a, "namespace": PSA_NAMESPACE},
        }
        for a in accounts
        if a != "default"
    ]
    cluster.kubectl_run("apply", "--server-side", "-f", "-", input_text=to_yaml(docs))


def admit_pods(cluster: Cluster, templates: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Dry-run create a Pod per template in the restricted namespace: the errors."""
    pods = [as_pod(label, spec, i) for i, (label, spec) in enumerate(templates)]
    _admitted, errors = apply_dry_run(cluster, pods)
    return errors


@dataclass
class Report:
    renders: int = 0
    objects: int = 0
    rejected: int = 0
    pod_templates: int = 0
    psa_violations: int = 0
    negative_controls: int = 0
    negative_controls_rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "renders": self.renders,
            "objects": self.objects,
            "rejected": self.rejected,
            "pod_templates": self.pod_templates,
            "psa_violations": self.psa_violations,
            "negative_controls": self.negative_controls,
            "negative_controls_rejected": self.negative_controls_rejected,
        }

    @property
    def ok(self) -> bool:
        return (
            self.renders > 0
            and self.objects > 0
            and self.rejected == 0
            and self.psa_violations == 0
            and self.negative_controls > 0
            and self.negative_controls_rejected == self.negative_controls
            and not self.errors
        )


#: What deploy/rules.py used to approximate and the API server now checks from the generated
#: CRD schemas: each is also a negative control, so a schema that stopped checking it fails.
SCHEMA_CONTROLS: tuple[tuple[str, str, Callable[[dict[str, Any]], None]], ...] = (
    (
        "KafkaTopic partitions not an integer",
        "KafkaTopic",
        lambda d: _set(d, "spec.partitions", "twelve"),
    ),
    ("KafkaTopic partitions below 1", "KafkaTopic", lambda d: _set(d, "spec.partitions", 0)),
    ("Kafka unknown field", "Kafka", lambda d: _set(d, "spec.kafka.replicationFactor", 3)),
    (
        "Kafka listener port below 9092",
        "Kafka",
        lambda d: _set(d, "spec.kafka.listeners.0.port", 9091),
    ),
    (
        "Kafka listener name pattern",
        "Kafka",
        lambda d: _set(d, "spec.kafka.listeners.0.name", "Plain_Text"),
    ),
    (
        "Kafka listener type enum",
        "Kafka",
        lambda d: _set(d, "spec.kafka.listeners.0.type", "public"),
    ),
    ("Kafka listener without tls", "Kafka", lambda d: _drop(d, "spec.kafka.listeners.0.tls")),
    ("KafkaNodePool role enum", "KafkaNodePool", lambda d: _set(d, "spec.roles", ["leader"])),
    ("KafkaNodePool without storage", "KafkaNodePool", lambda d: _drop(d, "spec.storage")),
    ("KafkaNodePool negative replicas", "KafkaNodePool", lambda d: _set(d, "spec.replicas", -1)),
    (
        "KafkaUser authentication enum",
        "KafkaUser",
        lambda d: _set(d, "spec.authentication.type", "plain"),
    ),
    (
        "KafkaUser ACL resource enum",
        "KafkaUser",
        lambda d: _set(d, "spec.authorization.acls.0.resource.type", "queue"),
    ),
    ("ServiceMonitor without selector", "ServiceMonitor", lambda d: _drop(d, "spec.selector")),
    ("PodMonitor without selector", "PodMonitor", lambda d: _drop(d, "spec.selector")),
    (
        "PrometheusRule group without name",
        "PrometheusRule",
        lambda d: _drop(d, "spec.groups.0.name"),
    ),
    (
        "PrometheusRule rule without expr",
        "PrometheusRule",
        lambda d: _drop(d, "spec.groups.0.rules.0.expr"),
    ),
    (
        "PrometheusRule for not a duration",
        "PrometheusRule",
        lambda d: _set(d, "spec.groups.0.rules.0.for", 300),
    ),
)


def _walk(doc: Any, dotted: str) -> tuple[Any, str | int]:
    keys: list[str | int] = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    cur = doc
    for key in keys[:-1]:
        cur = cur[key]
    return cur, keys[-1]


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    parent, key = _walk(doc, dotted)
    parent[key] = value


def _drop(doc: dict[str, Any], dotted: str) -> None:
    parent, key = _walk(doc, dotted)
    del parent[key]


def negative_controls(docs: Sequence[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, "objects" | "pods", document) that the server must each reject; a kind the
    renders lack is an error (the control would silently vanish otherwise)."""
    controls: list[tuple[str, str, dict[str, Any]]] = []
    deployment = next(d for d in docs if d.get("kind") == "Deployment")
    stripped = copy.deepcopy(deployment["spec"]["template"]["spec"])
    stripped.pop("securityContext", None)
    for container in stripped.get("containers", []) + stripped.get("initContainers", []):
        container.pop("securityContext", None)
    controls.append(("stripped-securityContext", "pods", as_pod("negative-stripped", stripped, 0)))
    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    controls.append(("unknown-field-in-deployment", "objects", unknown))
    for name, kind, mutate in SCHEMA_CONTROLS:
        original = next((d for d in docs if d.get("kind") == kind), None)
        if original is None:
            raise LookupError(f"negative control {name!r}: no {kind} in any render")
        broken = copy.deepcopy(original)
        mutate(broken)
        controls.append((name, "objects", broken))
    return controls


def admit_all(cluster: Cluster, crds: Path, k8s_root: Path, report: Report) -> None:
    crd_docs = parse_yaml("\n---\n".join(p.read_text() for p in sorted(crds.glob("*.yaml"))))
    cluster.kubectl_run("apply", "--server-side", "-f", "-", input_text=to_yaml(crd_docs))
    cluster.kubectl_run("wait", "--for=condition=Established", "--timeout=120s", "crd", "--all")
    log(f"{len(crd_docs)} CRDs installed")
    venv = check.ensure_tools()
    render_kubectl = check.kubectl_path(venv)
    every_render: list[dict[str, Any]] = []
    templates: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for combo in check.combinations(k8s_root):
            docs = parse_yaml(check.render(render_kubectl, k8s_root, combo, Path(tmp)))
            report.renders += 1
            namespaces = [d for d in docs if d.get("kind") == "Namespace"]
            if namespaces:  # namespaced objects need theirs to exist, even in a dry run
                cluster.kubectl_run(
                    "apply", "--server-side", "-f", "-", input_text=to_yaml(namespaces)
                )
            admitted, errors = apply_dry_run(cluster, docs)
            report.objects += len(docs)
            report.rejected += len(docs) - admitted
            report.errors += [f"[{combo.label}] {e}" for e in errors]
            combo_templates = [
                (f"{combo.label}:{label}", spec) for label, spec in pod_templates(docs)
            ]
            templates += combo_templates
            every_render += docs
            log(
                f"{combo.label}: {admitted}/{len(docs)} admitted, "
                f"{len(combo_templates)} pod templates"
            )
    prepare_psa_namespace(cluster, templates)
    report.pod_templates = len(templates)
    pod_errors = admit_pods(cluster, templates)
    report.psa_violations = sum("PodSecurity" in e for e in pod_errors)
    report.errors += [f"[pods] {e}" for e in pod_errors]
    for name, target, doc in negative_controls(every_render):
        report.negative_controls += 1
        admitted, errors = apply_dry_run(cluster, [doc])
        if target == "pods":
            rejected = admitted == 0 and any("PodSecurity" in e for e in errors)
        else:
            rejected = admitted == 0 and bool(errors)
        if rejected:
            report.negative_controls_rejected += 1
            log(f"negative control {name}: rejected ({errors[0][:200]})")
        else:
            report.errors.append(f"negative control {name} was ADMITTED")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.admit", description=__doc__)
    parser.add_argument("--k8s-root", type=Path, default=K8S_ROOT, help="manifests to admit")
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="build the API server and generate the CRDs, then stop (warms the cache)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    require_tools(["go", "etcd", "java", "mvn", "openssl"])
    cache_dir().mkdir(parents=True, exist_ok=True)
    bindir = ensure_kubernetes()
    crds = ensure_crds()
    if args.prepare_only:
        print(
            json.dumps(
                {
                    "prepared": str(bindir.parent.name),
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
        )
        return 0
    report = Report()
    with api_server(bindir) as cluster:
        admit_all(cluster, crds, args.k8s_root.resolve(), report)
    for error in report.errors:
        log(error)
    log(f"{'OK' if report.ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    print(json.dumps(report.summary()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
