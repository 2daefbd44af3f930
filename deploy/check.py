"""Render, validate and scan every deployment combination; exit non-zero on any failure.

``python -m deploy.check`` (what ``make deploy-check`` and CI run):

1. installs the pinned tools (``deploy/tools-requirements.txt``: kubectl with its
   built-in kustomize, kubernetes-validate with offline schemas, checkov) into a
   private venv under ``~/.cache/recsys/tools`` (``$RECSYS_TOOLS_DIR``), once,
   then re-runs itself with that venv's interpreter;
2. renders each overlay in ``deploy/k8s/overlays`` with every subset of the
   components in ``deploy/k8s/components`` (``kubectl kustomize``);
3. validates each rendered core resource against the Kubernetes JSON schema of
   ``--k8s-version`` (strict: unknown fields are errors); custom resources, which
   no offline schema covers, go through the required-field checks of
   ``deploy/rules.py``, as do the project invariants (probes, grace, replicas);
4. runs checkov (offline) over all renders and the Dockerfiles; a check may only
   be skipped in place, next to the resource, with a written reason.

Prints a summary and ends with one JSON line. ``--k8s-root`` / ``--docker-dir``
point it at another tree: the tests feed it deliberately broken manifests.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_K8S_ROOT = REPO / "deploy" / "k8s"
DEFAULT_DOCKER_DIR = REPO / "deploy" / "docker"
REQUIREMENTS = REPO / "deploy" / "tools-requirements.txt"
CONSTRAINTS = REPO / "deploy" / "tools-constraints.txt"
# Oldest Kubernetes the manifests target: native gRPC probes and CronJob
# timeZone are GA from 1.27; 1.30 is the oldest release still commonly supported.
DEFAULT_K8S_VERSION = "1.30.0"
IN_TOOLS_ENV = "RECSYS_DEPLOY_CHECK_IN_TOOLS"
INSTALL_TIMEOUT_S = 900


def tools_dir() -> Path:
    raw = os.environ.get("RECSYS_TOOLS_DIR", "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "recsys" / "tools"


def tools_venv() -> Path:
    """The venv for this exact pin set: a changed pin gets a fresh venv, never a mix."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + CONSTRAINTS.read_bytes()).hexdigest()
    return tools_dir() / f"deploy-{digest[:12]}"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_tools() -> Path:
    """Install the pinned tools once (under a file lock, so parallel runs wait)."""
    venv = tools_venv()
    stamp = venv / ".installed"
    if stamp.exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(venv.parent / ".deploy-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        print(f"deploy-check: installing validation tools into {venv}", file=sys.stderr)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [
            str(venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]
        subprocess.run(
            [*pip, "-r", str(REQUIREMENTS), "-c", str(CONSTRAINTS)],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        stamp.write_text(REQUIREMENTS.read_text())
        print(f"deploy-check: tools ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return venv


def in_tools_env() -> bool:
    if os.environ.get(IN_TOOLS_ENV) != "1":
        return False
    try:
        import kubernetes_validate  # noqa: F401
        import yaml  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Combination:
    overlay: str
    components: tuple[str, ...]

    @property
    def label(self) -> str:
        return "+".join((self.overlay, *self.components))


def combinations(k8s_root: Path) -> list[Combination]:
    """Each overlay with every subset of the optional components (2^n per overlay)."""
    overlays = sorted(p.name for p in (k8s_root / "overlays").iterdir() if p.is_dir())
    comp_dir = k8s_root / "components"
    components = (
        sorted(p.name for p in comp_dir.iterdir() if p.is_dir()) if comp_dir.is_dir() else []
    )
    out = []
    for overlay in overlays:
        for n in range(len(components) + 1):
            for subset in itertools.combinations(components, n):
                out.append(Combination(overlay, subset))
    return out


def kubectl_path(venv: Path) -> str:
    override = os.environ.get("KUBECTL", "").strip()
    if override:
        return override
    candidate = venv / "bin" / "kubectl"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("kubectl")
    if not found:
        raise SystemExit("deploy-check: no kubectl (install deploy/tools-requirements.txt)")
    return found


def render(kubectl: str, k8s_root: Path, combo: Combination, workdir: Path) -> str:
    """``kubectl kustomize`` of a throwaway kustomization that layers the components."""
    wrapper = workdir / combo.label
    wrapper.mkdir(parents=True)
    rel = Path(os.path.relpath(k8s_root, wrapper))
    lines = [
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "resources:",
        f"  - {rel / 'overlays' / combo.overlay}",
    ]
    if combo.components:
        lines.append("components:")
        lines.extend(f"  - {rel / 'components' / c}" for c in combo.components)
    (wrapper / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [kubectl, "kustomize", str(wrapper)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip() or f"kubectl exited {proc.returncode}")
    return proc.stdout


class RenderError(Exception):
    pass


# --------------------------------------------------------------------------
# validation (runs inside the tools venv)
# --------------------------------------------------------------------------


@dataclass
class Report:
    combinations: int = 0
    rendered: int = 0
    resources: int = 0
    render_errors: list[str] = field(default_factory=list)
    schema_errors: list[str] = field(default_factory=list)
    cr_errors: list[str] = field(default_factory=list)
    project_errors: list[str] = field(default_factory=list)
    policy_failed: list[str] = field(default_factory=list)
    policy_passed: int = 0
    policy_skipped: int = 0
    scanner_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.render_errors
            or self.schema_errors
            or self.cr_errors
            or self.project_errors
            or self.policy_failed
            or self.scanner_errors
            or self.rendered != self.combinations
        )

    def summary(self) -> dict[str, Any]:
        return {
            "combinations": self.combinations,
            "rendered": self.rendered,
            "resources": self.resources,
            "render_errors": len(self.render_errors),
            "schema_errors": len(self.schema_errors),
            "cr_errors": len(self.cr_errors),
            "project_errors": len(self.project_errors),
            "policy_failed": len(self.policy_failed),
            "policy_passed": self.policy_passed,
            "policy_skipped": self.policy_skipped,
            "scanner_errors": len(self.scanner_errors),
            "ok": self.ok,
        }


def validate_schemas(docs: Sequence[dict[str, Any]], version: str, label: str) -> list[str]:
    """Strict JSON-schema validation of every core resource; unknown kinds are errors."""
    import kubernetes_validate

    from deploy import rules

    errors: list[str] = []
    for doc in docs:
        if rules.is_custom(doc):
            continue  # covered by rules.check_custom_resources
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(
                f"[{label}] {rules.ref(doc)} ({doc.get('apiVersion')}): no schema for "
                f"Kubernetes {version} and no required-field check in deploy/rules.py"
            )
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in getattr(exc, "path", []) or [])
            message = getattr(exc, "message", str(exc))
            errors.append(f"[{label}] {rules.ref(doc)}: {path}: {message}")
        except Exception as exc:  # a malformed document must fail the run, not crash it
            errors.append(f"[{label}] {rules.ref(doc)}: {type(exc).__name__}: {exc}")
    return errors


def run_checkov(scan_dir: Path, frameworks: Sequence[str]) -> dict[str, Any]:
    checkov = Path(sys.executable).parent / "checkov"
    cmd = [
        str(checkov if checkov.exists() else "checkov"),
        "--directory",
        str(scan_dir),
        "--framework",
        *frameworks,
        "--skip-download",  # offline: no policy metadata from the network
        "--compact",
        "--quiet",
        "--output",
        "json",
    ]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"checkov exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"checkov printed no JSON: {proc.stdout[:500]!r}") from exc
    reports = data if isinstance(data, list) else [data]
    out: dict[str, Any] = {"passed": 0, "skipped": 0, "failed": [], "parsing_errors": 0}
    for rep in reports:
        summary = rep.get("summary", {})
        out["passed"] += int(summary.get("passed", 0))
        out["skipped"] += int(summary.get("skipped", 0))
        out["parsing_errors"] += int(summary.get("parsing_errors", 0))
        for failed in rep.get("results", {}).get("failed_checks", []):
            out["failed"].append(
                f"{failed.get('check_id')} {failed.get('resource')} "
                f"({failed.get('file_path')}): {failed.get('check_name')}"
            )
    return out


def run_checks(
    k8s_root: Path, docker_dir: Path | None, version: str, out_dir: Path, scan: bool
) -> Report:
    import yaml

    from deploy import rules

    report = Report()
    combos = combinations(k8s_root)
    report.combinations = len(combos)
    kubectl = kubectl_path(Path(sys.executable).parent.parent)
    scan_dir = out_dir / "scan"
    (scan_dir / "k8s").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deploy-check-") as tmp:
        for combo in combos:
            try:
                text = render(kubectl, k8s_root, combo, Path(tmp))
            except (RenderError, subprocess.TimeoutExpired) as exc:
                report.render_errors.append(f"[{combo.label}] {exc}")
                print(f"  RENDER FAILED {combo.label}: {exc}")
                continue
            report.rendered += 1
            (scan_dir / "k8s" / f"{combo.label}.yaml").write_text(text)
            try:
                docs = [d for d in yaml.safe_load_all(text) if d]
            except yaml.YAMLError as exc:
                report.render_errors.append(f"[{combo.label}] unparsable output: {exc}")
                continue
            bad = [d for d in docs if not isinstance(d, dict)]
            if bad:
                report.render_errors.append(f"[{combo.label}] non-mapping document(s)")
                continue
            report.resources += len(docs)
            schema = validate_schemas(docs, version, combo.label)
            crs = [f"[{combo.label}] {e}" for e in rules.check_custom_resources(docs)]
            project = [f"[{combo.label}] {e}" for e in rules.check_project(docs)]
            report.schema_errors += schema
            report.cr_errors += crs
            report.project_errors += project
            status = "ok" if not (schema or crs or project) else "FAILED"
            print(
                f"  {combo.label:<40} {len(docs):>3} resources  schema {len(schema)}  "
                f"custom-resources {len(crs)}  project {len(project)}  {status}"
            )
    if scan:
        frameworks = ["kubernetes"]
        if docker_dir is not None and docker_dir.is_dir():
            dockerfiles = sorted(docker_dir.glob("*Dockerfile"))
            if dockerfiles:
                (scan_dir / "docker").mkdir(exist_ok=True)
                for f in dockerfiles:
                    shutil.copy(f, scan_dir / "docker" / f.name)
                frameworks.append("dockerfile")
        try:
            result = run_checkov(scan_dir, frameworks)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            report.scanner_errors.append(str(exc))
        else:
            report.policy_failed = result["failed"]
            report.policy_passed = result["passed"]
            report.policy_skipped = result["skipped"]
            if result["parsing_errors"]:
                report.scanner_errors.append(f"checkov: {result['parsing_errors']} parsing errors")
    return report


def print_report(report: Report) -> None:
    sections = (
        ("render errors", report.render_errors),
        ("schema errors", report.schema_errors),
        ("custom-resource errors", report.cr_errors),
        ("project-invariant errors", report.project_errors),
        ("checkov failed checks", report.policy_failed),
        ("scanner errors", report.scanner_errors),
    )
    for title, items in sections:
        if items:
            print(f"{title} ({len(items)}):")
            for item in items[:200]:
                print(f"  - {item}")
    print(
        f"deploy-check: {report.rendered}/{report.combinations} combinations rendered, "
        f"{report.resources} resources; checkov {report.policy_passed} passed, "
        f"{len(report.policy_failed)} failed, {report.policy_skipped} skipped in place; "
        f"{'OK' if report.ok else 'FAILED'}"
    )
    print(json.dumps(report.summary(), sort_keys=True))


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deploy.check", description=__doc__.split("\n")[0])
    p.add_argument(
        "--k8s-root",
        type=Path,
        default=DEFAULT_K8S_ROOT,
        help="kustomize tree with overlays/ and components/ (default: deploy/k8s)",
    )
    p.add_argument(
        "--docker-dir",
        type=Path,
        default=DEFAULT_DOCKER_DIR,
        help="directory of *.Dockerfile to scan (default: deploy/docker)",
    )
    p.add_argument(
        "--k8s-version",
        default=DEFAULT_K8S_VERSION,
        help=f"Kubernetes schema version (default: {DEFAULT_K8S_VERSION})",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the renders here (default: a temporary directory)",
    )
    p.add_argument("--no-scan", action="store_true", help="skip checkov (render + validate only)")
    return p.parse_args(argv)


@contextlib.contextmanager
def _out_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="deploy-out-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(args_list)
    if not in_tools_env():
        if os.environ.get(IN_TOOLS_ENV) == "1":
            # Already the tools venv's own run, yet its packages do not import (an install
            # that failed or another run replacing it): starting it again would recurse
            # without end, one waiting process per level.
            print(f"deploy-check: {sys.executable} lacks the validation tools; remove "
                  f"{tools_venv()} and run again", file=sys.stderr)  # fmt: skip
            return 2
        venv = ensure_tools()
        env = {**os.environ, IN_TOOLS_ENV: "1", "PYTHONPATH": str(REPO)}
        child = [
            "--k8s-root",
            str(args.k8s_root.resolve()),
            "--docker-dir",
            str(args.docker_dir.resolve()),
            "--k8s-version",
            args.k8s_version,
        ]
        if args.out is not None:
            child += ["--out", str(args.out.resolve())]
        if args.no_scan:
            child.append("--no-scan")
        proc = subprocess.run(
            [str(venv_python(venv)), "-m", "deploy.check", *child], cwd=REPO, env=env
        )
        return proc.returncode
    started = time.monotonic()
    print(f"deploy-check: {args.k8s_root} against Kubernetes {args.k8s_version} schemas")
    with _out_dir(args.out) as out:
        report = run_checks(
            args.k8s_root.resolve(),
            args.docker_dir.resolve() if args.docker_dir else None,
            args.k8s_version,
            out,
            scan=not args.no_scan,
        )
    print(f"deploy-check: {time.monotonic() - started:.1f} s")
    print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
