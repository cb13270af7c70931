"""Load include/rollout.yaml into a RolloutPlan, with one clear PlanError when it is wrong.

The DAG file calls `load_plan()` at every parse, so results are cached by
(path, mtime, size): an unchanged file is read once, an edited one is re-read.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Final

import yaml

from rce_lib.errors import PlanError
from rce_lib.plan.model import RolloutPlan, parse_plan

PLAN_ENV: Final = "RCE_ROLLOUT_PLAN"
INCLUDE_DIR_ENV: Final = "RCE_INCLUDE_DIR"
PLAN_FILE_NAME: Final = "rollout.yaml"

_cache: dict[tuple[str, int, int], RolloutPlan] = {}
_cache_lock = threading.Lock()


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML would otherwise keep the last one silently."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def default_plan_path() -> Path:
    """$RCE_ROLLOUT_PLAN, else $RCE_INCLUDE_DIR/rollout.yaml, else <repo>/include/rollout.yaml."""
    explicit = os.environ.get(PLAN_ENV)
    if explicit:
        return Path(explicit)
    include_dir = os.environ.get(INCLUDE_DIR_ENV)
    if include_dir:
        return Path(include_dir) / PLAN_FILE_NAME
    package_dir = Path(__file__).resolve().parent.parent  # rce_lib/
    return package_dir.parent / "include" / PLAN_FILE_NAME


def _read_yaml(path: Path) -> Any:
    """Parse the file; syntax errors become PlanError with the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{path}: rollout plan file not found (set ${PLAN_ENV} to use another)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read rollout plan: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "syntax error"
        raise PlanError(f"{path}: YAML error at {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"{path}: YAML error: {exc}") from None


def load_plan(path: str | Path | None = None) -> RolloutPlan:
    """Load and validate the rollout plan; PlanError names the file and every bad field."""
    plan_path = Path(path) if path is not None else default_plan_path()
    try:
        stat = plan_path.stat()
    except FileNotFoundError:
        raise PlanError(
            f"{plan_path}: rollout plan file not found (set ${PLAN_ENV} to use another)"
        ) from None
    except OSError as exc:
        raise PlanError(f"{plan_path}: cannot read rollout plan: {exc}") from None
    key = (str(plan_path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    data = _read_yaml(plan_path)
    if data is None:
        raise PlanError(f"{plan_path}: the rollout plan is empty (expected rollout, release, waves)")
    plan = parse_plan(data, source=str(plan_path))
    with _cache_lock:
        for stale in [k for k in _cache if k[0] == key[0]]:
            del _cache[stale]
        _cache[key] = plan
    return plan


def clear_plan_cache() -> None:
    """Forget every cached plan (tests, or a caller that must re-read regardless of mtime)."""
    with _cache_lock:
        _cache.clear()
