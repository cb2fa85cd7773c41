"""The hosts' instance role as the README documents it, in the local cloud's IAM: role and
instance profile `deployer-host` (the launch templates name that profile), trusted by EC2, with
the stack's HostPolicy (output HostPolicyArn) and AmazonSSMManagedInstanceCore attached.
`deployer doctor` reads it back; the permission checks of the hosts' calls use it
(`localcloud.aws.host_gate`). `grant_host_secrets` adds what an app's pinned secrets need."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from localcloud.aws.motoserver import ACCOUNT, REGION

HOST_ROLE = "deployer-host"
SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
# Parameter Store and Secrets Manager name characters (botocore's ssm and secretsmanager models).
_PARAMETER_NAME = r"/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*"
_SECRET_NAME = r"[A-Za-z0-9/_+=.@-]+"
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def create_host_role(iam: Any, host_policy_arn: str, name: str = HOST_ROLE) -> str:
    """Create the role and its instance profile (both `name`); returns the role's ARN."""
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))["Role"]
    iam.attach_role_policy(RoleName=name, PolicyArn=host_policy_arn)
    iam.attach_role_policy(RoleName=name, PolicyArn=SSM_CORE)
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return str(role["Arn"])


def host_secrets_policy(
    region: str,
    account: str,
    parameter_names: Iterable[str] = (),
    secret_names: Iterable[str] = (),
    key_arns: Iterable[str] = (),
) -> dict[str, Any]:
    """The statements the README tells operators to add to the hosts' role so hosts can fetch
    an app's pinned configuration and secrets: `ssm:GetParameter` on each named parameter and
    `secretsmanager:GetSecretValue` on each named secret (`NAME-??????`: a secret's ARN ends in a
    random 6-character suffix), and `kms:Decrypt` on the customer-managed keys they use, if any."""
    parameter_names, secret_names = list(parameter_names), list(secret_names)
    for field, names, pattern in (
        ("parameter_names", parameter_names, _PARAMETER_NAME),
        ("secret_names", secret_names, _SECRET_NAME),
    ):
        for name in names:
            if not re.fullmatch(pattern, name):
                raise ValueError(f"{field}: {name!r} is not a plain name (no wildcards, selectors or ARNs)")
    statements = []
    parameters = [f"arn:aws:ssm:{region}:{account}:parameter/{n.lstrip('/')}" for n in parameter_names]
    if parameters:
        statements.append(
            {
                "Sid": "ReadAppParameters",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": parameters,
            }
        )
    secrets = [f"arn:aws:secretsmanager:{region}:{account}:secret:{n}-??????" for n in secret_names]
    if secrets:
        statements.append(
            {
                "Sid": "ReadAppSecrets",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": secrets,
            }
        )
    keys = list(key_arns)
    for key in keys:
        if not re.fullmatch(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+", key):
            raise ValueError(f"key_arns: {key!r} is not a KMS key ARN")
    if keys:
        statements.append(
            {"Sid": "DecryptWithTheirKeys", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": keys}
        )
    if not statements:
        raise ValueError("grant_host_secrets: name a parameter_names, secret_names or key_arns entry")
    return {"Version": "2012-10-17", "Statement": statements}


def grant_host_secrets(
    iam: Any,
    parameter_names: Iterable[str] = (),
    secret_names: Iterable[str] = (),
    key_arns: Iterable[str] = (),
    *,
    region: str = REGION,
    account: str = ACCOUNT,
    role: str = HOST_ROLE,
    policy_name: str = "deployer-host-secrets",
) -> dict[str, Any]:
    """Attach `host_secrets_policy` to the hosts' role as an inline policy (replacing an earlier
    one of the same name); returns the document."""
    document = host_secrets_policy(region, account, parameter_names, secret_names, key_arns)
    iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(document))
    return document
