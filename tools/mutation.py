"""Mutation testing of the core's decision modules with mutmut (`make mutation`, docs/mutation.md).

Each module in DECISION_MODULES is mutated on its own, against the fast test files listed for
it (tests that need no Docker engine, nginx or registry). mutmut 3 names a mutant after its
file's path, so it must see the package as `src/deployer` to call it `deployer.x`: every run
happens in a staging directory, build/mutation/<module>/, that holds a copy of the package under
src/ and links to what the tests read (tests, tools, host, template.yaml, ...). The repository's
sources are never modified.

    .venv-mutation/bin/python tools/mutation.py [--module layers/deployer/deployer/notify.py]

Prints per-module counts and every surviving mutant (file:line and its diff), writes the
survivors to build/mutation-survivors.txt and ends with one line:

    MUTATION {"killed": n, "survived": n, "untested": n, "score": x, "modules": {path: x}}

score = killed / (killed + survived + untested), 3 decimals. A mutant that made the tests time
out counts as killed (the tests noticed: a loop that no longer ends is a behaviour change), and
so does one that crashed the test process. "untested" are the mutants no listed test reaches
(mutmut's "no tests" and "skipped"): they count against the score like survivors.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tokenize
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# The one list: each decision module (repository path) -> the fast test files that exercise it.
# To add a module, add its path here with the test files that drive its decisions; those test
# files must pass on their own (`python -m pytest <files>`) and need no Docker, nginx or registry.
# An entry "!<file>::<test>" leaves one test of a listed file out (a slow test, or one that leaves
# state behind in the process: mutants are forked from the process that ran the tests once).
DECISION_MODULES: dict[str, list[str]] = {
    "layers/deployer/deployer/models/config.py": [
        "tests/unit/test_app_config_cli.py",
        "tests/unit/test_ssm_bound_config.py",
        "tests/unit/test_rollback_concurrency.py",
    ],
    "layers/deployer/deployer/builders.py": [
        "tests/unit/test_user_data.py",
        "tests/unit/test_contracts.py",
        "tests/unit/test_send_timeout.py",
        # Boots the user data against a moto server with the real AWS CLI: seconds per mutant, and
        # its document stays in the server's backend. The file's other tests pin the script.
        "!tests/unit/test_user_data.py::test_user_data_reads_the_agent_from_the_swap_document_and_boots_the_release",
    ],
    "layers/deployer/deployer/notify.py": [
        "tests/lifecycle/test_notify_and_events.py",
    ],
    "layers/deployer/deployer/agent_contract.py": [
        "tests/unit/test_agent_summary.py",
        "tests/unit/test_contracts.py",
        "tests/test_agent_contract.py",
    ],
    "layers/deployer/deployer/verdicts.py": [
        "tests/unit/test_verdicts.py",
        "tests/lifecycle/test_completion.py",
    ],
    "layers/deployer/deployer/markers.py": [
        "tests/unit/test_markers_and_transactions.py",
        "tests/unit/test_controller_requests.py",
    ],
    # The controller's decisions, moto-free: every mutant costs a second.
    "layers/deployer/deployer/controller/decisions.py": [
        "tests/unit/test_controller_decisions.py",
    ],
    # Mutated in part (DECISION_FUNCTIONS): how a failed AWS call is read.
    "layers/deployer/deployer/adapters/__init__.py": [
        "tests/unit/test_error_classes.py",
    ],
    "layers/deployer/deployer/controller/outbox.py": [
        "tests/unit/test_error_classes.py",
    ],
}

# Modules mutated in part: module -> the functions mutated ("name", or "Class.method" for a
# method). Every other function of the module is left out: in the staging copy only (never in the
# repository), its header gets mutmut's `# pragma: no mutate block`. For a module whose full run
# is too slow: the decisions are mutated, the AWS steps they drive are not. A name listed here
# that the module no longer has is an error (a renamed decision must not drop out unnoticed).
DECISION_FUNCTIONS: dict[str, list[str]] = {
    # Left out: converting botocore's data to plain values and back (exercised by every store).
    "layers/deployer/deployer/adapters/__init__.py": [
        "_client_error",
        "_http_status",
        "is_transient",
        "was_refused",
    ],
    # Left out: publishing the outbox and building a notice (AWS calls; tests/lifecycle).
    "layers/deployer/deployer/controller/outbox.py": [
        "outbox_order",
    ],
}
# Statements that only log or count (a call standing alone whose callee matches) are not mutated,
# in any module: what a decision logs or counts is not what it decides, and the tests pin
# decisions. Marked `# pragma: no mutate` on each of their lines, in the staging copy only.
OBSERVABILITY_CALL = re.compile(
    r"^(logger\.\w+|report\.note|count|_count_end|metrics\.\w+|decision\.explain)$"
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_PARENT = "layers/deployer"  # the directory that holds the `deployer` package
PACKAGE = "deployer"
BUILD = ROOT / "build"
SURVIVORS_FILE = BUILD / "mutation-survivors.txt"
# What the tests read besides the package, linked into each staging directory (mutmut copies
# them next to the mutated package).
STAGED = (
    "tests",
    "tools",
    "host",
    "events",
    "docs",
    "template.yaml",
    "localcloud",
    "functions",
    "benchmarks",
    "layers",
)

# mutmut's verdicts (mutmut.stats.status_by_exit_code), grouped for the score.
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
UNTESTED = {"no tests", "skipped"}
SURVIVED = {"survived", "suspicious"}


@dataclass
class Survivor:
    name: str
    status: str
    location: str
    diff: str


@dataclass
class ModuleResult:
    module: str
    killed: int = 0
    timeouts: int = 0
    survived: int = 0
    untested: int = 0
    seconds: float = 0.0
    error: str | None = None
    survivors: list[Survivor] = field(default_factory=list)


def mutmut_bin() -> Path:
    return Path(sys.executable).parent / "mutmut"


def _toml_list(values: list[str]) -> str:
    return json.dumps(values)  # a JSON array of strings is a TOML array


def stage(module: str, tests: list[str]) -> Path:
    """A fresh staging directory for one module: the package under src/, the rest linked."""
    rel = Path(module).relative_to(PACKAGE_PARENT)  # deployer/models/config.py
    staging = BUILD / "mutation" / "_".join(rel.with_suffix("").parts)
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "src").mkdir(parents=True)
    shutil.copytree(
        ROOT / PACKAGE_PARENT / PACKAGE,
        staging / "src" / PACKAGE,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for name in STAGED:
        if (ROOT / name).exists():
            (staging / name).symlink_to(ROOT / name)
    mutated = staging / "src" / rel
    source = exclude_observability(mutated.read_text())
    if module in DECISION_FUNCTIONS:
        source = exclude_functions(source, DECISION_FUNCTIONS[module], module)
    mutated.write_text(source)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    selected = [t for t in tests if not t.startswith("!")]
    deselect = [arg for t in tests if t.startswith("!") for arg in ("--deselect", t[1:])]
    markers = project["tool"]["pytest"]["ini_options"]["markers"]
    (staging / "pyproject.toml").write_text(
        "\n".join(
            [
                "[tool.mutmut]",
                'source_paths = ["src"]',
                f"only_mutate = {_toml_list([str(Path('src') / rel)])}",
                f"pytest_add_cli_args_test_selection = {_toml_list(selected)}",
                f"pytest_add_cli_args = {_toml_list(['-p', 'no:cacheprovider', *deselect])}",
                f"also_copy = {_toml_list([*[n for n in STAGED if (ROOT / n).exists()], 'pyproject.toml'])}",
                "use_git_change_detection = false",
                "",
                "[tool.pytest.ini_options]",
                'pythonpath = ["."]',
                'addopts = "--strict-markers"',
                f"markers = {_toml_list(markers)}",
                "",
            ]
        )
    )
    return staging


def _functions(source: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every top-level function and method of a module, by "name" / "Class.method"."""
    found: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[f"{node.name}.{member.name}"] = member
    return found


