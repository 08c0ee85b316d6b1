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
