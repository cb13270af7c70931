"""The kill switch: Airflow Variables that stop new phases from starting.

`rce_kill_switch` stops every wave, `rce_kill_switch_<wave>` one wave. Any value
but an empty one, "0", "false", "off" or "no" turns it on; the value is shown as
the reason, so write why (`"bad NSX build, INC-1234"`). Phases check it before
every new downstream task and admission before every new SDDC, so a set switch
takes effect within one poll interval (the triggerer reads it at most every 5 s,
lookup_cache); a downstream task already running is
followed to its end. To resume: delete the Variable (or set it to "off") and
clear the failed tasks.
"""

from __future__ import annotations

from functools import partial
from typing import Final

from rce_lib.airflow_support import lookup_cache

GLOBAL_KEY: Final = "rce_kill_switch"
_OFF: Final = ("", "0", "false", "off", "no", "none")
#: how long the triggerer keeps a switch's value (lookup_cache; elsewhere it is read each time)
KEPT_S: Final = 5.0


def wave_key(wave: str) -> str:
    return f"{GLOBAL_KEY}_{wave}"


def is_on(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _OFF


def engaged(wave: str) -> str | None:
    """Why new work must not start ("<variable>: <value>"), or None when the switches are off."""
    from airflow.sdk import Variable

    for key in (GLOBAL_KEY, wave_key(wave)):
        value = lookup_cache.get(("variable", key), partial(Variable.get, key, default=None), KEPT_S)
        if is_on(value):
            return f"{key} is set ({str(value).strip()[:200]})"
    return None
