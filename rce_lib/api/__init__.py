"""The SDDC Control API as the engine sees it: models, identifiers, service map (no Airflow)."""
