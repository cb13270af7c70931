-- The rce ledger's own database, beside Airflow's metadata database, on first start of the
-- postgres volume (docker-entrypoint-initdb.d). Airflow 3 tasks cannot use the metadata DB.
CREATE DATABASE rce_ledger OWNER airflow;
