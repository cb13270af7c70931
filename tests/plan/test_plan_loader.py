"""Loading include/rollout.yaml: the shipped plan, path resolution, caching and error messages."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rce_lib.errors import PlanError
from rce_lib.plan import loader
from rce_lib.plan.loader import default_plan_path, load_plan

REPO = Path(__file__).resolve().parents[2]
WritePlan = Callable[..., Path]


def _error(path: Path) -> str:
    with pytest.raises(PlanError) as info:
        load_plan(path)
    return str(info.value)


def test_shipped_plan_loads_with_three_chained_waves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loader.PLAN_ENV, raising=False)
    monkeypatch.delenv(loader.INCLUDE_DIR_ENV, raising=False)
    plan = load_plan()
    assert plan.release == "1.26.0"
    canary, early, main = plan.effective_waves()
    assert (canary.name, canary.size, canary.canary_size, canary.schedule) == ("canary", 6, 2, None)
    assert (early.after, early.size) == ("canary", "25%")
    assert (main.after, main.size) == ("early", "100%")
    assert early.max_fail_percentage == 20 and early.bake_seconds == 30
    assert early.gate.max_error_rate == 0.05 and early.gate.max_p95_latency_ms == 800


def test_default_path_is_repo_include(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loader.PLAN_ENV, raising=False)
    monkeypatch.delenv(loader.INCLUDE_DIR_ENV, raising=False)
    assert default_plan_path() == REPO / "include" / "rollout.yaml"


def test_env_vars_choose_the_plan_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(loader.INCLUDE_DIR_ENV, str(tmp_path))
    assert default_plan_path() == tmp_path / "rollout.yaml"
    monkeypatch.setenv(loader.PLAN_ENV, str(tmp_path / "other.yaml"))
    assert default_plan_path() == tmp_path / "other.yaml"


def test_load_plan_uses_env_path(
    monkeypatch: pytest.MonkeyPatch, write_plan: WritePlan, plan_data: dict[str, Any]
) -> None:
    plan_data["rollout"] = "from-env"
    monkeypatch.setenv(loader.PLAN_ENV, str(write_plan(plan_data, "env.yaml")))
    assert load_plan().rollout == "from-env"


def test_unchanged_file_is_served_from_cache(write_plan: WritePlan, plan_data: dict[str, Any]) -> None:
    path = write_plan(plan_data)
    assert load_plan(path) is load_plan(str(path))


def test_edited_file_is_read_again(write_plan: WritePlan, plan_data: dict[str, Any]) -> None:
    path = write_plan(plan_data)
    first = load_plan(path)
    plan_data["rollout"] = "edited"
    write_plan(plan_data)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_plan(path)
    assert (first.rollout, second.rollout) == ("fleet-test", "edited")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = _error(path)
    assert str(path) in message and "not found" in message


def test_yaml_syntax_error_names_file_and_line(write_plan: WritePlan) -> None:
    path = write_plan("rollout: x\nrelease: 1.26.0\nwaves:\n  - name: [unclosed\n")
    message = _error(path)
    assert str(path) in message
    assert "YAML error at line 5" in message or "YAML error at line 4" in message


def test_duplicate_yaml_key_is_an_error(write_plan: WritePlan) -> None:
    path = write_plan("rollout: a\nrelease: 1.26.0\nrollout: b\nwaves: []\n")
    message = _error(path)
    assert str(path) in message and "duplicate key 'rollout'" in message and "line 3" in message


def test_empty_file_is_an_error(write_plan: WritePlan) -> None:
    path = write_plan("# only a comment\n")
    message = _error(path)
    assert str(path) in message and "empty" in message


def test_top_level_list_is_an_error(write_plan: WritePlan) -> None:
    path = write_plan("- rollout: x\n")
    message = _error(path)
    assert str(path) in message and "must be a mapping" in message and "list" in message


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets a dotted path (ints index lists) in the plan data."""

    def apply(data: dict[str, Any]) -> None:
        parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = data
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value

    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = data
        for part in parts[:-1]:
            target = target[part]
        del target[parts[-1]]

    return apply


