"""deploy/compose.yaml, without a Docker daemon: parsed as YAML (anchors and merge keys resolved
as Compose resolves them) and checked for what a deployment relies on: replicas behind one
proxy, secrets from the environment only, an S3 store, the proxy as the only trusted forwarder,
a migration before any app or worker starts, and commands the CLI knows."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mrimaster.serving.config import load_serve_config, parse_proxies
from mrimaster.serving.deps import forwarded_client
from tests.deploy.commands import ROOT, entrypoint_argv, parse_command

DEPLOY = ROOT / "deploy"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# the services that run the image deploy/Dockerfile builds
MRIMASTER = sorted(name for name, svc in SERVICES.items()
                   if svc.get("build", {}).get("dockerfile") == "deploy/Dockerfile")
SECRETS = {"POSTGRES_PASSWORD", "MRIMASTER_ADMIN_PASSWORD", "MRIMASTER_SECRET_KEY",
           "MRIMASTER_LINK_KEY", "MINIO_ROOT_PASSWORD", "MRIMASTER_S3_SECRET_KEY",
           "MINIO_KMS_SECRET_KEY"}
# ${NAME}, ${NAME:?message}, ${NAME:-default}; $${...} is a literal dollar, not interpolation
REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?")


def strings(node: Any) -> list[str]:
    """Every string in a parsed YAML tree, keys included."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*strings(k), *strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service].get("environment", {}).items()}


def test_the_image_runs_as_app_worker_and_migration() -> None:
    assert MRIMASTER == ["app", "migrate", "worker"]
    assert len({SERVICES[s]["image"] for s in MRIMASTER}) == 1  # one image, built once


@pytest.mark.parametrize("service", ["app", "worker"])
def test_app_and_worker_run_several_replicas(service: str) -> None:
    svc = SERVICES[service]
    assert svc["deploy"]["replicas"] >= 2
    assert "container_name" not in svc  # a fixed name allows one container only


def test_the_proxy_is_the_only_way_in(tmp_path: Path) -> None:
    published = {name for name, svc in SERVICES.items() if svc.get("ports")}
    assert published == {"proxy"}
    # on the host's loopback, to the proxy's listeners (:80 the app, :5000 MLflow)
    ports = [str(p).split(":") for p in SERVICES["proxy"]["ports"]]
    assert all(host == "127.0.0.1" for host, _, _ in ports)
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    assert {f":{container}" for _, _, container in ports} <= set(
        re.findall(r"^(:\d+) \{", caddyfile, re.M))
    # the upstream is every replica of the app service, on the port its command listens on
    assert re.search(r"dynamic a app 8000\b", caddyfile)
    assert parse_command(entrypoint_argv(SERVICES["app"]["command"], tmp_path)).port == 8000


