"""`rce status`: a live view of the ledger (SDDCs per phase and status, failures, ETA)."""
