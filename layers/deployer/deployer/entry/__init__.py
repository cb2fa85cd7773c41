"""Entry points: what each function does with its event before the core runs, and its answer.

Parse and validate the event (bad input is one log line, a metric and no state change), apply
idempotency where the platform redelivers (the push), call the core, answer in JSON. Operator
requests that cannot be served raise the domain error (the direct invocation fails with it).

The push is idempotent on repository + digest + tag (Powertools idempotency, DynamoDB
persistence, records kept 48 hours): re-tagging an image already pushed is a new push, which an
app filtering on the new tag deploys. A push whose invocation died after recording its release is
the same release when delivered again (the admission marker, `deployer.controller.admit`).
"""
