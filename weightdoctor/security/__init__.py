"""Untrusted checkpoints: scan pickles statically before anything is unpickled (see docs/security.md)."""

from weightdoctor.security.policy import classify
from weightdoctor.security.scan import (
    GlobalRef,
    ScanProblem,
    ScanReport,
    merge_reports,
    safetensors_report,
    scan_bytes,
    scan_file,
)

__all__ = ["GlobalRef", "ScanProblem", "ScanReport", "classify", "merge_reports", "safetensors_report",
           "scan_bytes", "scan_file"]
