"""The DAG tests' Airflow fixtures, for the live Prometheus test."""

from tests.dags.conftest import airflow_template_home, module_wave_airflow, wave_airflow

__all__ = ["airflow_template_home", "module_wave_airflow", "wave_airflow"]