def _dup_wave(data: dict[str, Any]) -> None:
    data["waves"].append({"name": "early", "size": 1})


def _cycle(data: dict[str, Any]) -> None:
    data["waves"][0]["schedule"] = "after:main"


MALFORMED = [
    pytest.param(_drop("rollout"), "rollout", "Field required", id="missing-rollout"),
    pytest.param(_drop("waves.0.name"), "waves[0].name", "Field required", id="missing-wave-name"),
    pytest.param(_drop("defaults.gate"), "waves[0].gate (wave 'canary')", "Field required", id="no-gate"),
    pytest.param(_set("waves", []), "waves", "at least 1", id="no-waves"),
    pytest.param(_set("release", "1.26"), "release", "1.26", id="bad-release"),
    pytest.param(
        _set("waves.1.release", "v2"), "waves[1].release (wave 'early')", "v2", id="bad-wave-release"
    ),
    pytest.param(_set("rollout", "Fleet Upgrade"), "rollout", "Fleet Upgrade", id="bad-rollout-name"),
    pytest.param(
        _set("waves.2.name", "Main-Wave"), "waves[2].name (wave 'Main-Wave')", "pattern", id="bad-name"
    ),
    pytest.param(_dup_wave, "waves[3].name (wave 'early')", "duplicate wave name", id="duplicate-wave"),
    pytest.param(
        _set("waves.1.schedule", "after:ghost"),
        "waves[1].schedule (wave 'early')",
        "no wave 'ghost'",
        id="after-unknown",
    ),
    pytest.param(
        _set("waves.1.schedule", "after:early"), "waves[1].schedule (wave 'early')", "itself", id="after-self"
    ),
    pytest.param(
        _cycle,
        "waves[0].schedule (wave 'canary')",
        "cycle: canary -> main -> early -> canary",
        id="after-cycle",
    ),
    pytest.param(
        _set("waves.0.canary_size", 7),
        "waves[0].canary_size (wave 'canary')",
        "larger than size",
        id="canary-over-size",
    ),
    pytest.param(
        _set("waves.0.canary_size", -1),
        "waves[0].canary_size (wave 'canary')",
        "greater than or equal to 0",
        id="negative-canary",
    ),
    pytest.param(
        _set("waves.0.schedule", "61 * * * *"),
        "waves[0].schedule (wave 'canary')",
        "cron",
        id="cron-out-of-range",
    ),
    pytest.param(
        _set("waves.0.schedule", "0 6 * *"),
        "waves[0].schedule (wave 'canary')",
        "5-field",
        id="cron-four-fields",
    ),
    pytest.param(
        _set("waves.0.schedule", "every day"), "waves[0].schedule (wave 'canary')", "5-field", id="cron-words"
    ),
    pytest.param(_set("waves.1.size", "0%"), "waves[1].size (wave 'early')", "1%..100%", id="size-0pct"),
    pytest.param(_set("waves.1.size", "150%"), "waves[1].size (wave 'early')", "1%..100%", id="size-150pct"),
    pytest.param(_set("waves.1.size", "abc"), "waves[1].size (wave 'early')", "'abc'", id="size-abc"),
    pytest.param(_set("waves.1.size", -1), "waves[1].size (wave 'early')", "got -1", id="size-negative"),
    pytest.param(_set("waves.1.size", 0), "waves[1].size (wave 'early')", "got 0", id="size-zero"),
    pytest.param(_set("waves.1.size", True), "waves[1].size (wave 'early')", "True", id="size-bool"),
    pytest.param(_drop("waves.0.size"), "waves[0].size (wave 'canary')", "Field required", id="size-missing"),
    pytest.param(
        _set("waves.0.max_parallel", 0),
        "waves[0].max_parallel (wave 'canary')",
        "greater than or equal to 1",
        id="max-parallel-zero",
    ),
    pytest.param(
        _set("defaults.max_fail_percentage", 101),
        "defaults.max_fail_percentage",
        "less than or equal to 100",
        id="fail-pct",
    ),
    pytest.param(
        _set("defaults.gate.max_error_rate", 1.5),
        "defaults.gate.max_error_rate",
        "less than or equal to 1",
        id="gate-error-rate",
    ),
    pytest.param(
        _set("defaults.gate.max_p95_latency_ms", 0),
        "defaults.gate.max_p95_latency_ms",
        "greater than 0",
        id="gate-latency",
    ),
    pytest.param(
        _set("waves.0.selector", {"sddc_ids": ["SDDC 1"]}),
        "waves[0].selector.sddc_ids[0] (wave 'canary')",
        "SDDC 1",
        id="bad-sddc-id",
    ),
    pytest.param(
        _set("waves.0.selector", {"exclude_ids": ["ok-1", "Bad_Id"]}),
        "waves[0].selector.exclude_ids[1] (wave 'canary')",
        "Bad_Id",
        id="bad-exclude-id",
    ),
    pytest.param(
        _set("waves.0.selector", {"versions": ["1.25"]}),
        "waves[0].selector.versions[0] (wave 'canary')",
        "1.25",
        id="bad-selector-version",
    ),
    pytest.param(
        _set("waves.0.selector", {"region": ["us-east-1"]}),
        "waves[0].selector.region (wave 'canary')",
        "unknown key",
        id="unknown-selector-key",
    ),
    pytest.param(
        _set("waves.2.max_paralel", 3),
        "waves[2].max_paralel (wave 'main')",
        "unknown key",
        id="unknown-wave-key",
    ),
    pytest.param(_set("rolout", "x"), "rolout", "unknown key", id="unknown-top-key"),
    pytest.param(_set("defaults.name", "x"), "defaults.name", "unknown key", id="name-in-defaults"),
]


