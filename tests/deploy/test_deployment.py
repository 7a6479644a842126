"""The deployment files, checked offline (no Docker engine runs here): docker-compose.yml
against the compose-spec JSON schema and against MintCA's own settings and README, the
Dockerfile through a parser, and its HEALTHCHECK run against a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from app.config import Settings
from tests.integration.live import free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"
REPLICAS = ("mintca-1", "mintca-2")
KEK_SECRET = "mintca_kek"
MINTCA_VARIABLE = re.compile(r"\bMINTCA_[A-Z0-9_]+\b")
# Variables the README names that are not settings: the test suite's database and fuzzing
# depth, and the token `mintca enroll` reads from the environment.
NOT_SETTINGS = {"MINTCA_TEST_DATABASE_URL", "MINTCA_TOKEN", "MINTCA_FUZZ_EXAMPLES"}


def setting_variables() -> set[str]:
    return {f"MINTCA_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == name]


# --- docker-compose.yml ------------------------------------------------------------------------


def test_compose_file_follows_the_compose_spec_schema() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_are_postgres_a_one_shot_init_and_two_replicas(compose: dict[str, Any]) -> None:
    services = compose["services"]

    assert set(services) == {"postgres", "init", *REPLICAS}, sorted(services)
    assert services["init"]["command"][:2] == ["mintca", "init"], services["init"]
    assert services["init"]["restart"] == "no"
    assert services["init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    images = {services[name]["image"] for name in ("init", *REPLICAS)}
    assert len(images) == 1, images
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


@pytest.mark.parametrize("replica", REPLICAS)
def test_each_replica_waits_for_init_and_the_database_and_checks_ready(
    compose: dict[str, Any], replica: str
) -> None:
    service = compose["services"][replica]

    assert service["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "init": {"condition": "service_completed_successfully"},
    }
    assert "app.server.healthcheck" in service["healthcheck"]["test"], "GET /ready"
    script = " ".join(service["command"])
    assert f"mintca init --server-name {replica}" in script, "its own mtls server certificate"
    assert script.rstrip().endswith("exec mintca serve"), script


def test_replicas_share_the_database_and_the_kek_secret_but_not_a_data_volume(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    environments = [services[name]["environment"] for name in ("init", *REPLICAS)]

    assert all(env == environments[0] for env in environments), environments
    env = environments[0]
    assert env["MINTCA_DATABASE_URL"].startswith("postgresql+psycopg://"), env
    assert "@postgres:5432/" in env["MINTCA_DATABASE_URL"], env
    assert env["MINTCA_KEK_FILE"] == f"/run/secrets/{KEK_SECRET}", env
    assert "MINTCA_KEK" not in env, "the KEK comes as a secret, never in the environment"
    assert env["MINTCA_PUBLIC_TLS"] == "true", "enrollment tokens must not travel in clear"
    for name in ("init", *REPLICAS):
        assert services[name]["secrets"] == [KEK_SECRET], services[name]
    assert set(compose["secrets"]) == {KEK_SECRET}
    assert "file" in compose["secrets"][KEK_SECRET]
    volumes = [services[name]["volumes"][0].split(":")[0] for name in ("init", *REPLICAS)]
    assert len(set(volumes)) == len(volumes), f"each data dir its own volume: {volumes}"
    assert set(volumes) <= set(compose["volumes"]), compose["volumes"]
    published = [p.split(":")[0] for name in REPLICAS for p in services[name]["ports"]]
    assert len(set(published)) == len(published), published


def test_every_mintca_variable_in_the_compose_file_is_a_setting() -> None:
    named = set(MINTCA_VARIABLE.findall(COMPOSE.read_text()))

    assert named, "the compose file configures MintCA through MINTCA_* variables"
    assert named <= setting_variables(), sorted(named - setting_variables())


def test_readme_documents_exactly_the_settings() -> None:
    documented = set(MINTCA_VARIABLE.findall(README.read_text())) - NOT_SETTINGS

    assert documented <= setting_variables(), (
        f"not settings: {sorted(documented - setting_variables())}"
    )
    assert setting_variables() <= documented, (
        f"undocumented: {sorted(setting_variables() - documented)}"
    )


def docker_compose() -> list[str] | None:
    """`docker compose` or `docker-compose`, if one of them runs here."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run(
            [*command, "version"], capture_output=True, text=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return command
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = docker_compose()
    if command is None:
        pytest.skip("neither `docker compose` (plugin) nor `docker-compose` is installed")
    result = subprocess.run(
        [*command, "--file", str(COMPOSE), "--project-directory", str(ROOT), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "POSTGRES_PASSWORD": "checked-offline"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_slim(dockerfile: DockerfileParser) -> None:
    bases = instructions(dockerfile, "FROM")

    assert len(bases) >= 2, bases
    assert all(base.startswith("python:3.11-slim") for base in bases), bases


def test_dockerfile_runs_as_a_non_root_user(dockerfile: DockerfileParser) -> None:
    users = instructions(dockerfile, "USER")

    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users


def test_dockerfile_adds_nothing_from_urls(dockerfile: DockerfileParser) -> None:
    for value in instructions(dockerfile, "ADD"):
        assert "://" not in value, value


def test_dockerfile_cmd_runs_mintca_serve(dockerfile: DockerfileParser) -> None:
    (cmd,) = instructions(dockerfile, "CMD")

    assert json.loads(cmd) == ["mintca", "serve"]


def healthcheck_command(dockerfile: DockerfileParser) -> list[str]:
    (healthcheck,) = instructions(dockerfile, "HEALTHCHECK")
    exec_form = healthcheck[healthcheck.index("CMD") + len("CMD") :].strip()
    command: list[str] = json.loads(exec_form)
    return command


def run_healthcheck(
    command: list[str], *, bind: str, tls: bool, data_dir: Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """The image's health check, run here with the environment the container would have."""
    return subprocess.run(
        [sys.executable, *command[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,  # no .env there
        env={
            # This environment without the developer's MINTCA_* (coverage's variables stay).
            **{k: v for k, v in os.environ.items() if not k.startswith("MINTCA_")},
            "MINTCA_PUBLIC_BIND": bind,
            "MINTCA_PUBLIC_TLS": "true" if tls else "false",
            "MINTCA_DATA_DIR": str(data_dir),
        },
    )


@pytest.mark.integration
@pytest.mark.parametrize("tls", [False, True], ids=["public http", "public https"])
def test_the_image_healthcheck_passes_on_a_ready_server_and_fails_without_one(
    dockerfile: DockerfileParser,
    compose: dict[str, Any],
    initialised_settings: Settings,
    tmp_path: Path,
    tls: bool,
) -> None:
    command = healthcheck_command(dockerfile)
    assert command[0] == "python", "the slim image has no curl"
    for replica in REPLICAS:
        assert compose["services"][replica]["healthcheck"]["test"] == ["CMD", *command]
    extra_env = {"MINTCA_PUBLIC_TLS": "true"} if tls else {}
    process, server = start_server(
        initialised_settings, tmp_path / "serve.log", extra_env=extra_env
    )
    try:
        bind = server.public_url.split("://", 1)[1]
        checks = {
            "ready": run_healthcheck(
                command, bind=bind, tls=tls, data_dir=server.data_dir, cwd=tmp_path
            ),
            "nothing listening": run_healthcheck(
                command,
                bind=f"127.0.0.1:{free_port()}",
                tls=tls,
                data_dir=server.data_dir,
                cwd=tmp_path,
            ),
            "wrong scheme": run_healthcheck(
                command, bind=bind, tls=not tls, data_dir=server.data_dir, cwd=tmp_path
            ),
        }
    finally:
        stop_server(process)

    assert checks["ready"].returncode == 0, checks["ready"].stderr
    for name in ("nothing listening", "wrong scheme"):
        assert checks[name].returncode == 1, f"{name}: {checks[name].stderr}"
        assert checks[name].stderr.startswith("not ready: "), checks[name].stderr
