"""The rollout plan (include/rollout.yaml) as pydantic models.

Every model forbids unknown keys, so a typo in the plan fails the DAG parse
with a message naming the field instead of being silently ignored. Waves
inherit unset fields from `defaults`; `RolloutPlan.effective_waves()` returns
them with the defaults applied, ready for cohort selection and the DAG factory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal, NamedTuple, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)

from rce_lib.api.models import SDDC_ID_PATTERN, VERSION_PATTERN, VERSION_RE, SddcSummary
from rce_lib.errors import PlanError
from rce_lib.plan.windows import MissingWindowPolicy

ROLLOUT_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
WAVE_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_]{0,40}$"
LABEL_KEY_PATTERN: Final = r"^[a-z0-9_.-]+$"
LABEL_VALUE_PATTERN: Final = r"^[A-Za-z0-9_.-]+$"
DAG_ID_PREFIX: Final = "rce_wave_"
AFTER_PREFIX: Final = "after:"
MANUAL: Final = "manual"

_PERCENT_RE: Final = re.compile(r"^\s*([0-9]+)\s*%\s*$")
_LABEL_KEY_RE: Final = re.compile(LABEL_KEY_PATTERN)
_LABEL_VALUE_RE: Final = re.compile(LABEL_VALUE_PATTERN)
_WAVE_NAME_RE: Final = re.compile(WAVE_NAME_PATTERN)
# (low, high) of each of the 5 cron fields, for the shape check when croniter is absent.
_CRON_RANGES: Final = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES: Final = re.compile(r"^[A-Za-z]{3}$")
_M = TypeVar("_M", bound=BaseModel)


# ---------------------------------------------------------------- field types


def _parse_size(value: Any) -> int | str:
    """A wave size is a positive count or "N%" (1..100) of what remains; bools are not counts."""
    if isinstance(value, bool):
        raise ValueError(f"size must be a positive count or 'N%', got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"size must be a positive count (>= 1) or 'N%', got {value}")
        return value
    if isinstance(value, str):
        match = _PERCENT_RE.match(value)
        if match is None:
            raise ValueError(f"size must be a positive count or 'N%' (1%..100%), got {value!r}")
        percent = int(match.group(1))
        if not 1 <= percent <= 100:
            raise ValueError(f"size percentage must be 1%..100%, got {value!r}")
        return f"{percent}%"
    raise ValueError(f"size must be a positive count or 'N%', got {type(value).__name__}")


def _check_cron(expr: str) -> None:
    """Validate a 5-field cron expression: croniter when installed, else a field-range check."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"schedule {expr!r} is not a 5-field cron expression (minute hour day month weekday), "
            f"'manual', null or 'after:<wave>'"
        )
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter ships with Airflow
        for field, (low, high) in zip(fields, _CRON_RANGES, strict=True):
            _check_cron_field(expr, field, low, high)
        return
    if not croniter.is_valid(expr):
        raise ValueError(f"schedule {expr!r} is not a valid cron expression")


def _check_cron_field(expr: str, field: str, low: int, high: int) -> None:
    """Fallback check of one cron field: '*', names, numbers, ranges, lists and steps in range."""
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and not step.isdigit():
            raise ValueError(f"schedule {expr!r}: bad step in {field!r}")
        if base == "*" or _CRON_NAMES.match(base):
            continue
        for bound in base.split("-"):
            if not bound.isdigit() or not low <= int(bound) <= high:
                raise ValueError(f"schedule {expr!r}: {field!r} is outside {low}..{high}")


