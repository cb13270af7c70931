"""Airflow plugin: the rce status view (/rce) on the api-server, linked from the UI nav."""

from airflow.plugins_manager import AirflowPlugin

from rce_lib.plugin.status_app import plugin_app


class RcePlugin(AirflowPlugin):
    name = "rce"
    fastapi_apps = [{"app": plugin_app(), "url_prefix": "/rce", "name": "rce status"}]
    external_views = [
        {"name": "Rollout status", "href": "/rce/", "destination": "nav", "category": "browse"},
    ]
