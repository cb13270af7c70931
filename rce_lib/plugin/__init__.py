"""The Airflow plugin's parts (imported by plugins/rce_plugin.py on the api-server)."""
