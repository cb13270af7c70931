"""A small client for Airflow 3's REST API v2 (token auth), for the demo and tests."""

from __future__ import annotations

import json
import time
from typing import Any

import requests


class AirflowRest:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.session = requests.Session()
        self.session.trust_env = False
        self._token: str | None = None

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if self.session.get(f"{self.base_url}/api/v2/version", timeout=5).status_code < 500:
                    return
            except requests.RequestException as err:
                last = err
            time.sleep(1)
        raise TimeoutError(f"Airflow API not up at {self.base_url}: {last}")

    def login(self) -> None:
        resp = self.session.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )
        resp.raise_for_status()
        self._token = resp.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {self._token}"

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request with the token, logging in again once if it expired (401)."""
        if self._token is None:
            self.login()
        kwargs.setdefault("timeout", 60)
        resp = self.session.request(method, url, **kwargs)
        if resp.status_code == 401:
            self.login()
            resp = self.session.request(method, url, **kwargs)
        return resp

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._send(method, f"{self.base_url}/api/v2{path}", **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def ui_get(self, path: str, **params: Any) -> int:
        """GET one of the UI's own endpoints (`/ui/...`), reading the whole body as the browser
        would; its HTTP status."""
        resp = self._send("GET", f"{self.base_url}/ui{path}", params=params)
        _ = resp.content
        return resp.status_code

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.request("GET", f"/dags/{dag_id}")
                return
            except RuntimeError:
                time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} not parsed within {timeout}s")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        return str(self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Every task instance of the run (the API caps a page at `[api] maximum_page_limit`)."""
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.request(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": page_size, "offset": offset},
            )
            batch = page.get("task_instances", [])
            items.extend(batch)
            offset += len(batch)
            if not batch or offset >= int(page.get("total_entries", 0)):
                return items

    def xcom(self, dag_id: str, run_id: str, task_id: str, *, key: str = "return_value") -> Any:
        """A task's XCom as the task pushed it (None: none pushed)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        try:
            value = self.request("GET", path, params={"map_index": -1}).get("value")
        except RuntimeError as err:
            if "HTTP 404" in str(err):
                return None
            raise
        return json.loads(value) if isinstance(value, str) else value

    def sddc_ids(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
        """Which SDDC each mapped group's map index is: (group, map index) -> SDDC id, from the
        groups' slice XComs (a task started in the triggerer never renders its map index)."""
        out: dict[tuple[str, int], str] = {}
        for group in ("canary", "bulk"):
            ids = self.xcom(dag_id, run_id, f"{group}_slice")
            for index, sddc_id in enumerate(ids if isinstance(ids, list) else []):
                out[(group, index)] = str(sddc_id)
        return out

    def clear(self, dag_id: str, run_id: str, task_ids: list[Any], *, only_failed: bool = True) -> Any:
        return self.request(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": task_ids,
                "only_failed": only_failed,
                "include_downstream": True,
                "reset_dag_runs": True,
            },
        )

    def wait_run(self, dag_id: str, run_id: str, timeout: float, poll: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        state = "queued"
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(poll)
        return state
