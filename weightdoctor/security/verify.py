"""`inspect --verify`: recompute the CRC-32 of every zip member (torch.load never checks them), and the sha256 prefix
that a torch.hub file name carries."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from weightdoctor.checkpoint import Checkpoint
from weightdoctor.checkpoint.gguf_format import GgufHeader
from weightdoctor.security import archive
from weightdoctor.wording import counted


@dataclass(frozen=True)
class MemberMismatch:
    """A zip member whose bytes differ from the CRC-32 its archive records: the file was altered."""

    file: str
    member: str
    expected_crc: str
    actual_crc: str


@dataclass
class VerifyReport:
    """What `--verify` checked: zip members of pickle files, the data layout of GGUF files; safetensors and legacy
    files have no checksums."""

    files_checked: int = 0
    members_checked: int = 0
    mismatches: list[MemberMismatch] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Files named `<name>-<sha256 prefix>.pth` (torch.hub's convention) whose sha256 does not start with it.
    hash_mismatches: list[str] = field(default_factory=list)
    # GGUF files holding bytes their header does not account for: past the last tensor's padded end, or between
    # tensors beyond their alignment padding (`gguf_layout`).
    layout_mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unreadable and not self.hash_mismatches \
            and not self.layout_mismatches


# torch.hub names a download `<name>-<first hex digits of its sha256>.<ext>` (torchvision's resnet50-0676ba61.pth,
# Demucs' <name>-<sha8>.th) and load_state_dict_from_url(check_hash=True) compares them. At least 8 digits, so that a
# shard's `-00002.` is not read as one.
_HUB_HASH_NAME = re.compile(r"^.+-([0-9a-f]{8,64})\.(?:pth|pt|th)$")


def _read_as_hash(digits: str) -> bool:
    """Whether a name's `-<hex>` run is taken as torch.hub's sha256 prefix when the file's digest does not start with
    it. All decimal digits read as a date or a zero-padded step (`model-20240115.pt`, `ckpt-00050000.pt`), 32 or 40
    hex digits as an md5 or a git commit: ordinary saves are named so, and a false mismatch exits 1. Such a run is
    still confirmed when the digest does start with it (torchvision's vgg13-19584684.pth).

    Example:
        >>> _read_as_hash("0676ba61"), _read_as_hash("20240115")
        (True, False)
    """
    return not digits.isdigit() and len(digits) not in (32, 40)


def _torch_hub_dir() -> str:
    """torch.hub.get_dir(): the folder set by torch.hub.set_dir in this process (torch imported already), else
    `$TORCH_HOME/hub`, TORCH_HOME defaulting to `$XDG_CACHE_HOME/torch` (`~/.cache/torch`), as torch.hub reads them;
    torch is not imported for it (inspect imports no torch)."""
    import os
    import sys

    hub = sys.modules.get("torch.hub")
    if hub is not None:
        return str(hub.get_dir())
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return os.path.join(os.path.expanduser(home), "hub")


def _in_torch_hub_cache(path: Path) -> bool:
    """Whether `path` lies in torch.hub's download folder (`torch.hub.get_dir()/checkpoints/`, where
    load_state_dict_from_url keeps what it fetched; `<...>/hub/checkpoints/` of any TORCH_HOME), where a `-<hex>`
    name is torch.hub's own. The path as given and as resolved are both looked at, and so is the folder: a
    hub/checkpoints folder that is a link to another disk was missed once resolved.

    Example:
        >>> _in_torch_hub_cache(Path("/root/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth"))
        True
    """
    import os

    downloads = Path(_torch_hub_dir(), "checkpoints")
    folders = {Path(os.path.abspath(downloads)), downloads.resolve()}
    for candidate in (Path(os.path.abspath(path)), path.resolve()):
        parts = candidate.parts
        if any(parts[i:i + 2] == ("hub", "checkpoints") for i in range(len(parts) - 2)) \
                or any(candidate.is_relative_to(folder) for folder in folders):
            return True
    return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint(checkpoint: Checkpoint) -> VerifyReport:
    """Recompute the CRC-32 of every member of every zip weight file and report mismatches.

    Example:
        >>> verify_checkpoint(open_checkpoint("pytorch_model.bin")).mismatches  # doctest: +SKIP
        []
    """
    report = VerifyReport()
    formats: set[str] = set()
    for item in checkpoint.weight_files:
        named = _HUB_HASH_NAME.match(item.path.name)
        if named is not None:
            prefix, actual = named.group(1), _sha256(item.path)
            if actual.startswith(prefix):
                report.notes.append(f"{item.relpath}: its sha256 starts with {prefix}, the prefix its name carries "
                                    "(torch.hub's check_hash)")
            elif _read_as_hash(prefix) and _in_torch_hub_cache(item.path):
                report.hash_mismatches.append(
                    f"{item.relpath}: the name carries sha256 prefix {prefix}, the file's sha256 starts with "
                    f"{actual[:len(prefix)]}: not the file published under that name (a partial, altered or re-saved "
                    "copy); a download checked with torch.hub's check_hash=True, as torchvision's weights are, "
                    "is rejected for it")
            elif _read_as_hash(prefix):
                # Outside torch.hub's cache the name may be the user's own (a run id, a short git sha): said, and
                # not a failure, since a false exit 1 would stop a pipeline over a file name.
                report.notes.append(
                    f"{item.relpath}: the name ends as a torch.hub download's does (-{prefix}), but the file's sha256 "
                    f"starts with {actual[:len(prefix)]}: if it was downloaded under this name it is not the published "
                    "file (torch.hub's check_hash=True rejects it); a name of your own needs nothing")
        if item.format == "gguf":
            report.files_checked += 1
            found, note = gguf_layout(item.relpath, checkpoint.gguf_header(item.relpath), item.path.stat().st_size)
            report.layout_mismatches += found
            report.notes.append(note)
            continue
        if item.format != "pytorch-zip":
            formats.add(item.format)
            continue
        with open(item.path, "rb") as handle:
            result = archive.verify_crcs(handle, item.path.stat().st_size)
        report.files_checked += 1
        report.members_checked += result.checked
        report.mismatches += [MemberMismatch(item.relpath, m.member, m.expected, m.actual) for m in result.mismatches]
        report.unreadable += [f"{item.relpath}: {text}" for text in result.unreadable]
        if result.repeated:
            listed = ", ".join(f"{name} ({count:,} times)" for name, count in result.repeated[:5])
            more = f" and {len(result.repeated) - 5:,} more" if len(result.repeated) > 5 else ""
            report.notes.append(f"{item.relpath}: the archive lists {listed}{more}; each copy was checked")
    if "safetensors" in formats:
        report.notes.append("safetensors files carry no checksum; their headers and offsets were validated")
    if "pytorch-legacy" in formats:
        report.notes.append("the legacy (non-zip) format carries no checksum")
    if "pickle" in formats:
        report.notes.append("a plain pickle (pickle.dump) carries no checksum")
    return report


def gguf_layout(relpath: str, header: GgufHeader | None, file_size: int) -> tuple[list[str], str]:
    """Check a GGUF file's data section against its header: GGUF carries no checksum, so what can be verified is
    that every byte after the header belongs to a tensor or to the alignment padding that llama.cpp's and gguf-py's
    writers put after each one. The reader has refused already a tensor outside the file, off the alignment or
    overlapping another; this finds what no tensor accounts for: bytes past the last tensor's padded end (a payload
    appended, or a file written over a larger one) and gaps between tensors wider than their padding.

    Example:
        A file whose last tensor ends at data byte 1,000 (alignment 32) is expected to end at data byte 1,024; 100
        more bytes are a finding.

    Returns:
        The findings (one line each) and a note saying what was checked.
    """
    if header is None or not header.tensors:
        # No tensor: the file is its header, padded; nothing after it is accounted for.
        start = header.data_start if header is not None else file_size
        extra = max(file_size - start, 0)
        found = [f"{relpath}: {extra:,} bytes after a header that lists no tensor"] if extra else []
        return found, f"{relpath}: a GGUF of no tensor: its header was read whole"
    alignment = header.alignment

    def padded(end: int) -> int:
        return -(-end // alignment) * alignment

    spans = sorted(info.data_offsets for info in header.tensors if info.data_offsets is not None)
    found = []
    gaps, gap_bytes, first_gap = 0, 0, None
    reached = 0
    for begin, end in spans:
        if begin > padded(reached) and end > begin:
            gaps += 1
            gap_bytes += begin - padded(reached)
            first_gap = first_gap or (padded(reached), begin)
        reached = max(reached, end)
    if gaps:
        assert first_gap is not None
        found.append(f"{relpath}: {gap_bytes:,} data bytes in {counted(gaps, 'gap')} between tensors that no tensor "
                     f"holds (the first at data bytes {first_gap[0]:,}-{first_gap[1]:,}, alignment {alignment}): "
                     "GGUF writers pack tensors one after another")
    data_end = file_size - header.data_start
    if data_end > padded(reached):
        found.append(f"{relpath}: {data_end - padded(reached):,} bytes after the last tensor's data (it ends at "
                     f"byte {header.data_start + reached:,}, padded to {header.data_start + padded(reached):,}; the "
                     f"file has {file_size:,}): not part of the model, and read by no loader")
    note = (f"{relpath}: GGUF carries no checksum; its {len(header.tensors):,} tensors' data lie inside the file, "
            f"aligned to {alignment} from byte {header.data_start:,} and not overlapping"
            + ("" if found else ", and fill its data section to the end"))
    return found, note
