"""Async waits that run in the triggerer, so that no worker slot is held while waiting."""
