"""Airflow hooks for the SDDC Control API, and the retry policies they use."""
