"""docker-compose.yaml, checked without Docker: it is a valid Compose file (the vendored
Compose Specification schema), it has the shape of Airflow's official file (services,
health checks, depends_on conditions, scalable workers), everything it builds or mounts
is in the repo, every AIRFLOW__ variable is a real option of the pinned Airflow, and no
password has a committed default."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from _compose import (
    COMPOSE_FILE,
    REPO,
    bind_mounts,
    defaulted_variables,
    env_of,
    host_path,
    interpolate,
    required_variables,
)

SCHEMA_FILE = REPO / "include" / "compose" / "compose-spec.json"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-worker": "celery worker",
    "airflow-triggerer": "triggerer",
}
OBSERVABILITY_SERVICES = {"rce-exporter", "prometheus", "grafana"}
LONG_RUNNING = {*AIRFLOW_SERVICES, "postgres", "redis", "rce-sim", *OBSERVABILITY_SERVICES}
SECRETS = (
    "_AIRFLOW_WWW_USER_PASSWORD",
    "POSTGRES_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "RCE_SIM_TOKEN",
    "GRAFANA_ADMIN_PASSWORD",
)
# Options of [celery_broker_transport_options] that Airflow passes through to kombu unlisted.
KOMBU_TRANSPORT_OPTIONS = {"global_keyprefix"}
_ENV_KEY = re.compile(r"^AIRFLOW__(?P<section>[A-Z0-9_]+?)__(?P<key>[A-Z0-9_]+)$")


# ------------------------------------------------------------------------------- the schema


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


def test_compose_file_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize(
    ("break_it", "path"),
    [
        (lambda c: c["services"]["airflow-worker"].update(helthcheck={}), "services/airflow-worker"),
        (
            lambda c: c["services"]["airflow-scheduler"]["depends_on"]["airflow-init"].update(
                condition="service_done"
            ),
            "services/airflow-scheduler/depends_on",
        ),
        (lambda c: c.update(servces={}), ""),
    ],
)
def test_schema_refuses_a_broken_compose_file(compose: dict[str, Any], break_it: Any, path: str) -> None:
    broken = copy.deepcopy(compose)
    break_it(broken)
    errors = list(validator().iter_errors(broken))
    assert errors, "the schema accepted a broken file: it is not checking"
    assert any("/".join(map(str, e.absolute_path)).startswith(path) for e in errors)


# ------------------------------------------------------------------------ the official shape


def test_has_the_services_of_airflows_official_file_plus_the_simulator(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*LONG_RUNNING, "airflow-init"}
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command, name
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"].startswith("redis:7.2")
    env = env_of(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert interpolate(env["AIRFLOW__CELERY__BROKER_URL"]).startswith("redis://")
    assert "@postgres/airflow" in interpolate(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = compose["services"][name].get("healthcheck")
        assert check and check["test"] and {"interval", "retries"} <= set(check), name


def test_depends_on_conditions_follow_the_official_file(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        deps = services[name]["depends_on"]
        assert deps["postgres"] == {"condition": "service_healthy"}, name
        assert deps["redis"] == {"condition": "service_healthy"}, name
        if name != "airflow-init":
            assert deps["airflow-init"] == {"condition": "service_completed_successfully"}, name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}
    for name in ("airflow-worker", "airflow-triggerer"):  # they call the SDDC API
        assert services[name]["depends_on"]["rce-sim"] == {"condition": "service_healthy"}
    for name, service in services.items():  # every dependency is a defined service
        assert set(service.get("depends_on") or {}) <= set(services), name


def test_workers_scale_with_the_scale_flag(compose: dict[str, Any]) -> None:
    worker = compose["services"]["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker, "would collide under --scale"
    assert env_of(worker)["DUMB_INIT_SETSID"] == "0"


def test_every_airflow_component_shares_the_secrets_that_must_match(compose: dict[str, Any]) -> None:
    # the execution API's JWTs are signed and checked by different components; trigger kwargs
    # and connections are encrypted by one and read by another
    values = {
        name: (
            env_of(compose["services"][name]).get("AIRFLOW__API_AUTH__JWT_SECRET"),
            env_of(compose["services"][name]).get("AIRFLOW__CORE__FERNET_KEY"),
        )
        for name in (*AIRFLOW_SERVICES, "airflow-init")
    }
    assert len(set(values.values())) == 1 and None not in next(iter(values.values())), values


# --------------------------------------------------------- builds, images, mounts, variables


def test_every_service_image_is_built_from_the_repo_or_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            image = interpolate(service["image"])
            assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"
            continue
        spec = {"context": build} if isinstance(build, str) else build
        context = REPO / interpolate(spec.get("context", "."))
        dockerfile = context / spec.get("dockerfile", "Dockerfile")
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_every_mounted_path_exists_in_the_repo(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    mounts = {
        (source, target)
        for service in compose["services"].values()
        for source, target in bind_mounts(service, named)
    }
    assert ("./include", "/opt/airflow/include") in mounts and ("./dags", "/opt/airflow/dags") in mounts
    for source, _target in mounts:
        assert source.startswith("."), f"{source}: a host path outside the repo"
        assert (COMPOSE_FILE.parent / source).exists(), f"mounted path {source} does not exist"
    for service in compose["services"].values():  # named volumes are declared at the top level
        for volume in service.get("volumes") or []:
            source = interpolate(volume).split(":")[0] if isinstance(volume, str) else ""
            if source and not source.startswith((".", "/")):
                assert source in named, source


def test_every_airflow_component_gets_the_preloading_local_settings(compose: dict[str, Any]) -> None:
    """$AIRFLOW_HOME/config/airflow_local_settings.py (rce_lib.airflow_support.preload), in the
    compose file's mounts and in the image."""
    named = set(compose.get("volumes") or {})
    wanted = (REPO / "config" / "airflow_local_settings.py").resolve()
    for name in AIRFLOW_SERVICES:
        seen = host_path(compose["services"][name], named, "/opt/airflow/config/airflow_local_settings.py")
        assert seen == wanted, f"{name} sees {seen}"
    assert "COPY --chown=airflow:0 config /opt/airflow/config" in (REPO / "Dockerfile").read_text()


