"""The Airflow UI in a real browser (Debian's headless Chromium through Selenium and
chromedriver), on a real `airflow standalone` that has run a canary wave:

- the login form takes the generated admin password;
- a failed mapped task is labelled by SDDC id (map_index_template), not by index: the phases
  start in the triggerer, which cannot render it, but a failure is raised on a worker, which
  does; so the canary's vCenter upgrade fails for good (the wave stops at the canary, the
  SDDC is rolled back) and the failed task and its rollback name the SDDC;
- the trigger form (params) refuses a malformed target release and accepts a valid one,
  which starts a run;
- screenshots of each page are saved under the test's tmp_path (docs/img/grid.png in the
  README was taken this way).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from rce_lib.devenv.airflow_rest import AirflowRest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

TARGET = "1.26.0"
WAVE = "ui"
DAG_ID = f"rce_wave_{WAVE}"
SDDCS = ["sddc-0001", "sddc-0003", "sddc-0004"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def write_plan(path: Path) -> Path:
    gate = {
        "max_error_rate": 0.05,
        "max_p95_latency_ms": 800,
        "min_samples": 2,
        "sample_interval_seconds": 1,
        "min_effect": 1.0,
        "baseline_size": 4,
    }
    plan = {
        "rollout": "ui-it",
        "release": TARGET,
        "defaults": {"max_parallel": 3, "max_fail_percentage": 0, "bake_seconds": 0, "gate": gate},
        "waves": [{"name": WAVE, "selector": {"sddc_ids": SDDCS}, "size": 3, "canary_size": 1}],
    }
    path.write_text(yaml.safe_dump(plan))
    return path


def chromium() -> WebDriver:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, (
        "Debian's chromium and chromium-driver are not installed (scripts/bootstrap.sh does it)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def wait_for(browser: WebDriver, what: str, check: Callable[[WebDriver], Any], timeout: float = 60) -> Any:
    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.5).until(check)
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what} at {browser.current_url}") from None


def page_text(browser: WebDriver) -> str:
    return str(browser.find_element(By.TAG_NAME, "body").text)


@pytest.fixture
def ran_wave(sim_factory: Any, standalone_factory: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    sim = sim_factory(size=8, time_scale=3000.0)
    sim.faults(fail_next={"UPGRADE_VCENTER": 1}, task_failure_retryable=False)
    plan = write_plan(tmp_path / "rollout.yaml")
    af = standalone_factory(sim, extra_env={"RCE_ROLLOUT_PLAN": str(plan)})
    rest: AirflowRest = af.start()
    rest.wait_for_dag(DAG_ID)
    rest.unpause(DAG_ID)
    run_id = rest.trigger(DAG_ID, {"target_version": TARGET})
    assert rest.wait_run(DAG_ID, run_id, timeout=420) == "failed"  # stopped at the canary
    yield {"rest": rest, "af": af, "run_id": run_id, "base": f"http://localhost:{af.local.api_port}"}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def shot(browser: WebDriver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)
    return path


def login(browser: WebDriver, base: str, password: str) -> None:
    browser.get(base + "/")
    user = wait_for(browser, "the login form", lambda b: b.find_elements(By.NAME, "username"))[0]
    user.send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(
        browser,
        "the login to finish",
        lambda b: "/auth/login" not in b.current_url and "Dags" in page_text(b),
    )


def test_grid_shows_sddc_ids_and_the_params_form_validates(
    ran_wave: dict[str, Any], browser: WebDriver, tmp_path: Path
) -> None:
    base, run_id, rest = ran_wave["base"], ran_wave["run_id"], ran_wave["rest"]
    login(browser, base, ran_wave["af"].local.password())

    browser.get(f"{base}/dags/{DAG_ID}/runs/{run_id}")
    wait_for(browser, "the grid", lambda b: "canary" in page_text(b) and "bulk" in page_text(b))
    shot(browser, tmp_path, "grid")

    tis = {(ti["task_id"], ti["map_index"]): ti for ti in rest.task_instances(DAG_ID, run_id)}
    failed = tis["canary.upgrade_vcenter", 0]
    assert failed["state"] == "failed" and failed["rendered_map_index"] == SDDCS[0], failed
    assert tis["canary.rollback", 0]["rendered_map_index"] == SDDCS[0]
    browser.get(f"{base}/dags/{DAG_ID}/runs/{run_id}/tasks/canary.upgrade_vcenter/mapped")
    wait_for(browser, "the failed task labelled by its SDDC id", lambda b: SDDCS[0] in page_text(b))
    shot(browser, tmp_path, "mapped")

    runs_before = runs(rest)
    browser.get(f"{base}/dags/{DAG_ID}")
    trigger = wait_for(
        browser,
        "the Trigger button",
        lambda b: [e for e in b.find_elements(By.TAG_NAME, "button") if e.text.strip() == "Trigger"],
    )[0]
    trigger.click()
    field = wait_for(
        browser, "the target_version field", lambda b: b.find_elements(By.ID, "element_target_version")
    )[0]
    field.clear()
    field.send_keys("not-a-version")
    trigger_button(browser).click()
    wait_for(
        browser,
        "the refusal of a malformed release",
        lambda b: "does not match" in page_text(b) or "not valid" in page_text(b).lower(),
        timeout=30,
    )
    assert "target_version" in page_text(browser), "the refusal does not name the param"
    shot(browser, tmp_path, "params-invalid")
    assert runs(rest) == runs_before, "a malformed release started a run"
    field = browser.find_element(By.ID, "element_target_version")
    field.clear()
    field.send_keys(TARGET)
    trigger_button(browser).click()
    wait_for(browser, "a new run", lambda _b: runs(rest) > runs_before, timeout=30)
    shot(browser, tmp_path, "params-accepted")


def runs(rest: AirflowRest) -> int:
    return len(rest.request("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"])


def trigger_button(browser: WebDriver) -> Any:
    """The dialog's own Trigger button (the page's header has one too: the dialog's is last)."""
    return [e for e in browser.find_elements(By.TAG_NAME, "button") if e.text.strip() == "Trigger"][-1]
