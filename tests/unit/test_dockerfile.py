"""The example application's Dockerfile (repository root), checked without building it.

No Docker engine runs the tests, so the Dockerfile is parsed and its invariants are
checked against the Kubernetes manifests and pyproject.toml: multi-stage with pinned
bases, a numeric non-root user equal to the pods' runAsUser, ``processhub node`` as the
command, the exposed ports equal to the node container's ports, and a .dockerignore that
sends exactly what the Dockerfile copies.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOYMENT = ROOT / "deploy/base/app/deployment.yaml"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: comments dropped, continuation lines joined.

    Raises:
        ValueError: an instruction before the first FROM (other than ARG), or a heredoc
            (not supported here, so the Dockerfile must not use one).
    """
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments (parser directives too) and blank lines, also inside a RUN
        if "<<" in stripped and re.search(r"<<-?\s*['\"]?[A-Z]+", stripped):
            raise ValueError(f"heredocs are not supported by this parser: {stripped}")
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    if pending:
        raise ValueError("the Dockerfile ends with a line continuation")
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]  # --platform=...
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"{keyword} before the first FROM")
        else:
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
FINAL = STAGES[-1]


def _exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            key, sep, value = word.partition("=")
            assert sep, f"use ENV key=value, not the legacy form: {instruction.args}"
            env[key] = value
    return env


def _node_container() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = yaml.safe_load(DEPLOYMENT.read_text(encoding="utf-8"))
    pod = deployment["spec"]["template"]["spec"]
    (node,) = (c for c in pod["containers"] if c["name"] == "node")
    return pod, node