def _parse_schedule(value: Any) -> str | None:
    """None/"manual" (triggered by hand), a 5-field cron, or "after:<wave>"; "manual" becomes None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"schedule must be null, 'manual', a cron expression or 'after:<wave>', got {value!r}"
        )
    text = value.strip()
    if text in ("", MANUAL):
        return None
    if text.startswith(AFTER_PREFIX):
        wave = text[len(AFTER_PREFIX) :].strip()
        if not _WAVE_NAME_RE.match(wave):
            raise ValueError(f"schedule {value!r}: {wave!r} is not a wave name ({WAVE_NAME_PATTERN})")
        return AFTER_PREFIX + wave
    _check_cron(text)
    return " ".join(text.split())


def _labels_as_strings(value: Any) -> Any:
    """YAML reads `canary: true` as a bool; label values are strings in the API, so spell them out."""
    if not isinstance(value, Mapping):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, int | float):
            out[key] = str(item)
        else:
            out[key] = item
    return out


Size = Annotated[int | str, PlainValidator(_parse_size)]
Schedule = Annotated[str | None, PlainValidator(_parse_schedule)]
Version = Annotated[str, Field(pattern=VERSION_PATTERN)]
SddcId = Annotated[str, Field(pattern=SDDC_ID_PATTERN)]
LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN)]
Region = Annotated[str, Field(min_length=1, max_length=64)]


class PlanModel(BaseModel):
    """Base of every plan model: unknown keys are errors (typos), values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


GatePhase = Literal["precheck", "snapshot", "upgrade_vcenter", "upgrade_nsx", "upgrade_hosts", "postcheck"]
DisruptivePhase = Literal["upgrade_vcenter", "upgrade_nsx", "upgrade_hosts"]
"""The phases that change what the customer runs: they wait for the maintenance window."""
DISRUPTIVE_PHASES: Final[tuple[DisruptivePhase, ...]] = ("upgrade_vcenter", "upgrade_nsx", "upgrade_hosts")
DEFAULT_EXPECTED_PHASE_SECONDS: Final[dict[DisruptivePhase, int]] = {
    "upgrade_vcenter": 3600,
    "upgrade_nsx": 3600,
    "upgrade_hosts": 4 * 3600,
}
"""Expected phase durations while the rollout has too little history of its own (seconds)."""
MAX_PHASE_SECONDS: Final = 7 * 86400


def _expected_phase_seconds(value: Any) -> Any:
    """Whole seconds, 1..one week, per disruptive phase; bools and fractions are refused."""
    if not isinstance(value, Mapping):
        return value
    for phase, seconds in value.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise ValueError(f"{phase}: expected whole seconds, got {seconds!r}")
        if not 1 <= seconds <= MAX_PHASE_SECONDS:
            raise ValueError(f"{phase}: must be 1..{MAX_PHASE_SECONDS} seconds (one week), got {seconds}")
    return value


ExpectedPhaseSeconds = Annotated[dict[DisruptivePhase, int], BeforeValidator(_expected_phase_seconds)]


class PromQLSignal(PlanModel):
    """An extra gate signal: a PromQL instant query whose every sample must stay at or below max_value."""

    conn_id: str = Field(min_length=1, max_length=250, pattern=r"^[A-Za-z0-9_.-]+$")
    query: str = Field(min_length=1, max_length=2000)
    max_value: float = Field(strict=True)


class Gate(PlanModel):
    """Health thresholds every upgraded SDDC must meet, and how the canary gate judges the slice.

    The thresholds apply at postcheck and again at the gate, after the bake. The
    baseline comparison (Mann-Whitney U, one-sided) asks whether the canary's
    health readings are worse than those of SDDCs not yet upgraded; it needs at
    least `min_samples` readings on each side, else it is inconclusive and
    `inconclusive` says whether the gate holds and samples again or fails closed.
    """

    max_error_rate: float = Field(ge=0, le=1, strict=True)
    max_p95_latency_ms: float = Field(gt=0, strict=True)
    min_samples: int = Field(default=6, ge=1, le=10_000, strict=True)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_effect: float = Field(default=0.5, ge=0, le=100)
    """Relative worsening of the median (0.5 = 50% worse) below which a significant difference passes."""
    baseline_size: int = Field(default=10, ge=0, le=200, strict=True)
    sample_interval_seconds: int = Field(default=10, ge=1, le=3600, strict=True)
    inconclusive: Literal["hold", "fail"] = "hold"
    max_hold_seconds: int = Field(default=1800, ge=0, le=7 * 86400, strict=True)
    phase_latency_factor: float = Field(default=4.0, gt=1, le=1000)
    """A canary phase slower than this many times the rollout's median for that phase is a spike."""
    max_phase_seconds: dict[GatePhase, float] = Field(default_factory=dict)
    """Absolute bounds per phase (seconds), checked whatever the history says."""
    prometheus: PromQLSignal | None = None

    @model_validator(mode="after")
    def _positive_bounds(self) -> Gate:
        for phase, bound in self.max_phase_seconds.items():
            if bound <= 0:
                raise ValueError(f"max_phase_seconds.{phase} must be > 0, got {bound}")
        return self


