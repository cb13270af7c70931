"""Airflow plugin: the rce status view (/rce) on the api-server, linked from the UI nav, and
the copy of the pools' sizes into the ledger (rce_lib.airflow_support.pool_ceilings)."""

from airflow.plugins_manager import AirflowPlugin

from rce_lib.airflow_support.pool_ceilings import PoolCeilingListener, PoolChangeMiddleware
from rce_lib.plugin.status_app import plugin_app


class RcePlugin(AirflowPlugin):
    name = "rce"
    fastapi_apps = [{"app": plugin_app(), "url_prefix": "/rce", "name": "rce status"}]
    fastapi_root_middlewares = [{"middleware": PoolChangeMiddleware, "name": "rce pool ceilings"}]
    listeners = [PoolCeilingListener()]
    external_views = [
        {"name": "Rollout status", "href": "/rce/", "destination": "nav", "category": "browse"},
    ]
