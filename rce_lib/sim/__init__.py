"""The fleet simulator: a real HTTP server implementing the SDDC Control API contract
(include/contracts/sddc-api.yaml), used by the demo, the tests and the benchmarks as the
fake downstream. It imports no Airflow.

Modules: config (SimConfig, defaults), fleet (seeded generation), model (records),
state (store, advance(now), views), ops (contract operations and their refusals),
faults, limits (token buckets, Retry-After), counters, persist (SQLite state dir),
app (aiohttp routes), server (run loop, signals), cli (`rce sim ...`).

Admin API (same bearer token as the contract API; never rate-limited or faulted):
  GET  /sim/ping             liveness, no auth
  GET  /sim/counters         counters JSON (see counters.Counters.dump)
  POST /sim/reset-counters   zero the counters (peak concurrency restarts at current)
  GET  /sim/faults           current faults (faults.Faults)
  POST /sim/faults           merge a partial Faults JSON; {"reset": true} starts from defaults
  DELETE /sim/faults         back to defaults
  POST /sim/drift            {kind, sddc_id, host_id?, component?, version?}
  GET  /sim/state            whole fleet, snapshots, active tasks
"""
