"""The release controller: level-triggered, one loop per app (docs/architecture.md, "Controller").

Every decision is one DynamoDB transaction that records the verdict of what ends *and* the
desired state that follows: "release 2 FAILED; release 3 (rollback to 1) DEPLOYING, holds the
app, notices owed". `converge(app)` then moves the world toward that record, step by step.

- `decisions`: every transition, pure (facts in, one `Decision` out);
- `facts`: what decisions read beforehand (a command's ending, the rollback target);
- `loop`: `converge` and `commit`, the one place a decision is written;
- `rollout`: the idempotent steps (pointer, launch-template version, group, command; realign);
- `admit`: a new release, and the pending releases it supersedes;
- `outbox`: the notices owed;
- `types`: what these hand each other.
"""

from deployer.controller.admit import Admitted, admit, supersede_older_pending
from deployer.controller.facts import rollback_target
from deployer.controller.loop import MAX_ROUNDS, commit, converge, new_token, now
from deployer.controller.outbox import drain_outbox, notice_for, outbox_order
from deployer.controller.rollout import SEND_CLAIM_SECONDS, realign
from deployer.controller.types import Decision, Ended, Ending, Now, Report, Transition

__all__ = [
    "MAX_ROUNDS",
    "SEND_CLAIM_SECONDS",
    "Admitted",
    "Decision",
    "Ended",
    "Ending",
    "Now",
    "Report",
    "Transition",
    "admit",
    "commit",
    "converge",
    "drain_outbox",
    "new_token",
    "notice_for",
    "now",
    "outbox_order",
    "realign",
    "rollback_target",
    "supersede_older_pending",
]
