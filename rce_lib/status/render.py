"""The status tables (rich): one block per wave."""

from __future__ import annotations

from datetime import timedelta

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rce_lib.plan.windows import human_delta
from rce_lib.status.snapshot import ROW_ORDER, STATUS_ORDER, StatusSnapshot, WaveStatus

_STATUS_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "rolled_back": "magenta",
    "skipped": "yellow",
}
_MESSAGE_WIDTH = 90


def eta_text(wave: WaveStatus) -> str:
    if wave.done:
        return "finished"
    if wave.eta_s is None:
        return f"ETA {wave.eta_note}"
    return f"ETA ~{human_delta(timedelta(seconds=wave.eta_s))} ({wave.eta_note})"


def render(snapshot: StatusSnapshot, *, details: bool = False) -> RenderableType:
    """The whole snapshot: a header line, then each wave's block."""
    parts: list[RenderableType] = [
        Text(
            f"rce status - ledger {snapshot.ledger} - {snapshot.generated_at:%Y-%m-%d %H:%M:%S} UTC",
            style="bold",
        )
    ]
    if not snapshot.waves:
        parts.append(Text("no SDDC in the ledger matches (no wave has run yet?)"))
    for wave in snapshot.waves:
        parts.append(Text(""))
        parts.append(render_wave(wave, details=details))
    return Group(*parts)


def render_wave(wave: WaveStatus, *, details: bool = False) -> RenderableType:
    counts = ", ".join(
        f"{wave.by_status[s.value]} {s.value}" for s in STATUS_ORDER if wave.by_status.get(s.value)
    )
    runs = ", ".join(wave.run_ids[-3:]) + (" ..." if len(wave.run_ids) > 3 else "")
    head = Text.assemble(
        (f"wave {wave.wave}", "bold"),
        f" (rollout {wave.rollout}, run {runs}): {wave.total} SDDC(s): {counts}; ",
        (eta_text(wave), "bold" if not wave.done else "green"),
    )
    parts: list[RenderableType] = [head, _phase_table(wave)]
    if wave.gate:
        parts.append(Text(f"canary gate: {wave.gate}"))
    if wave.excluded is not None:
        shown = ", ".join(f"{reason} {n}" for reason, n in sorted(wave.excluded.items())) or "none"
        parts.append(Text(f"excluded at cohort resolution: {shown}"))
    if wave.failures:
        parts.append(Text(f"failures ({len(wave.failures)}):", style="bold red"))
        parts.append(_failure_table(wave))
    if details:
        parts.append(_sddc_table(wave))
    return Group(*parts)


def _table() -> Table:
    return Table(show_edge=False, pad_edge=False, box=None, header_style="bold")


def _phase_table(wave: WaveStatus) -> Table:
    """SDDCs per phase (rows) and status (columns); empty rows and columns left out."""
    statuses = [s.value for s in STATUS_ORDER if wave.by_status.get(s.value)]
    table = _table()
    table.add_column("  phase", no_wrap=True)
    for status in statuses:
        table.add_column(status, justify="right", style=_STATUS_STYLE.get(status, ""))
    table.add_column("median", justify="right", style="dim")
    for phase in ROW_ORDER:
        cells = wave.by_phase.get(phase.value)
        if not cells:
            continue
        median = wave.medians_s.get(phase.value)
        table.add_row(
            f"  {phase.value}",
            *[str(cells.get(status, "")) for status in statuses],
            human_delta(timedelta(seconds=median)) if median is not None else "-",
        )
    return table


def _failure_table(wave: WaveStatus) -> Table:
    table = _table()
    for column in ("  SDDC", "phase", "status", "reason", "message"):
        table.add_column(column, no_wrap=column != "message", overflow="fold")
    for item in wave.failures:
        message = (item.error_message or "").replace("\n", " ")
        if len(message) > _MESSAGE_WIDTH:
            message = message[: _MESSAGE_WIDTH - 3] + "..."
        table.add_row(
            f"  {item.sddc_id}", item.phase.value, item.status.value, item.error_code or "-", message
        )
    return table


def _sddc_table(wave: WaveStatus) -> Table:
    table = _table()
    for column in ("  SDDC", "grid", "status", "phase", "release", "attempts", "left"):
        table.add_column(column, no_wrap=True)
    for item in wave.sddcs:
        left = (
            "-"
            if item.finished or item.remaining_s is None
            else human_delta(timedelta(seconds=item.remaining_s))
        )
        style = _STATUS_STYLE.get(item.status.value, "")
        table.add_row(
            f"  {item.sddc_id}",
            item.grid or ("canary" if item.canary else ""),
            Text(item.status.value, style=style),
            item.phase.value,
            f"{item.source_version or '?'} -> {item.target_version or '?'}",
            str(item.attempts),
            left,
        )
    return table