@pytest.mark.parametrize(("mutate", "field_path", "fragment"), MALFORMED)
def test_malformed_plan_error_names_file_and_field(
    write_plan: WritePlan,
    plan_data: dict[str, Any],
    mutate: Callable[[dict[str, Any]], None],
    field_path: str,
    fragment: str,
) -> None:
    mutate(plan_data)
    path = write_plan(plan_data)
    message = _error(path)
    assert str(path) in message
    assert f"- {field_path}" in message, message
    assert fragment in message, message


def test_every_problem_is_listed_at_once(write_plan: WritePlan, plan_data: dict[str, Any]) -> None:
    plan_data["release"] = "x"
    plan_data["waves"][0]["canary_size"] = 9
    plan_data["waves"][1]["size"] = "150%"
    plan_data["waves"][1]["schedule"] = "after:ghost"
    plan_data["waves"][2]["selector"] = {"sddc_ids": ["BAD"]}
    message = _error(write_plan(plan_data))
    assert "(5 problem(s))" in message, message
    for expected in (
        "- release:",
        "- waves[0].canary_size (wave 'canary')",
        "- waves[1].size (wave 'early')",
        "- waves[1].schedule (wave 'early')",
        "- waves[2].selector.sddc_ids[0] (wave 'main')",
    ):
        assert expected in message, message
    positions = [message.index(f"- {path}") for path in ("release", "waves[0]", "waves[1]", "waves[2]")]
    assert positions == sorted(positions)  # listed in plan order


def test_valid_cron_and_comments_load(write_plan: WritePlan) -> None:
    text = """
# a plan with comments
rollout: nightly
release: 1.26.0
defaults: {max_parallel: 2, max_fail_percentage: 0, gate: {max_error_rate: 0, max_p95_latency_ms: 100}}
waves:
  - name: nightly_eu   # cron
    schedule: "30 2 * * mon-fri"
    size: 3
    selector: {regions: [eu-central-1], labels: {canary: true}}
"""
    wave = load_plan(write_plan(text)).wave("nightly_eu")
    assert wave.cron == "30 2 * * mon-fri"
    assert wave.selector.labels == {"canary": "true"}
