"""Push-to-deploy core: models, rollout decisions and AWS adapters.

The same package is the Lambda layer `DeployerLayer`, the library of tools and tests, and the
`deployer` CLI. Nothing here knows about Lambda except `runtime` (per-process wiring).

Public API:

- `settings.Settings`: environment variables (APPS_TABLE, APP_STATE_TABLE, RELEASES_TABLE,
  HOST_OUTCOMES_TABLE, IDEMPOTENCY_TABLE, PARAMETER_PREFIX, SWAP_DOCUMENT_NAME,
  COMMAND_LOG_GROUP, NOTIFICATION_TOPIC_ARN, LOCK_LEASE_SECONDS, AWS_REGION), validated once.
- `aws`: `BOTO_CONFIG` (adaptive retries, 8 attempts) and `ClientFactory` (lazy, cached clients).
- `observability`: the one `logger`, `tracer`, `metrics` (Powertools) and `Metric` names.
- `errors`: domain exceptions (`InvalidAppConfig`, `InvalidEvent`, `AppNotFound`,
  `ReleaseNotFound`, `InvalidTransition`, `DeployInProgress`, `LockLost`, `ImageNotFound`,
  `RolloutFailed`, `AwsCallFailed`, ...), raised `from` the botocore error.
- `agent_contract`: exit codes / failure classes of the host agent, the swap document's
  parameter patterns, `AgentSummary` and `parse_summary` (None for garbage or truncation).
- `models.config.AppConfig`, `models.records` (`Release`, `ReleaseStatus`, `ReleaseSource`,
  `Pointer`, `HostOutcome`, `ALLOWED_TRANSITIONS`), `models.events` (`EcrImageAction`,
  `parse_push_event`).
- `adapters.*`: `AppsStore`, `AppState` (release counter, lease lock, pause flag, refused
  digests), `ReleasesStore`, `HostOutcomesStore`, `PointerStore`, `LaunchTemplates`, `Fleet`.
- `builders`: `swap_parameters`, `agent_arguments`, `user_data` (pure functions).
- `rollout`: `Deps`, `accept_push`, `new_release`, `start_rollout` (the one path every trigger
  ends in), `supersede_pending`, `lock_owner`.
- `push.handle_push_event`: the on-image-push use case (validation, idempotency, acceptance).
- `cli`: the `deployer` command (`COMMANDS` maps a name to its parser registration).
"""
