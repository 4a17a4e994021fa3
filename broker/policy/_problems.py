"""Problems found in a policy (or a file it references), each with its position."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One error at `file:line:col` (1-based), printed the way compilers do."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: error: {self.message}"


class PolicyError(Exception):
    """The policy (or a catalog it references) is invalid; `.problems` lists every error."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems) or "invalid policy")
        self.problems = problems
