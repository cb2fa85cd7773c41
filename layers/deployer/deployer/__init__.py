"""Push-to-deploy core: models, the release controller and AWS adapters.

The same package is the Lambda layer `DeployerLayer`, the library of tools and tests, and the
`deployer` CLI. The flow reads in one direction (docs/architecture.md, "Layout"):

    functions/<name>/app.py  Powertools decorators, then the entry
    entry                    `entry.push` (parse, idempotency), `entry.events` (SSM, launch,
                             operator and schedule events: parse, answer)
    core                     `admission` (a push becomes releases), `controller` (a package:
                             pure `decisions`, the `loop` that commits them, `rollout` steps,
                             `admit`, `outbox`), `command_events`, `operations`, `reconcile`,
                             `launch`; pure verdicts and builders in `verdicts` and `builders`
    adapters                 `adapters.*`, one per AWS resource kind, built once in `wiring`

- `wiring.Adapters`: the one composition root (`runtime.deps()` in Lambda).
- `markers`: every string protocol (lock owner, command comments, outbox entries, admission ids).
- `names`: the patterns and names the parts share (app, digest, tag, region, ECR's registry host).
- `settings.Settings`: environment variables, validated once.
- `aws`: botocore configs and their budgets (`LAMBDA_CONFIG`, `CLI_CONFIG`, `INVOKE_CONFIG`) and
  `ClientFactory` (lazy, cached clients).
- `observability`: the one `logger`, `tracer`, `metrics` (Powertools) and `Metric` names.
- `errors`: domain exceptions, raised `from` the botocore error; `adapters.is_transient` and
  `adapters.was_refused` read the botocore error behind one.
- `agent_contract`: exit codes / failure classes of the host agent, the swap document's
  parameter patterns, `AgentSummary` and `parse_summary`.
- `models.*`: `AppConfig`, records (`Release`, `Pointer`, `HostOutcome`), events.
- `cli`: the `deployer` command.
"""