@cache
def airflow_options() -> dict[str, set[str]]:
    """Every option of the pinned Airflow's config template (providers' sections included)."""
    from airflow.configuration import retrieve_configuration_description

    described = retrieve_configuration_description(include_airflow=True, include_providers=True)
    return {section: set(body.get("options", {})) for section, body in described.items()}


def unknown_airflow_variables(env: dict[str, str] | list[str]) -> list[str]:
    """The AIRFLOW__SECTION__KEY names among `env` that name no option of the pinned Airflow."""
    options = airflow_options()

    def known(name: str) -> bool:
        match = _ENV_KEY.match(name)
        if match is None:
            return False
        section, key = match.group("section").lower(), match.group("key").lower()
        if section == "celery_broker_transport_options" and key in KOMBU_TRANSPORT_OPTIONS:
            return True
        return key in options.get(section, set())

    # AIRFLOW__S__K_CMD / _SECRET read the value of [s] k from a command / secrets backend
    return [
        name
        for name in env
        if name.startswith("AIRFLOW__")
        and not known(name)
        and not (name.endswith(("_CMD", "_SECRET")) and known(name.rsplit("_", 1)[0]))
    ]


def test_every_airflow_variable_names_a_real_option(compose: dict[str, Any]) -> None:
    names = {name for service in compose["services"].values() for name in env_of(service)}
    assert len([n for n in names if n.startswith("AIRFLOW__")]) >= 10
    assert unknown_airflow_variables(sorted(names)) == []


def test_the_native_topology_sets_only_real_options_too(tmp_path: Path) -> None:
    from rce_lib.devenv.airflow_distributed import DistributedAirflow

    native = DistributedAirflow(home=tmp_path, sim_url="http://127.0.0.1:9", sim_token="t")
    env = native.env()
    ours = [name for name, value in env.items() if os.environ.get(name) != value]  # not inherited
    assert "AIRFLOW__CORE__EXECUTOR" in ours and len(ours) > 20
    assert unknown_airflow_variables(ours) == []


@pytest.mark.parametrize(
    "name",
    [
        "AIRFLOW__CORE__EXECUTER",  # typo of a key
        "AIRFLOW__COR__EXECUTOR",  # typo of a section
        "AIRFLOW__CELERY__VISIBILITY_TIMEOUT",  # right key, wrong section
        "AIRFLOW__CORE",  # no key at all
        "AIRFLOW__CORE__EXECUTOR_CMD_SECRET",  # one suffix only
    ],
)
def test_a_misspelt_airflow_variable_is_caught(name: str) -> None:
    good = [
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD",
        "AIRFLOW__API_AUTH__JWT_SECRET",
    ]
    assert unknown_airflow_variables([name, *good]) == [name]


# ----------------------------------------------------------------------- secrets and airflow-init


def test_no_password_has_a_committed_default(compose_text: str) -> None:
    defaults = defaulted_variables(compose_text)
    assert not [v for v in defaults if any(s in v.upper() for s in ("PASSWORD", "SECRET", "KEY", "TOKEN"))]
    assert set(SECRETS) <= required_variables(compose_text)
    example = (REPO / ".env.example").read_text()
    for secret in SECRETS:
        assert re.search(rf"^{secret}=$", example, re.M), f".env.example must leave {secret} empty"
    assert ".env" in (REPO / ".gitignore").read_text().split()


def init_script(compose: dict[str, Any]) -> str:
    command = compose["services"]["airflow-init"]["command"]
    assert command[0] == "-c"
    return interpolate(command[1])


def test_airflow_init_script_is_valid_bash(compose: dict[str, Any]) -> None:
    done = subprocess.run(["bash", "-n"], input=init_script(compose), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_airflow_init_migrates_and_creates_pools_connections_and_the_admin(compose: dict[str, Any]) -> None:
    init = compose["services"]["airflow-init"]
    env = env_of(init)
    script = init_script(compose)
    assert env["_AIRFLOW_DB_MIGRATE"] == "true" and "/entrypoint airflow version" in script
    # the pools file is the repo's include/pools.json, through the include mount
    assert "airflow pools import /opt/airflow/include/pools.json" in script
    assert (REPO / "include" / "pools.json").is_file()
    assert "airflow connections add rce_state" in script and "airflow connections add sddc_api" in script
    assert "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script and "_AIRFLOW_WWW_USER_PASSWORD" in env
    # the ledger's database named by rce_state is the one the postgres init script creates
    ledger_db = re.search(r"--conn-uri \"postgresql://[^\"]*@postgres:5432/(\w+)\"", script)
    assert ledger_db is not None
    sql = "\n".join(p.read_text() for p in (REPO / "docker" / "postgres-init").glob("*.sql"))
    assert f"CREATE DATABASE {ledger_db.group(1)}" in sql