def test_secrets_come_from_the_environment_only() -> None:
    references = REFERENCE.findall("\n".join(strings(COMPOSE)))  # comments left out
    referenced = {name for name, _ in references}
    assert referenced >= SECRETS
    # every secret, wherever it is used, is required (${NAME:?...}): an unset one stops `up`
    assert {(name, op) for name, op in references if name in SECRETS} == {
        (name, ":?") for name in SECRETS}
    # no other variable is used bare (an unset one would silently become "")
    assert all(op in (":?", ":-") for _, op in references)
    # no literal secret: a variable named like one holds a reference, and no string of the
    # file holds a value that looks like a key or password
    for name, svc in SERVICES.items():
        for key, value in svc.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET|(?<!ACCESS)_KEY$", key):  # an access key ID is a name
                assert REFERENCE.search(str(value)), f"{name}: {key} is written literally"
    assert not [s for s in strings(COMPOSE) if re.fullmatch(r"[0-9a-f]{32,}|[A-Za-z0-9+/]{40,}=*",
                                                            s)]
    # the template names exactly the required variables, each empty; .env is never committed
    template = dict(line.split("=", 1) for line in (DEPLOY / "env.example").read_text()
                    .splitlines() if line and not line.startswith("#"))
    required = {name for name, op in references if op == ":?"}
    assert required <= set(template) and all(template[name] == "" for name in required)
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def test_files_go_to_the_s3_store_that_minio_init_prepares() -> None:
    init = env("minio-init")
    bucket = init["MRIMASTER_BUCKET"]
    urls = {env(s)["MRIMASTER_STORE_URL"] for s in MRIMASTER}
    assert len(urls) == 1
    url = urls.pop()
    assert url.startswith(f"s3://{bucket}/")
    prefix = url.removeprefix(f"s3://{bucket}/").strip("/")
    assert prefix
    for s in MRIMASTER:
        assert env(s)["MRIMASTER_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env(s)["AWS_ACCESS_KEY_ID"] == init["MRIMASTER_S3_ACCESS_KEY"]
        assert env(s)["AWS_SECRET_ACCESS_KEY"] == init["MRIMASTER_S3_SECRET_KEY"]
    # the app's MinIO user may touch the store's prefix only
    policy = json.loads((DEPLOY / "minio-policy.json").read_text())
    objects, listing = policy["Statement"]
    assert objects["Resource"] == [f"arn:aws:s3:::{bucket}/{prefix}/*"]
    assert "s3:DeleteBucket" not in objects["Action"]
    assert listing["Resource"] == [f"arn:aws:s3:::{bucket}"]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == [f"{prefix}/*"]
    # MinIO answers the store's SSE request only with a KMS key configured
    assert "MINIO_KMS_SECRET_KEY" in env("minio")
    script = (DEPLOY / "minio-init.sh").read_text()
    assert 'mc encrypt set sse-s3 "store/$MRIMASTER_BUCKET"' in script
    assert 'mc mb --ignore-existing "store/$MRIMASTER_BUCKET"' in script


def test_the_proxy_alone_is_trusted_for_forwarded_headers() -> None:
    proxy_ip = SERVICES["proxy"]["networks"]["edge"]["ipv4_address"]
    subnet = ipaddress.ip_network(COMPOSE["networks"]["edge"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(proxy_ip) in subnet
    trusted = parse_proxies(env("app")["MRIMASTER_TRUSTED_PROXIES"])
    assert trusted == (ipaddress.ip_network(proxy_ip),)
    # what the app then makes of a request: through the proxy, the client's address; from
    # anyone else on the network (another container), its own address, whatever it claims
    client = "203.0.113.7"
    assert forwarded_client(proxy_ip, client, trusted) == client
    neighbour = str(next(h for h in subnet.hosts() if str(h) != proxy_ip))
    assert forwarded_client(neighbour, client, trusted) == neighbour
    # the proxy and the app replicas share the edge network; workers are not on it
    assert "edge" in SERVICES["app"]["networks"]
    assert "edge" not in SERVICES["worker"]["networks"]


def test_the_migration_runs_once_before_app_and_worker(tmp_path: Path) -> None:
    migrate = SERVICES["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert "migrate" not in migrate["depends_on"]
    for s in ("app", "worker"):
        assert SERVICES[s]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
        assert env(s)["MRIMASTER_AUTO_MIGRATE"] == "0"  # they refuse a schema not current
        assert "MRIMASTER_ADMIN_PASSWORD" not in env(s)  # the migration creates the admin
    assert "MRIMASTER_ADMIN_PASSWORD" in env("migrate")
    args = parse_command(entrypoint_argv(migrate["command"], tmp_path))
    assert (args.command, args.db_command) == ("db", "upgrade")


def resolved(service: str, values: dict[str, str]) -> dict[str, str]:
    """The service's environment as Compose hands it over, ``values`` standing in for
    deploy/.env (``${NAME:-default}`` takes its default)."""
    def substitute(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        return values[name] if op == ":?" else values.get(name) or rest

    whole = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:[-?])([^}]*)\}")
    return {k: whole.sub(substitute, v) for k, v in env(service).items()}


def test_the_settings_accept_what_compose_hands_over(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    from mrimaster.serving.pacs_service import link_fernet

    values = {name: f"{name.lower()}-value" for name in SECRETS}
    values |= {"MRIMASTER_SECRET_KEY": "ab" * 32,
               "MRIMASTER_LINK_KEY": Fernet.generate_key().decode()}
    for service in MRIMASTER:
        variables = {**resolved(service, values), "MRIMASTER_DATA_ROOT": str(tmp_path)}
        config = load_serve_config(variables)
        assert config.store_url == "s3://mrimaster/store"
        assert config.s3_endpoint_url == "http://minio:9000"
        assert config.secret_key == bytes.fromhex("ab" * 32)
        assert config.database_url == ("postgresql+psycopg://mrimaster:"
                                       "postgres_password-value@db:5432/mrimaster")
        assert config.auto_migrate is False
        assert config.cookie_secure is False  # until the proxy serves HTTPS
    app = resolved("app", values)
    assert link_fernet(app)  # PACS pulls and sends work in the app
    assert load_serve_config({**resolved("migrate", values), "MRIMASTER_DATA_ROOT": str(
        tmp_path)}).admin_password == "mrimaster_admin_password-value"


def test_every_process_shares_one_database_and_key() -> None:
    for name in ("MRIMASTER_DATABASE_URL", "MRIMASTER_SECRET_KEY", "MRIMASTER_STORE_URL"):
        assert len({env(s)[name] for s in MRIMASTER}) == 1, name
    assert env("app")["MRIMASTER_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@db:5432/" in env("app")["MRIMASTER_DATABASE_URL"]


def test_commands_are_mrimaster_commands(tmp_path: Path) -> None:
    app = parse_command(entrypoint_argv(SERVICES["app"]["command"], tmp_path))
    assert (app.command, app.no_worker, app.host) == ("serve", True, "0.0.0.0")
    worker = parse_command(entrypoint_argv(SERVICES["worker"]["command"], tmp_path))
    assert worker.command == "worker"
    # a worker serves no HTTP: the image's /healthz check is off for it
    assert SERVICES["worker"]["healthcheck"] == {"disable": True}


def test_entrypoint_keeps_its_other_uses(tmp_path: Path) -> None:
    default = entrypoint_argv([], tmp_path)
    assert default == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert parse_command(default).no_worker is False  # one process does both, as before
    sagemaker = entrypoint_argv(["serve"], tmp_path, {"MRIMASTER_MODE": "sagemaker"})
    assert sagemaker == ["sagemaker", "--host", "0.0.0.0", "--port", "8080"]
    assert entrypoint_argv(["cleanup", "--grace-minutes", "60"], tmp_path) == [
        "cleanup", "--grace-minutes", "60"]