def _header_colon_lines(source: str) -> dict[int, int]:
    """`def` line -> the line of the colon that ends its header (after the signature)."""
    ends: dict[int, int] = {}
    start = None
    depth = 0
    for tok in tokenize.generate_tokens(iter(source.splitlines(keepends=True)).__next__):
        if tok.type == tokenize.NAME and tok.string == "def" and start is None:
            start, depth = tok.start[0], 0
        elif start is not None and tok.type == tokenize.OP:
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
            elif tok.string == ":" and depth == 0:
                ends[start] = tok.start[0]
                start = None
    return ends


def _mark(lines: list[str], numbers: set[int], pragma: str) -> None:
    """Append `pragma` as a comment to each line number given (1-based), in place."""
    for number in sorted(numbers):
        line = lines[number - 1]
        body = line.rstrip("\r\n")
        lines[number - 1] = f"{body}  {pragma}{line[len(body) :]}"


def _callee(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_callee(node.value)}.{node.attr}"
    return ""


def exclude_observability(source: str) -> str:
    """The source with every log or metric statement (OBSERVABILITY_CALL) marked
    `# pragma: no mutate` on each of its lines (lines keep their numbers)."""
    # Lines that end inside a string (a triple-quoted one) cannot take a comment.
    in_string: set[int] = set()
    for tok in tokenize.generate_tokens(iter(source.splitlines(keepends=True)).__next__):
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            in_string.update(range(tok.start[0], tok.end[0]))
    marked: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and OBSERVABILITY_CALL.match(_callee(node.value.func))
        ):
            marked.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = source.splitlines(keepends=True)
    _mark(lines, marked - in_string, "# pragma: no mutate")
    return "".join(lines)


