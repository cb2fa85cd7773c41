"""The one composition root: every adapter the core uses, built once per process from the
settings (`deployer.runtime.adapters()`) or by tests from their own clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployer.adapters.admissions import Admissions
from deployer.adapters.alarms import Alarms
from deployer.adapters.app_state import AppState
from deployer.adapters.apps import AppsStore
from deployer.adapters.command_results import CommandResults
from deployer.adapters.config_versions import ConfigVersions
from deployer.adapters.fleet import Fleet
from deployer.adapters.host_outcomes import HostOutcomesStore
from deployer.adapters.images import Images
from deployer.adapters.launch_templates import LaunchTemplates
from deployer.adapters.lifecycle_hooks import LifecycleHooks, ManagedInstances
from deployer.adapters.pointer import PointerStore
from deployer.adapters.proxy_metrics import ProxyMetrics
from deployer.adapters.rechecks import RecheckQueue
from deployer.adapters.releases import ReleasesStore
from deployer.adapters.stage_ticks import StageTicks
from deployer.adapters.tracked_commands import TrackedCommands
from deployer.aws import ClientFactory
from deployer.errors import DeployerError
from deployer.notify import Notifier

if TYPE_CHECKING:
    import boto3

    from deployer.settings import Settings


@dataclass
class Adapters:
    settings: Settings
    region: str
    clients: ClientFactory
    apps: AppsStore
    state: AppState
    releases: ReleasesStore
    admissions: Admissions
    host_outcomes: HostOutcomesStore
    pointer: PointerStore
    launch_templates: LaunchTemplates
    fleet: Fleet
    results: CommandResults
    images: Images
    hooks: LifecycleHooks
    instances: ManagedInstances
    tracked: TrackedCommands
    notifier: Notifier
    rechecks: RecheckQueue
    config_versions: ConfigVersions
    proxy_metrics: ProxyMetrics
    stage_ticks: StageTicks
    alarms: Alarms
    clock: Callable[[], float] = field(default_factory=lambda: time.time)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        session: boto3.session.Session | None = None,
        clients: ClientFactory | None = None,
    ) -> Adapters:
        clients = clients or ClientFactory(session=session, region=settings.region)
        dynamodb = clients.client("dynamodb")
        ssm = clients.client("ssm")
        region = settings.region or clients.session.region_name
        if not region:
            raise DeployerError("no AWS region configured (AWS_REGION)")
        return cls(
            settings=settings,
            region=region,
            clients=clients,
            apps=AppsStore(dynamodb, settings.apps_table),
            state=AppState(dynamodb, settings.app_state_table),
            releases=ReleasesStore(dynamodb, settings.releases_table),
            admissions=Admissions(dynamodb, settings.idempotency_table),
            host_outcomes=HostOutcomesStore(dynamodb, settings.host_outcomes_table),
            pointer=PointerStore(ssm, settings.parameter_prefix),
            launch_templates=LaunchTemplates(clients.client("ec2"), clients.client("autoscaling")),
            fleet=Fleet(
                ssm,
                settings.swap_document_name,
                settings.command_log_group,
                sender=clients.single_attempt_client("ssm"),
                task_document=settings.task_document_name,
            ),
            results=CommandResults(ssm, clients.client("autoscaling")),
            images=Images(clients.client("ecr")),
            hooks=LifecycleHooks(clients.client("autoscaling")),
            instances=ManagedInstances(ssm),
            tracked=TrackedCommands(dynamodb, settings.host_outcomes_table),
            notifier=Notifier(settings.notification_topic_arn, lambda: clients.client("sns")),
            rechecks=RecheckQueue(settings.launch_recheck_queue_url, lambda: clients.client("sqs")),
            config_versions=ConfigVersions(ssm, lambda: clients.client("secretsmanager")),
            proxy_metrics=ProxyMetrics(lambda: clients.client("cloudwatch")),
            stage_ticks=StageTicks(settings.stage_tick_queue_url, lambda: clients.client("sqs")),
            alarms=Alarms(clients.client("cloudwatch")),
        )

    @property
    def dynamodb(self):  # type: ignore[no-untyped-def]
        return self.clients.client("dynamodb")
