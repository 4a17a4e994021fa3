"""`szb policy check|schema|test`: validate a routing policy, export its schema, run operator tests."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from broker.commands import audit, replay
from broker.policy import PolicyError, load_policy
from broker.policy.lint import policy_warnings
from broker.policy.schema import PolicyDocument
from broker.policytest import load_tests, run_tests
from broker.yamlfile import parse_yaml

DEFAULT_POLICY = Path("configs/policy.yaml")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("policy", help="validate, describe and test routing policies")
    cmds = parser.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    check = cmds.add_parser("check", help="validate a policy file (exit 1 with FILE:LINE:COL errors)")
    check.add_argument("file", type=Path, nargs="?", default=DEFAULT_POLICY)
    check.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    check.set_defaults(handler=cmd_check)
    schema = cmds.add_parser("schema", help="print the policy's JSON Schema (for editors)")
    schema.set_defaults(handler=cmd_schema)
    test = cmds.add_parser("test", help="run operator expectations against a policy")
    test.add_argument("policy", type=Path)
    test.add_argument("tests", type=Path)
    test.add_argument("--output", "-o", choices=("text", "json"), default="text")
    test.set_defaults(handler=cmd_test)
    audit.register_policy(cmds)
    replay.register(cmds)


def _print_problems(exc: PolicyError) -> None:
    for problem in exc.problems:
        print(problem, file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        _print_problems(exc)
        return 1
    warnings = policy_warnings(policy, parse_yaml(args.file.read_text(), str(args.file)), str(args.file))
    for warning in warnings:
        print(warning, file=sys.stderr)
    print(
        f"{args.file}: ok: {len(policy.sites)} sites, {len(policy.tenants)} tenants, "
        f"{len(policy.rules)} rules, regime {policy.regime.name}, policy hash {policy.hash[:12]}"
        + (f", {len(warnings)} warning(s)" if warnings else "")
    )
    return 1 if warnings and args.strict else 0


def cmd_schema(args: argparse.Namespace) -> int:
    schema = PolicyDocument.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Shangzhuang Broker routing policy"
    print(json.dumps(schema, indent=2, sort_keys=True))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
        suite = load_tests(args.tests, policy)
    except PolicyError as exc:
        _print_problems(exc)
        return 1
    results = run_tests(policy, suite)
    failed = [r for r in results if not r.passed]
    if args.output == "json":
        print(
            json.dumps(
                {
                    "passed": len(results) - len(failed),
                    "failed": len(failed),
                    "results": [r.to_json() for r in results],
                },
                indent=2,
            )
        )
    else:
        for r in results:
            print(f"{'PASS' if r.passed else 'FAIL'}: {r.name}" + ("" if r.passed else f"\n  {r.detail}"))
        print("-" * 40)
        print(
            f"PASS: {len(results) - len(failed)}/{len(results)}"
            + (f", FAIL: {len(failed)}" if failed else "")
        )
    return 1 if failed else 0
