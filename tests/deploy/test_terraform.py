"""deploy/aws: formatted, initialised offline from the local provider mirror, valid, and
applied then destroyed against a local moto server (no AWS account, no internet), the web tier
(VPC, ECS Fargate behind a load balancer, RDS, Secrets Manager) included."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mrimaster.serving.config import parse_key, parse_proxies
from tests.deploy.commands import entrypoint_argv, parse_command
from tests.serving.server import free_port

ROOT = Path(__file__).resolve().parents[2]
MIRRORS = ("/opt/tf-plugins", "~/.terraform.d/plugins", "/usr/share/terraform/plugins",
           "/usr/local/share/terraform/plugins")
SERVICES = ("s3", "sts", "iam", "kms", "ecr", "sagemaker", "apigateway", "logs", "budgets",
            "ec2", "ecs", "elbv2", "rds", "secretsmanager")
# moto cannot emulate AWS Budgets' notifications; a throw-away stack must be destroyable
VARIABLES = ["-var", "budget_email=ops@example.org", "-var", "create_budget=false",
             "-var", "deletion_protection=false", "-var", "secret_recovery_days=0"]
# the secrets of a task's `db upgrade` container (it creates the first admin)
MIGRATE_SECRETS = {"MRIMASTER_DATABASE_URL", "MRIMASTER_SECRET_KEY", "MRIMASTER_ADMIN_PASSWORD"}


def plugin_dir() -> Path:
    """The local provider mirror: MRIMASTER_TF_PLUGIN_DIR, else a usual place that holds
    registry.terraform.io/hashicorp/aws."""
    for candidate in (os.environ.get("MRIMASTER_TF_PLUGIN_DIR"), *MIRRORS):
        if candidate:
            path = Path(candidate).expanduser()
            if (path / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
                return path
    pytest.fail("no local Terraform provider mirror with hashicorp/aws; set "
                "MRIMASTER_TF_PLUGIN_DIR")


def tf(args: list[str], cwd: Path, timeout: float = 600) -> str:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.fail("terraform is not installed")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "TF_IN_AUTOMATION": "1",
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    proc = subprocess.Popen([terraform, *args, "-no-color"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    RUNNING.add(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()  # a no-op once it has exited
        RUNNING.discard(proc)
    assert proc.returncode == 0, f"terraform {args[0]}:\n{out}\n{err}"
    return out


RUNNING: set[subprocess.Popen[str]] = set()
"""Processes started by these tests: killed at the end of the session (see conftest.py), so a
run stopped early leaves no terraform or moto behind."""


_BACKGROUND: dict[str, Any] = {}


def start_in_background() -> None:
    """Start :func:`apply_and_destroy` in a thread, once. The provider spends most of its
    three minutes in its own waiters (RDS, the load balancer, S3 lifecycle rules), so
    ``tests/deploy/conftest.py`` starts it when the test is collected and runs the test last:
    the waits overlap the other tests."""
    if "thread" in _BACKGROUND:
        return
    folder = Path(tempfile.mkdtemp(prefix="mrimaster-terraform-"))

    def work() -> None:
        try:
            apply_and_destroy(folder)
        except BaseException as exc:  # pytest's Failed too: the test re-raises it
            _BACKGROUND["error"] = exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    thread = threading.Thread(target=work, name="terraform-on-moto", daemon=True)
    _BACKGROUND["thread"] = thread
    thread.start()


def test_terraform_applies_and_destroys_against_moto() -> None:
    """:func:`apply_and_destroy`, run in the background since collection; this waits for it
    and fails with what it found."""
    start_in_background()
    thread = _BACKGROUND["thread"]
    thread.join(timeout=900)
    assert not thread.is_alive(), "terraform apply and destroy on moto took over 15 minutes"
    if "error" in _BACKGROUND:
        raise _BACKGROUND["error"]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's server in its own process (moto's state is per process: other tests' in-process
    moto servers never see this stack); yields its endpoint URL."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            text=True)
    RUNNING.add(proc)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, "moto's server exited at start"
                assert time.monotonic() < deadline, "moto's server did not answer in 60 s"
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        RUNNING.discard(proc)


def apply_and_destroy(tmp_path: Path) -> None:
    """fmt, init from the mirror, validate, apply against moto, check what was made, destroy,
    check that nothing is left."""
    import boto3

    source = ROOT / "deploy" / "aws"
    tf(["fmt", "-check", "-recursive", str(source)], ROOT)
    work = tmp_path / "aws"
    shutil.copytree(source, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    tf(["init", "-input=false", "-plugin-dir", str(plugin_dir())], work)
    tf(["validate"], work)
    with moto_server() as endpoint:
        endpoints = "\n".join(f'    {s} = "{endpoint}"' for s in SERVICES)
        (work / "moto_override.tf").write_text(f'''provider "aws" {{
  region                      = var.region
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {{
{endpoints}
  }}
}}
''')
        tf(["apply", "-auto-approve", "-input=false", *VARIABLES], work)
        outputs = json.loads(tf(["output", "-json"], work))
        aws = {"endpoint_url": endpoint, "region_name": "eu-west-1",
               "aws_access_key_id": "test", "aws_secret_access_key": "test"}
        s3 = boto3.client("s3", **aws)
        buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        data = outputs["data_bucket"]["value"]
        assert {data, outputs["artifacts_bucket"]["value"]} <= buckets
        assert s3.get_bucket_versioning(Bucket=data)["Status"] == "Enabled"
        block = s3.get_public_access_block(Bucket=data)["PublicAccessBlockConfiguration"]
        assert all(block.values())
        rule = s3.get_bucket_encryption(Bucket=data)["ServerSideEncryptionConfiguration"]
        assert rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        sm = boto3.client("sagemaker", **aws)
        config = sm.describe_endpoint_config(EndpointConfigName="mrimaster-serverless")
        assert "ServerlessConfig" in config["ProductionVariants"][0]
        assert sm.describe_endpoint(EndpointName="mrimaster")["EndpointName"] == "mrimaster"
        apis = boto3.client("apigateway", **aws).get_rest_apis()["items"]
        assert [a["name"] for a in apis] == ["mrimaster"]
        check_web_tier(aws, outputs, tmp_path)
        tf(["destroy", "-auto-approve", "-input=false", *VARIABLES], work)
        assert not {data} & {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert boto3.client("apigateway", **aws).get_rest_apis()["items"] == []
        check_web_tier_gone(aws)


def check_web_tier(aws: dict[str, str], outputs: dict[str, Any], tmp_path: Path) -> None:
    """What the applied web tier must be: app and worker tasks in the private subnets running
    the CLI's commands after `db upgrade`, secrets only from Secrets Manager (each service
    reading only its own), the data bucket as the store, the load balancer's subnets as the
    trusted proxies, and an encrypted, private database reachable from the tasks only."""
    import boto3
    from cryptography.fernet import Fernet
    from sqlalchemy.engine import make_url

    value = {k: v["value"] for k, v in outputs.items()}
    ec2, ecs, elbv2 = (boto3.client(n, **aws) for n in ("ec2", "ecs", "elbv2"))
    rds, secrets, iam = (boto3.client(n, **aws) for n in ("rds", "secretsmanager", "iam"))
    private = set(value["private_subnet_ids"])
    public_cidrs = value["public_subnet_cidrs"]
    subnets = ec2.describe_subnets()["Subnets"]
    public = {s["SubnetId"] for s in subnets if s["CidrBlock"] in public_cidrs}
    assert len(private) == len(public) == 2 and not private & public

    # the secrets: generated, KMS-encrypted, well-formed for the settings that read them
    by_env = {}
    for entry in secrets.list_secrets()["SecretList"]:
        assert entry.get("KmsKeyId"), entry["Name"]
        by_env[entry["Description"].split()[0]] = entry["ARN"]
    assert set(by_env) == {"MRIMASTER_DATABASE_URL", "MRIMASTER_SECRET_KEY",
                           "MRIMASTER_ADMIN_PASSWORD", "MRIMASTER_LINK_KEY"}
    secret = {k: secrets.get_secret_value(SecretId=arn)["SecretString"]
              for k, arn in by_env.items()}
    url = make_url(secret["MRIMASTER_DATABASE_URL"])
    assert (url.drivername, url.username, url.host, url.port, url.database) == (
        "postgresql+psycopg", "mrimaster", value["db_address"], 5432, "mrimaster")
    assert url.query["sslmode"] == "require"
    assert url.password and len(url.password) == 40 and url.password.isalnum()
    assert len(parse_key(secret["MRIMASTER_SECRET_KEY"].encode(), "the secret")) >= 32
    fernet = Fernet(secret["MRIMASTER_LINK_KEY"].encode())
    assert fernet.decrypt(fernet.encrypt(b"link")) == b"link"
    assert len(secret["MRIMASTER_ADMIN_PASSWORD"]) == 32
    assert len(set(secret.values())) == 4

    # the services: two tasks each, private, the app behind the load balancer
    cluster = value["ecs_cluster"]
    services = {s["serviceName"]: s for s in ecs.describe_services(
        cluster=cluster, services=["app", "worker"])["services"]}
    expected_secrets = {"app": {"MRIMASTER_DATABASE_URL", "MRIMASTER_SECRET_KEY",
                                "MRIMASTER_LINK_KEY"},
                        "worker": {"MRIMASTER_DATABASE_URL", "MRIMASTER_SECRET_KEY"}}
    for name, service in services.items():
        assert service["desiredCount"] >= 2 and service["launchType"] == "FARGATE"
        network = service["networkConfiguration"]["awsvpcConfiguration"]
        assert set(network["subnets"]) == private and network["assignPublicIp"] == "DISABLED"
        task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
        containers = {c["name"]: c for c in task["taskDefinition"]["containerDefinitions"]}
        assert set(containers) == {name, "migrate"}
        main, migrate = containers[name], containers["migrate"]
        # `db upgrade` first, then the service's own command, as the CLI parses them
        args = parse_command(entrypoint_argv(migrate["command"], tmp_path))
        assert (args.command, args.db_command) == ("db", "upgrade")
        assert migrate["essential"] is False
        assert main["dependsOn"] == [{"containerName": "migrate", "condition": "SUCCESS"}]
        args = parse_command(entrypoint_argv(main["command"], tmp_path))
        if name == "app":
            assert (args.command, args.no_worker, args.port) == ("serve", True, 8000)
        else:
            assert args.command == "worker"
        # secrets from Secrets Manager only; the admin password for the migration alone
        assert {s["name"] for s in main["secrets"]} == expected_secrets[name]
        assert {s["name"] for s in migrate["secrets"]} == MIGRATE_SECRETS
        for ref in (*main["secrets"], *migrate["secrets"]):
            assert ref["valueFrom"] == by_env[ref["name"]]
        environment = {e["name"]: e["value"] for e in main["environment"]}
        assert not [k for k in environment if re.search(r"PASSWORD|SECRET|_KEY$", k)]
        assert environment["MRIMASTER_STORE_URL"] == f"s3://{value['data_bucket']}/app"
        assert environment["MRIMASTER_AUTO_MIGRATE"] == "0"
        assert parse_proxies(environment["MRIMASTER_TRUSTED_PROXIES"]) == tuple(
            ipaddress.ip_network(c) for c in public_cidrs)
        # the execution role may read this service's secrets and no other
        role = task["taskDefinition"]["executionRoleArn"].rsplit("/", 1)[-1]
        statements = iam.get_role_policy(RoleName=role, PolicyName="start-task")[
            "PolicyDocument"]["Statement"]
        readable = next(s["Resource"] for s in statements
                        if s["Action"] == "secretsmanager:GetSecretValue")
        assert set(readable) == {by_env[k] for k in expected_secrets[name] | MIGRATE_SECRETS}
        assert task["taskDefinition"]["taskRoleArn"] != task["taskDefinition"][
            "executionRoleArn"]

    # the load balancer: in the public subnets, port 80 to the app's port 8000, /healthz
    (lb,) = elbv2.describe_load_balancers(Names=["mrimaster"])["LoadBalancers"]
    assert {z["SubnetId"] for z in lb["AvailabilityZones"]} == public
    (listener,) = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert listener["Port"] == 80 and listener["DefaultActions"][0]["Type"] == "forward"
    (group,) = elbv2.describe_target_groups(
        TargetGroupArns=[listener["DefaultActions"][0]["TargetGroupArn"]])["TargetGroups"]
    assert (group["Port"], group["TargetType"], group["HealthCheckPath"]) == (
        8000, "ip", "/healthz")
    assert services["app"]["loadBalancers"][0]["containerPort"] == 8000

    # the database: encrypted, private, in the private subnets, reachable from the tasks only
    (db,) = rds.describe_db_instances(DBInstanceIdentifier="mrimaster")["DBInstances"]
    assert db["StorageEncrypted"] and not db["PubliclyAccessible"]
    assert db["Engine"] == "postgres" and db["DeletionProtection"] is False  # the test's var
    assert {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]} == private
    (db_group,) = db["VpcSecurityGroups"]
    (rules,) = ec2.describe_security_groups(
        GroupIds=[db_group["VpcSecurityGroupId"]])["SecurityGroups"]
    task_groups = {g for s in services.values()
                   for g in s["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"]}
    ingress = rules["IpPermissions"]
    assert all(r["FromPort"] == r["ToPort"] == 5432 and not r.get("IpRanges") for r in ingress)
    assert {p["GroupId"] for r in ingress for p in r["UserIdGroupPairs"]} == task_groups


def check_web_tier_gone(aws: dict[str, str]) -> None:
    import boto3

    rds = boto3.client("rds", **aws)
    assert rds.describe_db_instances()["DBInstances"] == []
    ecs = boto3.client("ecs", **aws)
    clusters = ecs.describe_clusters(clusters=["mrimaster"])["clusters"]
    assert all(c["status"] == "INACTIVE" for c in clusters)
    assert boto3.client("elbv2", **aws).describe_load_balancers()["LoadBalancers"] == []
    assert boto3.client("secretsmanager", **aws).list_secrets()["SecretList"] == []
    vpcs = boto3.client("ec2", **aws).describe_vpcs(
        Filters=[{"Name": "tag:Name", "Values": ["mrimaster"]}])["Vpcs"]
    assert vpcs == []


def test_every_checkov_skip_states_its_reason() -> None:
    """checkov runs in CI (`mrimaster.sh check`); a skip there is allowed only with a reason."""
    skips = [m for tf_file in sorted((ROOT / "deploy" / "aws").glob("*.tf"))
             for m in re.finditer(r"#checkov:skip=([^:\n]*)(?::(.*))?", tf_file.read_text())]
    assert skips
    for skip in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", skip.group(1)), skip.group(0)
        assert skip.group(2) and len(skip.group(2).split()) >= 4, skip.group(0)
