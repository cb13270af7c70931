"""Airflow local settings for rce, imported by every Airflow process at start-up (Airflow puts
$AIRFLOW_HOME/config on sys.path). The scheduler, Celery workers, the dag-processor and the
triggerer preload rce_lib, so the processes they fork inherit the imports instead of repeating
them in every task (rce_lib/airflow_support/preload.py)."""

import sys

from rce_lib.airflow_support.preload import preload_for

preload_for(sys.argv)