class Approval(PlanModel):
    """A human approves the canary's evidence before the rest of the wave runs."""

    timeout_seconds: int = Field(default=4 * 3600, ge=60, le=30 * 86400, strict=True)
    on_timeout: Literal["reject", "approve"] = "reject"


class Selector(PlanModel):
    """Which SDDCs a wave may touch: every non-empty criterion must hold (AND); lists are OR."""

    regions: list[Region] = Field(default_factory=list)
    labels: Annotated[dict[LabelKey, LabelValue], BeforeValidator(_labels_as_strings)] = Field(
        default_factory=dict
    )
    versions: list[Version] = Field(default_factory=list)
    sddc_ids: list[SddcId] = Field(default_factory=list)
    exclude_ids: list[SddcId] = Field(default_factory=list)

    def matches(self, sddc: SddcSummary) -> bool:
        """True if the SDDC meets every criterion; exclude_ids are NOT applied here (reported apart)."""
        if self.regions and sddc.region not in self.regions:
            return False
        if self.versions and sddc.version not in self.versions:
            return False
        if self.sddc_ids and sddc.id not in self.sddc_ids:
            return False
        return all(sddc.labels.get(key) == value for key, value in self.labels.items())

    def excludes(self, sddc_id: str) -> bool:
        """True if the plan names this SDDC in exclude_ids."""
        return sddc_id in self.exclude_ids


class WaveDefaults(PlanModel):
    """Wave fields that waves inherit when they do not set them (whole-field: no deep merge)."""

    release: Version | None = None
    selector: Selector | None = None
    size: Size | None = None
    canary_size: int | None = Field(default=None, ge=0, strict=True)
    max_parallel: int | None = Field(default=None, ge=1, strict=True)
    max_fail_percentage: float | None = Field(default=None, ge=0, le=100, strict=True)
    bake_seconds: int | None = Field(default=None, ge=0, strict=True)
    gate: Gate | None = None
    approval: Approval | None = None
    schedule: Schedule = None
    respect_maintenance_windows: bool | None = Field(default=None, strict=True)
    expected_phase_seconds: ExpectedPhaseSeconds | None = None
    missing_maintenance_window: MissingWindowPolicy | None = None


class WaveSpec(WaveDefaults):
    """A wave as written in the plan; unset fields come from `defaults`."""

    name: str = Field(pattern=WAVE_NAME_PATTERN)


