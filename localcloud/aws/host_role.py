"""The hosts' instance role as the README documents it, in the local cloud's IAM: role and
instance profile `deployer-host` (the launch templates name that profile), trusted by EC2, with
the stack's HostPolicy (output HostPolicyArn) and AmazonSSMManagedInstanceCore attached.
`deployer doctor` reads it back; the permission checks of the hosts' calls use it."""

from __future__ import annotations

import json
from typing import Any

HOST_ROLE = "deployer-host"
SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
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
