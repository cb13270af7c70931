"""Fixtures for the static checks of the Docker deployment (no Docker engine needed).

compose -> dict: docker-compose.yaml as Compose reads it (YAML anchors and `<<` merges
    resolved; ${VAR} interpolation left as text).
bind_mounts(service, named) -> [(host, container)]; host_path(service, named, container_path)
    -> the repo path behind a container path.
interpolate(text) -> str: Compose's variable interpolation with no variables set:
    `${V:-default}`/`${V-default}` give the default, `${V:?err}`/`${V?err}` give the
    placeholder `<V>` (Compose itself refuses to start without them), `$$` is a literal `$`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"

_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if op in (":-", "-"):
            return str(arg)
        return f"<{name}>"

    return _VAR.sub(one, text)


def required_variables(text: str) -> set[str]:
    """Variables written `${V:?...}` / `${V?...}`: Compose refuses to run without them."""
    return {m.group("name") for m in _VAR.finditer(text) if m.group("op") in (":?", "?")}


def defaulted_variables(text: str) -> dict[str, str]:
    """Variables written with a default, and the default."""
    return {m.group("name"): str(m.group("arg")) for m in _VAR.finditer(text) if m.group("op") in (":-", "-")}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either of Compose's two forms (mapping or KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def bind_mounts(service: dict[str, Any], named: set[str]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount: short and long syntax."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target, kind = volume.get("source", ""), volume["target"], volume.get("type")
            if kind == "bind":
                found.append((interpolate(source), target))
            continue
        source, target = interpolate(volume).split(":")[:2]
        if source not in named:
            found.append((source, target))
    return found


def host_path(service: dict[str, Any], named: set[str], container_path: str) -> Path | None:
    """The repo path a service sees at `container_path` through its bind mounts (the deepest
    mount wins), or None when no bind mount covers it."""
    best: tuple[int, Path] | None = None
    for source, target in bind_mounts(service, named):
        target = target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            rest = container_path[len(target) :].lstrip("/")
            candidate = (COMPOSE_FILE.parent / source / rest).resolve()
            if best is None or len(target) > best[0]:
                best = (len(target), candidate)
    return best[1] if best else None