class Wave(PlanModel):
    """A wave with defaults applied: everything the DAG factory and cohort selection need."""

    name: str = Field(pattern=WAVE_NAME_PATTERN)
    release: Version
    selector: Selector = Field(default_factory=Selector)
    size: Size
    canary_size: int = Field(default=0, ge=0, strict=True)
    max_parallel: int = Field(ge=1, strict=True)
    max_fail_percentage: float = Field(ge=0, le=100, strict=True)
    bake_seconds: int = Field(default=0, ge=0, strict=True)
    gate: Gate
    approval: Approval | None = None
    schedule: Schedule = None
    respect_maintenance_windows: bool = Field(default=False, strict=True)
    """Disruptive phases wait (deferred) for each SDDC's maintenance window (README)."""
    expected_phase_seconds: ExpectedPhaseSeconds = Field(
        default_factory=lambda: dict(DEFAULT_EXPECTED_PHASE_SECONDS)
    )
    """Fallback expected durations while the rollout has too little history; phases not given
    keep the built-in defaults."""
    missing_maintenance_window: MissingWindowPolicy = "proceed"
    """An SDDC whose window is null: `proceed` (no restriction) or `refuse` (NO_MAINTENANCE_WINDOW)."""

    @model_validator(mode="after")
    def _fill_expected_phase_seconds(self) -> Wave:
        given = self.expected_phase_seconds
        filled = {p: given.get(p, DEFAULT_EXPECTED_PHASE_SECONDS[p]) for p in DISRUPTIVE_PHASES}
        object.__setattr__(self, "expected_phase_seconds", filled)  # frozen model: set once, here
        return self

    @model_validator(mode="after")
    def _canary_fits(self) -> Wave:
        """A canary slice larger than a fixed wave size can never be filled."""
        if isinstance(self.size, int) and self.canary_size > self.size:
            raise ValueError(f"canary_size ({self.canary_size}) is larger than size ({self.size})")
        if self.selector.sddc_ids:
            # The selector names its SDDCs: the largest cohort is known here, before any run. (With
            # a percentage size and no id list it depends on the live inventory: resolve_cohort
            # then warns and makes the whole cohort the canary slice.)
            named = len(set(self.selector.sddc_ids) - set(self.selector.exclude_ids))
            most = self.resolve_size(named)
            if self.canary_size > most:
                raise ValueError(
                    f"canary_size ({self.canary_size}) is larger than the largest cohort this wave can "
                    f"take ({most}: size {self.size} of the {named} SDDC(s) its selector names)"
                )
        return self

    @property
    def dag_id(self) -> str:
        """The Airflow DAG id of this wave."""
        return f"{DAG_ID_PREFIX}{self.name}"

    @property
    def after(self) -> str | None:
        """The wave this one runs after (schedule "after:<wave>"), else None."""
        if self.schedule is not None and self.schedule.startswith(AFTER_PREFIX):
            return self.schedule[len(AFTER_PREFIX) :]
        return None

    @property
    def cron(self) -> str | None:
        """The cron expression of this wave, or None when manual or chained with after:."""
        if self.schedule is None or self.after is not None:
            return None
        return self.schedule

    @property
    def size_count(self) -> int | None:
        """The fixed size, or None when the size is a percentage."""
        return self.size if isinstance(self.size, int) else None

    @property
    def size_percent(self) -> int | None:
        """The percentage (1..100), or None when the size is a fixed count."""
        return int(self.size[:-1]) if isinstance(self.size, str) else None

    def resolve_size(self, remaining: int) -> int:
        """How many of `remaining` eligible SDDCs this wave takes: N% rounds up, at least 1 if any."""
        if remaining <= 0:
            return 0
        percent = self.size_percent
        if percent is None:
            return min(int(self.size), remaining)
        return min(remaining, max(1, math.ceil(remaining * percent / 100)))


# ---------------------------------------------------------------- plan-level issues