def _copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from a stage)."""
    out = []
    for instruction in stage.all("COPY"):
        words = shlex.split(instruction.args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        out.append((paths[:-1], paths[-1]))
    return out


# -- the parser itself -----------------------------------------------------------------------


def test_parser_joins_continuations_and_splits_stages() -> None:
    stages = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nARG V=1\nFROM a:1.2.3 AS one\nRUN x \\\n  # note\n"
        "    && y\nFROM --platform=linux/amd64 b:4.5.6\nUSER 1\n"
    )
    assert [(s.image, s.name) for s in stages] == [("a:1.2.3", "one"), ("b:4.5.6", None)]
    assert stages[0].instructions == [Instruction("RUN", "x && y")]


def test_parser_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="before the first FROM"):
        parse_dockerfile("RUN x\nFROM a:1\n")
    with pytest.raises(ValueError, match="heredoc"):
        parse_dockerfile("FROM a:1\nRUN <<EOF\nx\nEOF\n")


# -- the Dockerfile ------------------------------------------------------------------------------


def test_multi_stage_and_the_runtime_uses_the_build_stage() -> None:
    assert len(STAGES) >= 2
    build_names = {s.name for s in STAGES[:-1]} - {None}
    uses = [
        name
        for instruction in FINAL.instructions
        for name in re.findall(r"(?:--from=|[,\s]from=)([A-Za-z0-9_.-]+)", instruction.args)
    ]
    assert uses and set(uses) <= build_names, uses
    assert FINAL.all("RUN") and not any("pip wheel" in i.args for i in FINAL.all("RUN"))


def test_bases_are_pinned_and_identical() -> None:
    stage_names = {s.name for s in STAGES}
    bases = [s.image for s in STAGES if s.image not in stage_names]
    for image in bases:
        pinned_digest = re.search(r"@sha256:[0-9a-f]{64}$", image)
        tag = image.split("@")[0].rpartition(":")[2]
        assert pinned_digest or re.match(r"\d+\.\d+\.\d+(-|$)", tag), f"{image} is not pinned"
        assert "latest" not in tag
    # Wheels built by one Python are installed by the other: same interpreter, same ABI.
    assert len(set(bases)) == 1, bases


def test_build_stage_copies_everything_the_wheel_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]}
    build = STAGES[0]
    copied = {src.rstrip("/") for sources, _ in _copies(build) for src in sources}
    assert needed <= copied, needed - copied


def test_runs_as_a_numeric_non_root_user_the_pods_expect() -> None:
    (user,) = FINAL.all("USER")[-1:]
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user.args)
    assert match, f"USER {user.args} must be numeric for runAsNonRoot"
    uid, gid = int(match.group(1)), match.group(2)
    assert uid != 0
    pod, _ = _node_container()
    assert pod["securityContext"]["runAsUser"] == uid
    assert gid is None or pod["securityContext"]["runAsGroup"] == int(gid)
    # Nothing after USER runs as root again.
    assert FINAL.instructions[-1].keyword in {"CMD", "ENTRYPOINT", "EXPOSE", "USER"}
    after = FINAL.instructions[FINAL.instructions.index(user) :]
    assert not [i for i in after if i.keyword in {"RUN", "COPY", "ADD"}]


def test_command_is_processhub_node() -> None:
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    (cmd,) = FINAL.all("CMD")
    assert _exec_form(entrypoint) == ["processhub"]
    assert _exec_form(cmd) == ["node"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert scripts["project"]["scripts"]["processhub"] == "hub.operate.cli:main"
    _, node = _node_container()
    assert "command" not in node  # the manifests rely on the ENTRYPOINT
    assert node["args"] == _exec_form(cmd)


def test_exposed_ports_are_the_node_container_ports() -> None:
    exposed = {int(p.split("/")[0]) for i in FINAL.all("EXPOSE") for p in i.args.split()}
    _, node = _node_container()
    assert exposed == {p["containerPort"] for p in node["ports"]}


def test_examples_are_importable_in_the_image() -> None:
    env = _env(FINAL)
    (workdir,) = FINAL.all("WORKDIR")[-1:]
    assert workdir.args in env["PYTHONPATH"].split(":")
    _, node = _node_container()
    apps = next(e["value"] for e in node["env"] if e["name"] == "PROCESSHUB_APPS")
    top_packages = {module.split(".")[0] for module in apps.split(",")}
    copied = {src.rstrip("/") for sources, _ in _copies(FINAL) for src in sources}
    assert top_packages <= copied
    assert all((ROOT / package / "__init__.py").is_file() for package in top_packages)


def test_runtime_writes_nothing_outside_tmp() -> None:
    """A read-only root filesystem: no bytecode written at run time, HOME on the /tmp volume."""
    env = _env(FINAL)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp"
    assert any("compileall" in i.args for i in FINAL.all("RUN"))  # compiled at build time
    _, node = _node_container()
    assert node["securityContext"]["readOnlyRootFilesystem"] is True
    assert [m["mountPath"] for m in node["volumeMounts"]] == ["/tmp"]


def test_no_remote_or_archive_adds() -> None:
    assert not [i for s in STAGES for i in s.all("ADD")], "use COPY (ADD fetches URLs, unpacks)"


# -- .dockerignore ---------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over a path."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"  # any number of whole directories, including none
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip("/")))
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def sent_to_docker(path: str) -> bool:
    """Whether the build context includes ``path``: the last rule matching it or one of its
    parent directories decides (BuildKit's MatchesOrParentMatches)."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negate, regex in _dockerignore():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = negate
    return included


def test_dockerignore_matcher() -> None:
    assert _pattern_regex("**/__pycache__").fullmatch("a/b/__pycache__")
    assert _pattern_regex("**/__pycache__").fullmatch("__pycache__")
    assert not _pattern_regex("*").fullmatch("a/b")
    assert _pattern_regex("*.py[cod]").fullmatch("x.pyc")


def test_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    for stage in STAGES:
        for sources, _ in _copies(stage):
            for source in sources:
                files = [source] if (ROOT / source).is_file() else []
                files += [
                    str(p.relative_to(ROOT))
                    for p in (ROOT / source).rglob("*.py")
                    if "__pycache__" not in p.parts
                ]
                assert files and all(sent_to_docker(f) for f in files), source
    for kept_out in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/unit/test_dockerfile.py",
        "deploy/base/kustomization.yaml",
        "hub/__pycache__/cli.cpython-311.pyc",
        "examples/tenants/__pycache__/app.cpython-311.pyc",
    ):
        assert not sent_to_docker(kept_out), kept_out
