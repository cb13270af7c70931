"""Glue between Airflow (connections, context) and the plain modules."""
