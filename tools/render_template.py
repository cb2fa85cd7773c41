"""Inline host/agent.py into template.yaml's swap document, between the agent markers.

The swap document's ``runCommand`` holds the lines ``# BEGIN AGENT`` and ``# END AGENT``; this
tool puts between them a quoted heredoc that writes the agent to the path the document runs
(``python3 <path> swap ...`` after the end marker), one YAML list item per agent line. The agent
stays the one source of truth; tests/test_agent_contract.py fails when the copies differ.

usage: python tools/render_template.py [--check] [--template template.yaml] [--agent host/agent.py]
  --check  exit 1 (and change nothing) when the inlined copy is not current
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "# BEGIN AGENT"
END = "# END AGENT"
DELIMITER = "DEPLOYER_AGENT_PY"
DEFAULT_TARGET = "/opt/deployer/agent.py"


class RenderError(ValueError):
    """The template or the agent cannot be rendered safely."""


def _item_text(line: str) -> str | None:
    """The string of a YAML list item line (``- "x"``, ``- 'x'`` or ``- x``), else None."""
    match = re.match(r"^\s*- (.*)$", line)
    if not match:
        return None
    raw = match.group(1).rstrip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1].replace("''", "'")
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1]
    return raw


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def check_agent(agent: str) -> list[str]:
    """The agent lines, after checking it can be inlined without SSM or the shell changing it."""
    if "{{" in agent:
        raise RenderError("the agent contains '{{': SSM would interpolate it")
    if not agent.endswith("\n") or agent.endswith("\n\n"):
        raise RenderError("the agent must end with exactly one newline")
    if "\t" in agent or "\r" in agent:
        raise RenderError("the agent must not contain tabs or carriage returns")
    lines = agent[:-1].split("\n")
    if DELIMITER in lines:
        raise RenderError(f"the agent contains the heredoc delimiter line {DELIMITER}")
    return lines


def render(template: str, agent: str) -> str:
    """``template`` with the agent inlined between the markers (idempotent)."""
    agent_lines = check_agent(agent)
    lines = template.split("\n")
    begins = [i for i, line in enumerate(lines) if _item_text(line) == BEGIN]
    ends = [i for i, line in enumerate(lines) if _item_text(line) == END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise RenderError(f"template needs exactly one '{BEGIN}' list item followed by one '{END}'")
    b, e = begins[0], ends[0]
    indent = lines[b][: len(lines[b]) - len(lines[b].lstrip())]
    after = "\n".join(lines[e + 1: e + 6])
    found = re.search(r"python3 (/[A-Za-z0-9._/-]+\.py)", after)
    target = found.group(1) if found else DEFAULT_TARGET
    block = [lines[b], f"{indent}- {_quote(f'cat > {target} <<' + repr(DELIMITER))}"]
    block += [f"{indent}- {_quote(line)}" for line in agent_lines]
    block += [f"{indent}- {DELIMITER}", lines[e]]
    return "\n".join(lines[:b] + block + lines[e + 1:])


def inlined_agent(run_command: list[str]) -> str:
    """The agent text a rendered ``runCommand`` list writes (from the parsed template)."""
    try:
        b, e = run_command.index(BEGIN), run_command.index(END)
    except ValueError as exc:
        raise RenderError(f"runCommand lacks the '{BEGIN}' / '{END}' markers") from exc
    inner = run_command[b + 1: e]
    if len(inner) < 2 or not inner[0].startswith("cat > ") or inner[-1] != DELIMITER:
        raise RenderError("no agent heredoc between the markers; run tools/render_template.py")
    if not inner[0].endswith(f"<<'{DELIMITER}'"):
        raise RenderError("the agent heredoc delimiter must be quoted, so the shell expands nothing")
    return "\n".join(inner[1:-1]) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--template", default=str(ROOT / "template.yaml"))
    parser.add_argument("--agent", default=str(ROOT / "host" / "agent.py"))
    args = parser.parse_args(argv)
    template_path = Path(args.template)
    template = template_path.read_text()
    try:
        rendered = render(template, Path(args.agent).read_text())
    except RenderError as exc:
        print(f"render_template: {exc}", file=sys.stderr)
        return 2
    if rendered == template:
        print("render_template: the inlined agent is current", file=sys.stderr)
        return 0
    if args.check:
        print("render_template: the inlined agent is stale; run python tools/render_template.py",
              file=sys.stderr)
        return 1
    template_path.write_text(rendered)
    print(f"render_template: agent inlined into {template_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