def exclude_functions(source: str, keep: list[str], module: str) -> str:
    """The module's source with every function not in `keep` marked `# pragma: no mutate block`
    on its header's last line (lines keep their numbers)."""
    functions = _functions(source)
    unknown = sorted(set(keep) - set(functions))
    if unknown:
        raise SystemExit(f"mutation: DECISION_FUNCTIONS of {module} names no function: {', '.join(unknown)}")
    colons = _header_colon_lines(source)
    lines = source.splitlines(keepends=True)
    headers = {colons[node.lineno] for name, node in functions.items() if name not in keep}
    _mark(lines, headers, "# pragma: no mutate block")
    return "".join(lines)


def _function_lines(source: str) -> dict[str, int]:
    """mutmut's mangled function name (x_f, xǁClassǁf) -> the line its source starts on."""
    lines: dict[str, int] = {}

    def visit(body: list[ast.stmt], cls: str | None) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and cls is None:
                visit(node.body, node.name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines[f"xǁ{cls}ǁ{node.name}" if cls else f"x_{node.name}"] = start

    visit(ast.parse(source).body, None)
    return lines


def _changed_line(diff: str) -> int | None:
    """The first changed line of a `mutmut show` diff, counted from the function's first line."""
    old = None
    for line in diff.splitlines():
        hunk = re.match(r"@@ -(\d+)", line)
        if hunk:
            old = int(hunk.group(1))
            continue
        if old is None or line.startswith("---"):
            continue
        if line.startswith("-") or line.startswith("+"):
            return old
        old += 1
    return None


def _status(staging: Path) -> dict[str, str]:
    """Every mutant's verdict, as `mutmut results --all true` prints it."""
    out = subprocess.run(
        [str(mutmut_bin()), "results", "--all", "true"],
        cwd=staging,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    verdicts = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            verdicts[name] = status
    return verdicts


# Runs `mutmut show` for many mutants in one process (one import of mutmut, not one per mutant).
_SHOW = """
import contextlib, io, json, sys
from mutmut.__main__ import cli
diffs = {}
for name in sys.argv[1:]:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            cli(["show", name], standalone_mode=False)
    except BaseException as exc:  # one mutant without a diff does not lose the others
        buf.write(f"(mutmut show failed: {exc!r})")
    diffs[name] = buf.getvalue()
print(json.dumps(diffs))
"""


def _diffs(staging: Path, names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    out = subprocess.run(
        [sys.executable, "-c", _SHOW, *names], cwd=staging, check=True, capture_output=True, text=True
    ).stdout
    diffs: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return diffs


def run_module(module: str, tests: list[str], max_children: int) -> ModuleResult:
    result = ModuleResult(module)
    started = time.monotonic()
    missing = [t for t in [module, *tests] if not (ROOT / t.lstrip("!").partition("::")[0]).is_file()]
    if missing:
        result.error = f"missing: {', '.join(missing)}"
        return result
    staging = stage(module, tests)
    log = staging / "mutmut.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [str(mutmut_bin()), "run", "--max-children", str(max_children)],
            cwd=staging,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    result.seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-15:]
        result.error = f"mutmut exited {proc.returncode} (log: {log.relative_to(ROOT)}):\n" + "\n".join(tail)
        return result
    verdicts = _status(staging)
    if not verdicts:
        result.error = f"mutmut produced no mutants (log: {log.relative_to(ROOT)})"
        return result
    unfinished = sorted(n for n, s in verdicts.items() if s not in KILLED | UNTESTED | SURVIVED)
    if unfinished:
        result.error = (
            f"{len(unfinished)} mutants without a verdict, e.g. {unfinished[0]}: {verdicts[unfinished[0]]}"
        )
        return result
    for status in verdicts.values():
        if status in KILLED:
            result.killed += 1
            result.timeouts += status == "timeout"
        elif status in UNTESTED:
            result.untested += 1
        else:
            result.survived += 1
    alive = sorted(
        (n for n, s in verdicts.items() if s not in KILLED),
        key=lambda n: (n.partition("__mutmut_")[0], int(n.rpartition("_")[2])),
    )
    diffs = _diffs(staging, alive)
    # Lines of the copy that was mutated (the work tree may have changed since).
    starts = _function_lines((staging / "src" / Path(module).relative_to(PACKAGE_PARENT)).read_text())
    for name in alive:
        diff = diffs.get(name, "")
        function = name.partition("__mutmut_")[0].rpartition(".")[2]
        offset = _changed_line(diff)
        start = starts.get(function)
        line = f"{start + offset - 1}" if start and offset else "?"
        body = "\n".join(d for d in diff.splitlines() if not d.startswith("# "))
        result.survivors.append(Survivor(name, verdicts[name], f"{module}:{line}", body))
    return result


def score(killed: int, survived: int, untested: int) -> float:
    total = killed + survived + untested
    return round(killed / total, 3) if total else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", help="one path of DECISION_MODULES (default: all of them)")
    parser.add_argument(
        "--max-children",
        type=int,
        default=os.cpu_count() or 2,
        help="mutants tested in parallel (default: one per core)",
    )
    parser.add_argument(
        "--min-score",
        type=float,
        default=0.0,
        help="exit 1 when the score is below this (default: report only)",
    )
    args = parser.parse_args(argv)
    if args.module:
        module = args.module.removeprefix("./")
        if module not in DECISION_MODULES:
            print(
                f"mutation: {module} is not in DECISION_MODULES (tools/mutation.py): "
                f"{', '.join(DECISION_MODULES)}",
                file=sys.stderr,
            )
            return 2
        selected = {module: DECISION_MODULES[module]}
    else:
        selected = DECISION_MODULES
    if not mutmut_bin().exists():
        print("mutation: mutmut is missing: run tools/bootstrap.sh mutation", file=sys.stderr)
        return 2

    started = time.monotonic()
    results = []
    for module, tests in selected.items():
        files = len([t for t in tests if not t.startswith("!")])
        print(f"mutation: {module} against {files} test files ...", flush=True)
        result = run_module(module, tests, args.max_children)
        results.append(result)
        if result.error:
            print(f"  ERROR {result.error}", flush=True)
            continue
        print(
            f"  killed {result.killed} (of which timed out {result.timeouts}), survived {result.survived}, "
            f"untested {result.untested}, score {score(result.killed, result.survived, result.untested)}, "
            f"{result.seconds:.0f} s",
            flush=True,
        )

    survivors = [s for r in results for s in r.survivors]
    report = [f"{s.location}  {s.name}  ({s.status})\n{s.diff}\n" for s in survivors]
    BUILD.mkdir(exist_ok=True)
    SURVIVORS_FILE.write_text(
        f"# {len(survivors)} mutants not killed (tools/mutation.py; accepted ones: docs/mutation.md)\n\n"
        + "\n".join(report)
    )
    if survivors:
        where = SURVIVORS_FILE.relative_to(ROOT)
        print(f"\nmutation: {len(survivors)} mutants not killed (also in {where}):\n")
        print("\n".join(report))
    print("mutation: per module")
    for r in results:
        verdict = (
            "ERROR"
            if r.error
            else (
                f"killed {r.killed}, survived {r.survived}, untested {r.untested}, "
                f"score {score(r.killed, r.survived, r.untested)}"
            )
        )
        print(f"  {r.module}: {verdict}")
    killed = sum(r.killed for r in results)
    survived = sum(r.survived for r in results)
    untested = sum(r.untested for r in results)
    total = score(killed, survived, untested)
    modules = {r.module: score(r.killed, r.survived, r.untested) for r in results if not r.error}
    print(f"mutation: {time.monotonic() - started:.0f} s in all")
    summary: dict[str, object] = {
        "killed": killed,
        "survived": survived,
        "untested": untested,
        "score": total,
        "modules": modules,
    }
    errors = [r.module for r in results if r.error]
    if errors:
        summary["errors"] = errors
    print("MUTATION " + json.dumps(summary))
    # Every module must reach the score: a strong module must not hide a weak one.
    low = any(value < args.min_score for value in modules.values())
    return 1 if errors or total < args.min_score or low else 0


if __name__ == "__main__":
    sys.exit(main())
