"""Findings shared by every command: severity levels and the exit code they imply."""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("info", "warn", "error")


@dataclass(frozen=True)
class Finding:
    """One thing a command found. `tensor` is None for findings about the whole checkpoint."""

    severity: str  # "info", "warn" or "error"
    code: str  # stable, machine-readable: "nan-values", "dead-rows", ...
    tensor: str | None
    message: str
    hint: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def exit_code_for(findings: list[Finding], fail_on: str | None) -> int:
    """0 when no finding reaches `fail_on` (None: never fail), else 1.

    Example:
        >>> exit_code_for([Finding("warn", "x", None, "m")], "error")
        0
    """
    if fail_on is None:
        return 0
    threshold = severity_rank(fail_on)
    return 1 if any(severity_rank(f.severity) >= threshold for f in findings) else 0


def severity_reaches(severity: str | None, fail_on: str | None) -> bool:
    """Whether something of `severity` (None: nothing to report) is at or above `fail_on` (None: never fail).

    Example:
        >>> severity_reaches("warn", "info"), severity_reaches("warn", "error"), severity_reaches(None, "info")
        (True, False, False)
    """
    if severity is None or fail_on is None:
        return False
    return severity_rank(severity) >= severity_rank(fail_on)


# What a warning printed by convert and shard (about the files they wrote, or left out) weighs against `--fail-on`:
# they carry no severity of their own, and a refused write is exit 2, so nothing they report is an "error".
WRITER_WARNING_SEVERITY = "warn"


def writer_exit_code(warnings: list[str], fail_on: str | None) -> int:
    """convert's and shard's exit code: 1 when a warning was printed and `fail_on` is `info` or `warn`, else 0.

    Example:
        >>> writer_exit_code(["not copied: vocab.txt"], "warn"), writer_exit_code(["not copied: vocab.txt"], "error")
        (1, 0)
    """
    return 1 if warnings and severity_reaches(WRITER_WARNING_SEVERITY, fail_on) else 0
