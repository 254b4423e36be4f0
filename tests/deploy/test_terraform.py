"""deploy/aws: formatted, initialised offline from the local provider mirror, valid, and
applied then destroyed against a local moto server (no AWS account, no internet)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serving.server import free_port

ROOT = Path(__file__).resolve().parents[2]
MIRRORS = ("/opt/tf-plugins", "~/.terraform.d/plugins", "/usr/share/terraform/plugins",
           "/usr/local/share/terraform/plugins")
SERVICES = ("s3", "sts", "iam", "kms", "ecr", "sagemaker", "apigateway", "logs", "budgets")


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
    result = subprocess.run([terraform, *args, "-no-color"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"terraform {args[0]}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_terraform_applies_and_destroys_against_moto(tmp_path: Path) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    source = ROOT / "deploy" / "aws"
    tf(["fmt", "-check", "-recursive", str(source)], ROOT)
    work = tmp_path / "aws"
    shutil.copytree(source, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    tf(["init", "-input=false", "-plugin-dir", str(plugin_dir())], work)
    tf(["validate"], work)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
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
        variables = ["-var", "budget_email=ops@example.org", "-var", "create_budget=false"]
        tf(["apply", "-auto-approve", "-input=false", *variables], work)
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
        tf(["destroy", "-auto-approve", "-input=false", *variables], work)
        assert not {data} & {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert boto3.client("apigateway", **aws).get_rest_apis()["items"] == []
    finally:
        server.stop()
