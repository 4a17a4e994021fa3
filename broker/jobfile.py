"""Read job YAML files for the CLI: a spec or a problem list with file:line:col."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from broker.errors import BrokerError
from broker.jobspec import submission_problems
from broker.model import JobSpec
from broker.validation import reported_errors, violations
from broker.yamlfile import PolicyError, Problem, parse_yaml, position, read_text


class JobFileError(BrokerError):
    """The job file is unreadable or invalid; `.problems` carries every positioned error."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


MAX_JOB_FILE_BYTES = 16 * 2**20
"""The most a job file may hold: the largest spec a policy may let the server take
(`limits.max_spec_bytes`, 16 MiB at most), so nothing larger could be submitted anyway."""


def load_job_file(path: Path) -> JobSpec:
    """Parse and validate one job YAML file exactly as the server would."""
    name = str(path)
    try:
        text = read_text(path, "job file", MAX_JOB_FILE_BYTES)  # (`szb submit /dev/zero` filled memory)
    except PolicyError as exc:
        raise JobFileError(exc.problems) from exc
    try:
        doc = parse_yaml(text, name)
    except PolicyError as exc:
        raise JobFileError(exc.problems) from exc
    if not isinstance(doc, dict):
        raise JobFileError([Problem(name, 1, 1, "a job file must be a mapping of fields")])
    try:
        spec = JobSpec.model_validate(dict(doc))
    except ValidationError as exc:
        problems = []
        for err, violation in zip(reported_errors(exc), violations(exc, model=JobSpec), strict=True):
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            line, col = position(doc, loc, key=err["type"] == "extra_forbidden")
            problems.append(Problem(name, line, col, str(violation)))
        raise JobFileError(problems) from exc
    found = submission_problems(spec)
    if found:
        raise JobFileError(
            [Problem(name, *position(doc, list(loc)), f"{'.'.join(loc)}: {why}") for loc, why in found]
        )
    return spec
