"""`inspect --verify`: recompute the CRC-32 of every zip member (torch.load never checks them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from weightdoctor.checkpoint import Checkpoint
from weightdoctor.security import archive


@dataclass(frozen=True)
class MemberMismatch:
    """A zip member whose bytes differ from the CRC-32 its archive records: the file was altered."""

    file: str
    member: str
    expected_crc: str
    actual_crc: str


@dataclass
class VerifyReport:
    """What `--verify` checked: zip members of pickle files; safetensors and legacy files have no checksums."""

    files_checked: int = 0
    members_checked: int = 0
    mismatches: list[MemberMismatch] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unreadable


def verify_checkpoint(checkpoint: Checkpoint) -> VerifyReport:
    """Recompute the CRC-32 of every member of every zip weight file and report mismatches.

    Example:
        >>> verify_checkpoint(open_checkpoint("pytorch_model.bin")).mismatches
        []
    """
    report = VerifyReport()
    formats: set[str] = set()
    for item in checkpoint.weight_files:
        if item.format != "pytorch-zip":
            formats.add(item.format)
            continue
        with open(item.path, "rb") as handle:
            result = archive.verify_crcs(handle, item.path.stat().st_size)
        report.files_checked += 1
        report.members_checked += result.checked
        report.mismatches += [MemberMismatch(item.relpath, m.member, m.expected, m.actual) for m in result.mismatches]
        report.unreadable += [f"{item.relpath}: {text}" for text in result.unreadable]
    if "safetensors" in formats:
        report.notes.append("safetensors files carry no checksum; their headers and offsets were validated")
    if "pytorch-legacy" in formats:
        report.notes.append("the legacy (non-zip) format carries no checksum")
    return report
