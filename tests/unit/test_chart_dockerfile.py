"""What can be checked of the image without a Docker engine: pinned bases, a multi-stage build
whose final stage holds only the installed package, the `agentmeter` entry point, a non-root user
the chart agrees with."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field

import pytest
import yaml

from tests.support.chart_render import CHART_DIR, REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
PINNED = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*@sha256:[0-9a-f]{64}$")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def parse(text: str) -> list[Stage]:
    """Stages with ARG defaults (declared before the first FROM) substituted into FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages and "=" in rest:
            arg, _, default = rest.partition("=")
            args[arg.strip()] = default.strip().strip('"')
        elif keyword == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], parts[0])
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image=image, name=alias))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def test_multi_stage_with_every_base_image_pinned(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert PINNED.match(stage.image), f"not pinned by version and digest: {stage.image}"


def test_entry_point_is_the_agentmeter_script(stages: list[Stage]) -> None:
    (entrypoint,) = stages[-1].all("ENTRYPOINT")
    command = json.loads(entrypoint)  # exec form: signals reach agentmeter, not a shell
    assert command[0].rsplit("/", 1)[-1] == "agentmeter"
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["scripts"]
    assert "agentmeter" in scripts
    env = " ".join(stages[-1].all("ENV"))
    assert f"PATH={command[0].rsplit('/', 1)[0]}:" in env


def test_final_user_is_not_root_and_matches_the_chart(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric UID lets Kubernetes verify runAsNonRoot"
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)


def test_final_stage_holds_only_the_installed_package(stages: list[Stage]) -> None:
    build_names = {stage.name for stage in stages[:-1]}
    copies = stages[-1].all("COPY") + stages[-1].all("ADD")
    assert copies
    for copy in copies:
        source = re.match(r"--from=(\S+)", copy)
        assert source and source[1] in build_names, f"copies from the build context: {copy}"
    installs = " ".join(stages[0].all("RUN"))
    assert "pip install" in installs
    assert " -e " not in installs and "--editable" not in installs


def test_dockerignore_keeps_tests_and_local_state_out() -> None:
    lines = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "**"  # everything is excluded unless re-included below
    reincluded = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert reincluded <= {"pyproject.toml", "README.md", "ledger", "limiter", "exporter",
                          "dashboards", "coder", "agentmeter"}
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in packages} <= reincluded


def test_parser_sees_through_args_and_continuations() -> None:
    stages = parse('ARG BASE=python:3.11.13-slim@sha256:' + "a" * 64 + '\n'
                   'FROM ${BASE} AS build\nRUN a \\\n    && b\nFROM $BASE\nUSER 1:2\n')
    assert [s.name for s in stages] == ["build", None]
    assert stages[0].all("RUN") == ["a && b"]
    assert stages[1].image.endswith("a" * 64)
