"""Run the whole thing locally: the simulator and Airflow standalone as process
groups, the Airflow environment, and a small client for Airflow's REST API.
Used by `rce demo`, the benchmark and the integration tests (no Airflow import)."""