class PlanIssue(BaseModel):
    """One problem found in a plan: where (field path and wave) and what."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str
    wave: str | None = None

    def render(self) -> str:
        """`waves[2].schedule (wave 'main'): ...` - the path first, so it can be grepped."""
        where = f"{self.path} (wave {self.wave!r})" if self.wave else (self.path or "<plan>")
        return f"{where}: {self.message}"


class PlanIssues(ValueError):
    """Cross-field problems of a plan, carried through pydantic so that each keeps its own path."""

    def __init__(self, issues: list[PlanIssue]) -> None:
        super().__init__("; ".join(issue.render() for issue in issues))
        self.issues = issues


class RolloutPlan(PlanModel):
    """The whole plan: a name, the release to roll out, wave defaults and the ordered waves."""

    rollout: str = Field(pattern=ROLLOUT_NAME_PATTERN)
    release: Version
    defaults: WaveDefaults = Field(default_factory=WaveDefaults)
    waves: list[WaveSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross_checks(self) -> RolloutPlan:
        """Checks that need more than one field: names, after: chains, defaults applied."""
        entries = [
            _WaveEntry(position=i, name=spec.name, schedule=_schedule_of(spec, self.defaults), spec=spec)
            for i, spec in enumerate(self.waves)
        ]
        issues = _cross_issues(entries, self.defaults, self.release)
        if issues:
            raise PlanIssues(issues)
        return self

    def _effective(self, spec: WaveSpec) -> Wave:
        return _effective_wave(spec, self.defaults, self.release)

    def effective_waves(self) -> list[Wave]:
        """Every wave, in plan order, with the defaults (and the plan's release) applied."""
        return [self._effective(spec) for spec in self.waves]

    def wave(self, name: str) -> Wave:
        """One wave by name, defaults applied; PlanError if the plan has no such wave."""
        for spec in self.waves:
            if spec.name == name:
                return self._effective(spec)
        raise PlanError(f"rollout {self.rollout!r} has no wave {name!r} ({', '.join(self.wave_names())})")

    def wave_names(self) -> list[str]:
        """Wave names in plan order."""
        return [spec.name for spec in self.waves]

    def earlier_waves(self, name: str) -> list[str]:
        """Names of the waves listed before `name`: their SDDCs are not this wave's to take."""
        names = self.wave_names()
        if name not in names:
            raise PlanError(f"rollout {self.rollout!r} has no wave {name!r} ({', '.join(names)})")
        return names[: names.index(name)]


def _find_cycle(start: str, schedules: Mapping[str, str | None]) -> list[str] | None:
    """Follow after: links from `start`; return the cycle through `start` (closed), if there is one."""
    path = [start]
    current = start
    while True:
        schedule = schedules.get(current)
        if schedule is None or not schedule.startswith(AFTER_PREFIX):
            return None
        current = schedule[len(AFTER_PREFIX) :]
        if current == start:
            return [*path, start]
        if current in path or current not in schedules:
            return None
        path.append(current)


class _WaveEntry(NamedTuple):
    """What the cross-field checks need of one wave; spec is None when the wave itself is invalid."""

    position: int
    name: str | None
    schedule: str | None
    spec: WaveSpec | None


def _schedule_of(spec: WaveSpec, defaults: WaveDefaults | None) -> str | None:
    if "schedule" in spec.model_fields_set or defaults is None:
        return spec.schedule
    return defaults.schedule


def _effective_wave(spec: WaveSpec, defaults: WaveDefaults, release: str) -> Wave:
    """Defaults first, then what the wave sets itself (a set field replaces the default whole)."""
    fields: dict[str, Any] = {"release": release}
    for source in (defaults, spec):
        fields.update({name: getattr(source, name) for name in source.model_fields_set})
    return Wave.model_validate(fields)


def _cross_issues(entries: list[_WaveEntry], defaults: WaveDefaults | None, release: str) -> list[PlanIssue]:
    """Duplicate names, bad after: links and cycles, and each wave with defaults applied."""
    issues = [*_name_issues(entries), *_after_issues(entries)]
    if defaults is None:
        return issues
    for entry in entries:
        if entry.spec is None:
            continue
        try:
            _effective_wave(entry.spec, defaults, release)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                # Wave's only model-level check compares canary_size with size: point at canary_size.
                loc = tuple(err["loc"]) or ("canary_size",)
                message = err["msg"].removeprefix("Value error, ")
                issues.append(
                    PlanIssue(
                        path=join_path(("waves", entry.position, *loc)), message=message, wave=entry.name
                    )
                )
    return issues


def _name_issues(entries: list[_WaveEntry]) -> Iterable[PlanIssue]:
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.name is None:
            continue
        if entry.name in seen:
            yield PlanIssue(
                path=f"waves[{entry.position}].name",
                wave=entry.name,
                message=f"duplicate wave name (also waves[{seen[entry.name]}]); names become DAG ids",
            )
        else:
            seen[entry.name] = entry.position


def _after_issues(entries: list[_WaveEntry]) -> Iterable[PlanIssue]:
    known = {entry.name for entry in entries if entry.name is not None}
    after = {entry.name: entry.schedule for entry in entries if entry.name is not None}
    for entry in entries:
        schedule = entry.schedule
        if entry.name is None or schedule is None or not schedule.startswith(AFTER_PREFIX):
            continue
        path = f"waves[{entry.position}].schedule"
        target = schedule[len(AFTER_PREFIX) :]
        if target == entry.name:
            yield PlanIssue(path=path, wave=entry.name, message=f"{schedule!r} refers to the wave itself")
        elif target not in known:
            names = ", ".join(sorted(known))
            yield PlanIssue(
                path=path, wave=entry.name, message=f"{schedule!r}: no wave {target!r} (waves: {names})"
            )
        else:
            cycle = _find_cycle(entry.name, after)
            if cycle is not None and entry.name == min(cycle[:-1]):
                yield PlanIssue(
                    path=path, wave=entry.name, message="after: chain is a cycle: " + " -> ".join(cycle)
                )


def _raw_cross_issues(data: Mapping[str, Any]) -> list[PlanIssue]:
    """Cross-field checks on raw data that failed field validation, so that one run reports all."""
    defaults = _try_model(WaveDefaults, data.get("defaults", {}))
    release = data.get("release")
    release = release if isinstance(release, str) and VERSION_RE.match(release) else "0.0.0"
    raw_waves = data.get("waves")
    entries: list[_WaveEntry] = []
    for index, raw in enumerate(raw_waves if isinstance(raw_waves, list) else []):
        spec = _try_model(WaveSpec, raw)
        if spec is not None:
            entries.append(_WaveEntry(index, spec.name, _schedule_of(spec, defaults), spec))
            continue
        name = raw.get("name") if isinstance(raw, Mapping) else None
        name = name if isinstance(name, str) and _WAVE_NAME_RE.match(name) else None
        entries.append(_WaveEntry(index, name, _raw_schedule(raw, defaults), None))
    return _cross_issues(entries, defaults, release)


def _raw_schedule(raw: Any, defaults: WaveDefaults | None) -> str | None:
    """The schedule of a wave that failed validation, if that part of it is valid."""
    if not isinstance(raw, Mapping) or "schedule" not in raw:
        return defaults.schedule if defaults is not None else None
    try:
        return _parse_schedule(raw["schedule"])
    except ValueError:
        return None


def _try_model(model: type[_M], data: Any) -> _M | None:
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


# ---------------------------------------------------------------- error rendering


def join_path(loc: Iterable[int | str]) -> str:
    """Turn a pydantic loc ('waves', 2, 'selector', 'sddc_ids', 0) into waves[2].selector.sddc_ids[0]."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _wave_name_at(data: Any, loc: tuple[int | str, ...]) -> str | None:
    """The name of the wave a loc points into, read from the raw data (it may not have validated)."""
    if len(loc) < 2 or loc[0] != "waves" or not isinstance(loc[1], int) or not isinstance(data, Mapping):
        return None
    waves = data.get("waves")
    if not isinstance(waves, list) or loc[1] >= len(waves) or not isinstance(waves[loc[1]], Mapping):
        return None
    name = waves[loc[1]].get("name")
    return str(name) if name is not None else None


def plan_issues(exc: ValidationError, data: Any) -> list[PlanIssue]:
    """Every problem of a failed plan validation, each with its field path and wave name."""
    issues: list[PlanIssue] = []
    cross_checked = False
    for err in exc.errors(include_url=False):
        error = err.get("ctx", {}).get("error")
        if isinstance(error, PlanIssues):
            issues.extend(error.issues)
            cross_checked = True
            continue
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        elif err["type"] == "value_error":
            message = err["msg"].removeprefix("Value error, ")
        else:
            message = err["msg"]
            if err["type"] != "missing" and not isinstance(err.get("input"), Mapping | list):
                message += f" (got {err.get('input')!r})"
        issues.append(PlanIssue(path=join_path(loc), message=message, wave=_wave_name_at(data, loc)))
    if not cross_checked and isinstance(data, Mapping):
        # pydantic skips the plan-level validator when a field fails: run the cross checks on what is valid.
        seen = {(issue.path, issue.message) for issue in issues}
        issues.extend(issue for issue in _raw_cross_issues(data) if (issue.path, issue.message) not in seen)
    return sorted(issues, key=_issue_order)


def _issue_order(issue: PlanIssue) -> tuple[list[tuple[int, int, str]], str]:
    """Plan order: top-level fields, then waves[0], waves[1], ... (indexes compared as numbers)."""
    parts = [part for part in re.split(r"[\[\].]+", issue.path) if part]
    key = [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts]
    return key, issue.message


def parse_plan(data: Any, *, source: str = "<plan>") -> RolloutPlan:
    """Validate plan data; PlanError lists every problem with its field path, prefixed by `source`."""
    if not isinstance(data, Mapping):
        raise PlanError(
            f"{source}: the plan must be a mapping (rollout, release, waves), got {type(data).__name__}"
        )
    try:
        return RolloutPlan.model_validate(data)
    except ValidationError as exc:
        issues = plan_issues(exc, data)
        lines = "\n".join(f"  - {issue.render()}" for issue in issues)
        raise PlanError(f"{source}: invalid rollout plan ({len(issues)} problem(s)):\n{lines}") from None
