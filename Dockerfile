# rce on Airflow's official image: the image's Airflow, pinned to the versions of uv.lock
# (docker/requirements.txt, exported from it: `scripts/export-requirements.sh`; a test keeps
# the two equal), then the rce package itself, the DAGs, plugins and include/ assets.
# Built by docker-compose.yaml (`docker compose build`).
FROM apache/airflow:3.3.2-python3.11

# The locked set, installed as the image's airflow user like any extension of the official
# image. apache-airflow itself is pinned in it (3.3.2), so pip cannot move Airflow; `pip check`
# refuses an image whose preinstalled packages clash with the lock.
COPY --chown=airflow:0 docker/requirements.txt /opt/rce/requirements.txt
RUN pip install --no-cache-dir -r /opt/rce/requirements.txt && pip check

# The package (rce_lib: operators, triggers, hooks, ledger, simulator), without dependencies:
# they all came from the lock above. Triggers must be importable by the triggerer, so the
# package is installed, not mounted.
COPY --chown=airflow:0 pyproject.toml README.md /opt/rce/
COPY --chown=airflow:0 rce_lib /opt/rce/rce_lib
RUN pip install --no-cache-dir --no-deps /opt/rce

COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 include /opt/airflow/include
# airflow_local_settings.py ($AIRFLOW_HOME/config is on sys.path): preloads rce_lib in every
# Airflow process, so task processes forked by the executor inherit the imports.
COPY --chown=airflow:0 config /opt/airflow/config
# The plan, pools and contract live here, not next to the installed package.
ENV RCE_INCLUDE_DIR=/opt/airflow/include
