"""The Dockerfile: the official Airflow image of the locked Airflow and Python, the locked
dependencies (docker/requirements.txt must be exactly `uv export` of uv.lock), and only
files that exist in the repo."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from typing import Any

from _compose import DOCKERFILE, REPO, env_of, interpolate

REQUIREMENTS = REPO / "docker" / "requirements.txt"
UV = REPO / ".tools" / "bin" / "uv"
EXPORT_SCRIPT = REPO / "scripts" / "export-requirements.sh"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {pkg["name"]: pkg["version"] for pkg in lock["package"] if "version" in pkg}


def pins() -> dict[str, str]:
    found = {}
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^ ;]+)", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_requirements_file_is_exactly_the_export_of_uv_lock() -> None:
    command = re.search(r"^\.tools/bin/uv (export .*?)(?: >|$)", EXPORT_SCRIPT.read_text(), re.M)
    assert command is not None
    assert UV.is_file(), "scripts/bootstrap.sh installs the pinned uv"
    exported = subprocess.run(
        [str(UV), *shlex.split(command.group(1))], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert REQUIREMENTS.read_text() == exported, "uv.lock changed: run scripts/export-requirements.sh"


def test_every_pin_is_the_locked_version_and_no_dev_tool_is_shipped() -> None:
    locked = locked_versions()
    pinned = pins()
    assert len(pinned) > 100
    assert {name: v for name, v in pinned.items() if locked.get(name) != v} == {}
    for required in (
        "apache-airflow",
        "apache-airflow-providers-celery",
        "celery",
        "redis",
        "psycopg2-binary",
    ):
        assert required in pinned, required
    assert not {"pytest", "mypy", "ruff"} & set(pinned)
    assert "rce" not in pinned and "-e ." not in REQUIREMENTS.read_text(), "the package is installed apart"


def test_base_image_is_the_official_one_of_the_locked_airflow_and_python() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert froms == [f"apache/airflow:{locked_versions()['apache-airflow']}-python3.11"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "3.11" in project["requires-python"] and "<3.12" in project["requires-python"]


def test_every_copied_file_exists_and_the_lock_is_installed_before_the_package() -> None:
    steps = instructions()
    for word, args in steps:
        if word == "COPY":
            sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repo"
    runs = [args for word, args in steps if word == "RUN"]
    assert "-r /opt/rce/requirements.txt" in runs[0] and "pip check" in runs[0]
    assert "--no-deps /opt/rce" in runs[1]


def test_image_and_compose_agree_on_where_include_lives(compose: dict[str, Any]) -> None:
    env = dict(args.split("=", 1) for word, args in instructions() if word == "ENV")
    scheduler = compose["services"]["airflow-scheduler"]
    assert env["RCE_INCLUDE_DIR"] == env_of(scheduler)["RCE_INCLUDE_DIR"] == "/opt/airflow/include"
    assert any(interpolate(str(v)).split(":")[1] == "/opt/airflow/include" for v in scheduler["volumes"])
