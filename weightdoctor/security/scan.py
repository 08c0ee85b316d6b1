"""Scan a pickle-based checkpoint for the globals it would import, before anything is unpickled.

Every pickle in the file is walked statically (see `opcodes.walk_pickle`):
- a zip archive (`torch.save` since 1.6): every `.pkl` member and every other member that starts like
  a pickle outside the tensor data, plus anything appended after the archive's end;
- the legacy format (`_use_new_zipfile_serialization=False`): the five stacked pickles (magic number,
  protocol version, sys_info, data, storage keys), then the storage records are skipped by their sizes
  and whatever follows them is scanned as well;
- any other pickle file: every pickle in sequence to the end of the file.
A pickle that cannot be parsed is itself reported, with the globals found before the error.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from weightdoctor.errors import clip_words
from weightdoctor.gcpause import gc_paused
from weightdoctor.security import archive
from weightdoctor.security.opcodes import GlobalImport, OpaqueDict, PickleWalk, call_result, walk_pickle
from weightdoctor.security.policy import (
    DANGEROUS,
    INERT,
    RECONSTRUCTOR,
    SAFE,
    UNKNOWN,
    WATCHED_CALLS,
    build_problem,
    call_problem,
    classify,
    inert_in_context,
    later_torch_note,
    reconstruction_vouched,
    shown,
)
from weightdoctor.wording import counted, plural

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PICKLES = ("magic number", "protocol version", "sys_info", "data", "storage keys")
# A pickle member larger than this is not a state dict's structure; refuse to inflate it.
# All pickles of a zip together inflate to at most this many times the file (plus 1 MiB): torch's data.pkl is
# stored, and deflated (an archive zipped again) it shrinks about 5 times.
MAX_INFLATION = 64
MAX_PICKLE_MEMBER = 256 << 20  # a data.pkl this large would describe ~1.5M tensors; more is a bomb
# Records torch writes beside data.pkl that are not pickles.
# A storage's record is data/<key>, never in a folder below it: torch.export's .pt2 keeps files it unpickles there
# (data/sample_inputs/model.pt, pickled weights and constants), which torch.export.load reads with weights_only=False.
_TORCH_RECORDS = re.compile(r"(^|/)(version|\.format_version|\.storage_alignment|byteorder|\.data/.*|data/[^/]*)$")
# What torch.export.load unpickles with torch.load (weights_only=False on failure): a .pt2's data/sample_inputs,
# data/weights and data/constants files, and the older .pt2's serialized_*.pt members.
_EXPORT_UNPICKLED = re.compile(r"(^|/)(data/[^/]+/|serialized_(state_dict|constants|example_inputs)\.pt$)")
STORAGE_ELEMENT_SIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8, "QInt8Storage": 1, "QUInt8Storage": 1,
    "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1, "UntypedStorage": 1,
}
# Where a pickle may hide in bytes of unknown layout: a PROTO opcode, or a protocol 0/1 GLOBAL line.
_PICKLE_START = re.compile(rb"\x80[\x00-\x05]|c[A-Za-z_][\w.]{0,200}\n[\w.]{1,200}\n")
MAX_CARVED_CANDIDATES = 10_000
# Bytes of opcodes all carving attempts of one file may walk together: a region built to make every
# candidate walk far (thousands of PROTO bytes before a long run of valid opcodes) would otherwise
# cost candidates x length.
MAX_CARVED_BYTES = 16 << 20  # about 7 s of walking on this machine
# A legacy torch file or plain pickle up to this size is scanned from memory: pickletools reads one opcode at a
# time, and an in-memory stream serves those reads about twice as fast as a file (a legacy file of 100,000 tensors:
# 3.6 s of scan, 1.3 s of it the file's reads). Larger files keep the file reader, so a scan's memory stays bounded.
MAX_IN_MEMORY_SCAN = 64 << 20

VERDICTS = ("safe", "suspicious", "dangerous")


@dataclass(frozen=True)
class GlobalRef:
    """One global a pickle imports, classified, and where it sits.

    Attributes:
        module / name: what it imports (`<computed>` when a STACK_GLOBAL's operands are not constants).
        safety: "safe", "dangerous" or "unknown".
        member: the archive member, or which pickle of a stacked file ("data", "pickle 2", "after storages").
        offset: byte offset of the importing opcode (in the member for zip archives, else in the file).
        opcode: GLOBAL, STACK_GLOBAL, INST or EXT1/2/4.
    """

    module: str
    name: str
    safety: str
    member: str | None
    offset: int
    opcode: str

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class ScanProblem:
    """Something the scan could not vouch for: an unparseable pickle, unexpected trailing bytes, ..."""

    member: str | None
    offset: int
    message: str


@dataclass
class ScanReport:
    """The result of scanning one file (or, merged, every file of a checkpoint).

    `verdict` is "dangerous" when any global is dangerous, "suspicious" when any is unknown or a
    problem was found, else "safe". `globals` lists each distinct global once per member.
    """

    format: str  # "pickle" or "safetensors"
    container: str  # "pytorch-zip", "pytorch-legacy", "pytorch-tar", "pickle", "safetensors" (or "mixed")
    files: list[str] = field(default_factory=list)
    pickles: int = 0
    protocol: int = 0  # the highest pickle protocol seen
    globals: list[GlobalRef] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = "safe"

    def __post_init__(self) -> None:
        self.verdict = compute_verdict(self.globals, self.problems)

    @property
    def unsafe(self) -> bool:
        return self.verdict != "safe"

    def summary(self, limit: int = 8) -> str:
        """One line: the verdict in words, each non-safe global and where it sits, the problems."""
        flagged = [g for g in self.globals if g.safety != SAFE]
        parts = [
            f"{_clip(g.qualified)} ({g.safety}, {g.opcode} in {_clip(g.member or 'the file')} at byte {g.offset})"
            for g in flagged[:limit]
        ]
        if len(flagged) > limit:
            parts.append(f"{len(flagged) - limit} more")
        parts += [f"{_clip(p.member or 'the file')} at byte {p.offset}: {_clip(p.message, 600)}"
                  for p in self.problems[:3]]
        if len(self.problems) > 3:
            parts.append(f"{len(self.problems) - 3} more problems")
        return f"{self.verdict}: " + "; ".join(parts) if parts else self.verdict


def _clip(text: str, limit: int = 200) -> str:
    """`text` cut to about `limit` characters: a global's name is whatever the pickle wrote (a GLOBAL line of a
    megabyte, a STACK_GLOBAL string of ten), and the summary is the one line a refused file gets."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def compute_verdict(globals_: list[GlobalRef], problems: list[ScanProblem]) -> str:
    if any(g.safety == DANGEROUS for g in globals_):
        return "dangerous"
    if problems or any(g.safety == UNKNOWN for g in globals_):
        return "suspicious"
    return "safe"


def safetensors_report(files: list[str] | None = None) -> ScanReport:
    """The report for safetensors files: no pickle, nothing imported, nothing to run."""
    return ScanReport(format="safetensors", container="safetensors", files=files or [])


def merge_reports(reports: list[ScanReport]) -> ScanReport:
    """One report for a checkpoint made of several files (a sharded set)."""
    if not reports:
        return safetensors_report()
    formats = {r.format for r in reports}
    containers = {r.container for r in reports}
    return ScanReport(
        format=formats.pop() if len(formats) == 1 else "pickle",
        container=containers.pop() if len(containers) == 1 else "mixed",
        files=[f for r in reports for f in r.files],
        pickles=sum(r.pickles for r in reports),
        protocol=max(r.protocol for r in reports),
        globals=[g for r in reports for g in r.globals],
        problems=[p for r in reports for p in r.problems],
        notes=[n for r in reports for n in r.notes],
    )


class _Collector:
    """Gathers walks into GlobalRefs and ScanProblems, one entry per distinct (global, member)."""

    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix
        self.globals: list[GlobalRef] = []
        self.problems: list[ScanProblem] = []
        self.notes: list[str] = []
        self.pickles = 0
        self.protocol = 0
        self._seen: set[tuple[str, str, str | None]] = set()

    def all_notes(self) -> list[str]:
        """The notes, and what a safe verdict leaves unsaid of globals only a later torch than this one has."""
        later = later_torch_note(g.qualified for g in self.globals)
        return self.notes + ([later] if later else [])

    def label(self, member: str) -> str:
        return f"{self.prefix}:{member}" if self.prefix else member

    def add_walk(self, walk: PickleWalk, member: str, base: int = 0) -> None:
        self.pickles += 1
        self.protocol = max(self.protocol, walk.protocol)
        where = self.label(member)
        names = [(found.module, found.name) for found in walk.imports]
        # copyreg._reconstructor and its bases, used for nothing but protocol 0/1's construction of inert classes.
        vouched = reconstruction_vouched(walk.pushed, [
            (f"{call.callee.module}.{call.callee.name}", _global_name(call.args[1]))
            for call in walk.calls
            if f"{call.callee.module}.{call.callee.name}" in RECONSTRUCTOR and call.opcode == "REDUCE"
            and call_problem(f"{call.callee.module}.{call.callee.name}", call.args, _global_name, call.opcode) is None
        ]) if walk.pushed else frozenset()
        for found in walk.imports:
            key = (found.module, found.name, where)
            if key in self._seen:
                continue
            self._seen.add(key)
            safety = UNKNOWN if found.module.startswith("<") else classify(found.module, found.name)
            if safety == UNKNOWN and inert_in_context(found.module, found.name, names):
                safety = INERT  # omegaconf's metadata types beside its containers: stand-ins as well
            if f"{found.module}.{found.name}" in vouched:
                safety = INERT
            self.globals.append(GlobalRef(found.module, found.name, safety, where, found.offset - base,
                                          found.opcode))
        for call in walk.calls:
            qualified = f"{call.callee.module}.{call.callee.name}"
            if call.opcode == "BUILD":
                made_args, state = call.args
                message = build_problem(qualified, made_args, state)
            else:
                message = call_problem(qualified, call.args, _global_name, call.opcode)
            if message is not None:
                self.problems.append(ScanProblem(where, call.offset - base, f"{call.opcode} {message}"))
        for offset, message in walk.problems:
            self.problems.append(ScanProblem(where, offset - base, message))
        if walk.error is not None:
            offset = (walk.error_offset if walk.error_offset is not None else walk.end) - base
            before = ", ".join(sorted({f"{g.module}.{g.name}" for g in walk.imports})) or "no globals"
            # A bound passed is a refusal like the others (what no pickler writes, and why), not a parse failure.
            message = f"{walk.error}{WALK_REFUSED}{before}" if walk.bound \
                else f"{PARSE_ERROR} ({walk.error}); found before it: {before}"
            self.problems.append(ScanProblem(where, offset, message))

    def problem(self, member: str, offset: int, message: str) -> None:
        self.problems.append(ScanProblem(self.label(member), offset, message))


# How a problem where a pickle's walk stopped starts (bytes it cannot parse), or what follows a bound's refusal (a
# nesting no pickler writes), before the globals found before it.
PARSE_ERROR = "the pickle cannot be parsed"
WALK_REFUSED = ": refused there, not walked further; found before it: "


def walk_stopped(message: str) -> bool:
    """Whether a scan problem's `message` is where a pickle's walk stopped before its STOP: bytes it cannot parse,
    or a bound passed (what the pickle holds past it is not known either way).

    Example:
        >>> walk_stopped("the pickle cannot be parsed (stack underflow); found before it: no globals")
        True
        >>> walk_stopped("memo index 300,000,000, a number no pickler reaches this early in a pickle (...)")
        False
    """
    return message.startswith(PARSE_ERROR) or WALK_REFUSED in message


def _global_name(value: object) -> str | None:
    return f"{value.module}.{value.name}" if isinstance(value, GlobalImport) else None


def _walk(handle: BinaryIO, end: int) -> PickleWalk:
    """One pickle walked with the calls the policy judges recorded."""
    return walk_pickle(handle, end, WATCHED_CALLS)


def _walk_stream(handle: BinaryIO, start: int, end: int, collector: _Collector, member: str, base: int = 0,
                 data: bytes | bytearray | memoryview | None = None) -> None:
    """Walk back-to-back pickles from `start` to `end`; anything that is not a pickle is a problem. `data`: the
    bytes `handle` reads from 0, whose first pickle's persistent ids are kept for `persistent_ids`."""
    handle.seek(start)
    index = 0
    while handle.tell() < end:
        index += 1
        offset = handle.tell()
        walk = _walk(handle, end)
        if index == 1 and data is not None:
            _remember_persistent_ids(data, walk)
        label = member if index == 1 else f"{member} (pickle {index})"
        collector.add_walk(walk, label, base)
        if walk.error is not None or walk.end <= offset:
            return
        handle.seek(walk.end)


def _scan_trailing(handle: BinaryIO, start: int, end: int, collector: _Collector, member: str) -> None:
    """Bytes after a complete checkpoint: a problem in any case, and scanned if they hold pickles."""
    handle.seek(start)
    first = _walk(handle, end)
    if first.error is not None and not first.imports:
        trailing = f"{counted(end - start, 'byte', grouped=False)} {plural(end - start, 'follows', 'follow')}"
        collector.problem(member, start, f"{trailing} the end of the checkpoint (not a pickle)")
        return
    trailing = f"{counted(end - start, 'byte', grouped=False)} {plural(end - start, 'follows', 'follow')}"
    collector.problem(member, start, f"{trailing} the end of the checkpoint, holding a pickle")
    _walk_stream(handle, start, end, collector, member)


def _carve(handle: BinaryIO, start: int, end: int, collector: _Collector, member: str) -> None:
    """Find pickles hidden in bytes of unknown layout: walk every plausible start, report those with globals."""
    position = start
    candidates = 0
    walked = 0
    while position < end and candidates < MAX_CARVED_CANDIDATES:
        handle.seek(position)
        chunk = handle.read(min(1 << 22, end - position))
        if not chunk:
            break
        for match in _PICKLE_START.finditer(chunk):
            candidates += 1
            if candidates > MAX_CARVED_CANDIDATES:
                break
            handle.seek(position + match.start())
            walk = _walk(handle, end)
            walked += walk.end - walk.start
            if walked > MAX_CARVED_BYTES:
                collector.problem(member, position + match.start(),
                                  f"gave up looking for hidden pickles after walking {MAX_CARVED_BYTES >> 20} MiB "
                                  "of candidates (the bytes look built to slow a scanner down)")
                return
            if walk.imports and (walk.error is None or any(classify(g.module, g.name) == DANGEROUS
                                                             for g in walk.imports if not g.module.startswith("<"))):
                collector.add_walk(walk, f"{member} (embedded pickle)")
        position += max(1, len(chunk) - 512)
        if len(chunk) < (1 << 22):
            break


# The persistent ids of the first pickle of the last few data.pkl members the scan walked, by the blake2b digest of
# the member's bytes: `check_record_sizes` compares them with the archive's records right after the scan, and walked
# data.pkl again for them (`inspect` of a torch.save of 100,000 str and bytes values: 4.1 s of CPU, 3.6 s with one
# walk). Keyed by content, so a file rewritten between the scan and the check is walked again.
_PERSISTENT_IDS: dict[bytes, list[object]] = {}
_PERSISTENT_IDS_KEPT = 4


def _digest(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def persistent_ids(data: bytes) -> list[object]:
    """The literal persistent ids of the first pickle in `data` (`PickleWalk.persistent_ids` of `walk_pickle`
    from byte 0): the scan's own walk of a zip's pickle member when it walked these very bytes, else a new walk.

    Example:
        >>> persistent_ids(b"\\x80\\x02(X\\x07\\x00\\x00\\x00storageX\\x01\\x00\\x00\\x000tQ.")  # BINPERSID
        [('storage', '0')]
    """
    found = _PERSISTENT_IDS.get(_digest(data))
    if found is not None:
        return found
    return walk_pickle(io.BytesIO(data), len(data)).persistent_ids


def _remember_persistent_ids(data: bytes | bytearray | memoryview, walk: PickleWalk) -> None:
    _PERSISTENT_IDS[_digest(data)] = walk.persistent_ids
    while len(_PERSISTENT_IDS) > _PERSISTENT_IDS_KEPT:
        del _PERSISTENT_IDS[next(iter(_PERSISTENT_IDS))]


def _scan_zip(handle: BinaryIO, size: int, collector: _Collector, depth: int = 0) -> None:
    layout = archive.read_layout(handle, size)
    # Irregularities PyTorch's reader tolerates are noted; every member was still found and scanned.
    collector.notes += [collector.label(message) for message in layout.notes]
    for message in layout.problems:
        collector.problem("(archive)", 0, message)
    pickle_members = 0
    # Every pickle byte walked costs ~0.5 us. Records that share one local header (a central directory listing the
    # same bytes under 20 names: a 4 KB file took 13 s, each 60 more bytes another 0.6 s) are walked once, and all
    # pickles together may inflate to at most `MAX_INFLATION` times the file (a 20 KB deflated data.pkl of 20 MB
    # took 11 s; real ones compress about 5 times).
    budget = MAX_INFLATION * size + (1 << 20)
    walked_at: dict[int, str] = {}
    first_global = len(collector.globals)
    for member in layout.members:
        # torch's zip reader (miniz, no case-sensitive flag) finds "data.pkl" under any case: "archive/DATA.PKL" of a
        # protocol-less pickle was never scanned ("no data.pkl record") while torch.load unpickled it.
        is_pickle = member.name.lower().endswith(".pkl")
        nested = False
        if not is_pickle and not _TORCH_RECORDS.search(member.name) and member.size:
            try:
                head = next(iter(archive.iter_member_chunks(handle, member, MAX_PICKLE_MEMBER)), b"")[:4]
            except ValueError:
                head = b""
            is_pickle = len(head) >= 2 and head[0] == 0x80 and head[1] <= 5
            # A torch.save file inside a .pt2 (its sample inputs, pickled weights), which torch.export.load unpickles
            # with weights_only=False, was never opened: a posix.system call in one was called safe.
            found = _EXPORT_UNPICKLED.search(member.name)
            nested = (head == archive.LOCAL_SIGNATURE or is_pickle) and found is not None
        if not is_pickle and not nested:
            continue
        pickle_members += not nested
        if member.header_offset in walked_at:
            collector.problem(member.name, 0, f"shares its bytes with the record {walked_at[member.header_offset]!r} "
                              "(no zip writer does that: an archive built to be read many times over)")
            continue
        walked_at[member.header_offset] = member.name
        limit = min(MAX_PICKLE_MEMBER, budget)
        try:
            data = archive.read_member(handle, member, limit)
        except ValueError as exc:
            if limit < MAX_PICKLE_MEMBER and "decompresses to more than" in str(exc):
                collector.problem(member.name, 0, f"its pickles inflate to more than {limit:,} bytes, "
                                  f"{MAX_INFLATION} times the file's {size:,} (a zip bomb); not scanned")
                return
            collector.problem(member.name, 0, f"cannot read the member: {exc}")
            continue
        budget -= len(data)
        if nested:
            # Raw tensor bytes of a data/ folder may start like a pickle by chance; a torch.save zip does not.
            raw_possible = head != archive.LOCAL_SIGNATURE and member.name.rpartition("/")[0].endswith(
                ("data/weights", "data/constants", "data/sample_inputs"))
            _scan_nested(bytes(data), collector, member.name, depth, strict=not raw_possible)
            continue
        stream = io.BytesIO(data)
        _walk_stream(stream, 0, len(data), collector, member.name, data=data)
    if pickle_members == 0:
        collector.notes.append("the archive holds no pickle (no data.pkl): not a torch.save file")
    constants = next((m.name for m in layout.members if m.name.endswith("constants.pkl")), None)
    if constants is not None:
        _judge_torchscript_globals(collector, first_global, constants)
    if layout.end < size:
        _scan_trailing(handle, layout.end, size, collector, "after the archive")


def _scan_nested(data: bytes, collector: _Collector, name: str, depth: int, strict: bool) -> None:
    """Scan a torch.save file held as a member of an archive (zip or legacy stream), its findings named
    `<member> > <where in it>`. `strict` is False for bytes that only start like a pickle in a .pt2's data folder
    (raw tensor bytes may, by chance): those are reported only where they import something or parse whole."""
    if depth >= 1:
        collector.problem(name, 0, "a zip or pickle inside an archive inside an archive, which the scan does not open "
                          "(no torch.save or torch.export writes one)")
        return
    inner = _Collector(None)
    handle = io.BytesIO(data)
    if data[:4] == archive.LOCAL_SIGNATURE:
        _scan_zip(handle, len(data), inner, depth + 1)
    else:
        _scan_pickle_file(handle, len(data), inner)
    if not strict and not inner.globals and inner.problems:
        return  # tensor bytes, not a pickle
    collector.pickles += inner.pickles
    collector.protocol = max(collector.protocol, inner.protocol)
    where = collector.label(name)
    collector.globals += [GlobalRef(g.module, g.name, g.safety, f"{where} > {g.member}", g.offset, g.opcode)
                          for g in inner.globals]
    collector.problems += [ScanProblem(f"{where} > {p.member}", p.offset, p.message) for p in inner.problems]


# The globals TorchScript's own unpickler (torch/csrc/jit/serialization/unpickler.cpp, readGlobal) builds itself. Any
# other name is handed to its type resolver, which in torch.jit.load compiles the class of that name from the
# archive's code/ folder (`collections.Counter` from code/collections.py) and runs its __setstate__.
_JIT_UNPICKLER_MODULES = frozenset({"torch", "torch.jit._pickle", "__main__"})
_JIT_UNPICKLER_GLOBALS = frozenset({
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor",
    "torch._tensor._rebuild_from_type_v2", "builtins.complex", "collections.OrderedDict",
    "torch.distributed.rpc.rref",
})


def _judge_torchscript_globals(collector: _Collector, first_global: int, constants: str) -> None:
    """An archive holding a constants.pkl record is handed by torch.load to torch.jit.load (`_is_torchscript_zip`),
    with weights_only=False. Its unpickler builds a few globals itself and takes every other name as a TorchScript
    class of the archive's own code: names safe to Python's unpickler (`collections.Counter`, `builtins.set`) then
    run code the archive carries (a __setstate__ calling torch.save writes any file), and the scan called such a file
    safe. Those names are said as a problem; `__torch__.*` classes are unknown already."""
    resolved = sorted({g.qualified for g in collector.globals[first_global:] if g.safety in (SAFE, INERT)
                       and g.module not in _JIT_UNPICKLER_MODULES and g.qualified not in _JIT_UNPICKLER_GLOBALS})
    if resolved:
        shown_names = ", ".join(_clip(name) for name in resolved[:3]) + (
            f" and {len(resolved) - 3} more" if len(resolved) > 3 else "")
        collector.problem(constants, 0, f"torch.load hands an archive holding {constants.rpartition('/')[2]} to "
                          f"torch.jit.load, whose unpickler takes {shown_names} not from Python but as TorchScript "
                          "classes compiled from the archive's own code/ folder, and runs their __setstate__ as it "
                          "loads")


def _is_tar(handle: BinaryIO) -> bool:
    """Whether torch.load reads the file as its legacy tar, which it tries before a pickle: whenever
    `tarfile.open(mode="r:")` takes its first header, whose checksum is all it asks for. A pre-POSIX (V7) tar has no
    "ustar" magic: such a file, whose first member's name opens a pickle of one bytes object spanning the archive, was
    walked as that harmless pickle and called safe, while torch.load unpickled its members. The other way round, a
    pickle holding "ustar" at byte 257 is no tar to tarfile, and torch.load unpickles it."""
    import tarfile

    handle.seek(0)
    head = handle.read(tarfile.BLOCKSIZE)
    handle.seek(0)
    try:
        tarfile.TarInfo.frombuf(head, tarfile.ENCODING, "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return False  # not a header (a zero block opens no member: torch's loader then finds no "storages")
    return True


def _scan_tar(handle: BinaryIO, size: int, collector: _Collector) -> None:
    """torch's oldest format, a tar of pickles ("sys_info", "storages", "tensors", "pickle").

    torch refuses it with weights_only=True but unpickles every member without; "pickle" is walked
    whole, the others (pickles mixed with raw tensor data) are carved for pickles that import.
    """
    import tarfile

    try:
        handle.seek(0)
        with tarfile.open(fileobj=handle, mode="r:") as archive:
            members = [(m.name, m.offset_data, m.size) for m in archive.getmembers() if m.isfile()]
            # A GNU sparse member is extracted as its stored chunks at the offsets of its map, zeros between: its
            # stored bytes read in place are another stream (a BINBYTES that, extracted, spans a hole of zeros
            # swallowed in place the STACK_GLOBAL of posix.system that torch.load ran). Read as extraction writes it,
            # within the inflation budget of a zip's pickles.
            budget = MAX_INFLATION * size + (1 << 20)
            expanded: dict[tuple[int, int], bytes] = {}
            for member in archive.getmembers():
                if member.isfile() and member.sparse is not None:
                    budget -= member.size
                    if budget < 0:
                        collector.problem(member.name, 0, f"its sparse map expands to more than {MAX_INFLATION} "
                                          f"times the file's {size:,} bytes (no torch.save writes a sparse member); "
                                          "not scanned")
                        return
                    source = archive.extractfile(member)
                    expanded[(member.offset_data, member.size)] = source.read() if source is not None else b""
            # The member torch.load unpickles under each name: the last of that name, through a link (extracting a
            # hard link "storages" writes the data of the member it names).
            read: dict[tuple[int, int], str] = {}
            for name in ("storages", "tensors", "pickle"):
                try:
                    found = archive.getmember(name)
                    for _ in range(40):  # links to links, as far as a system follows them (no loop forever)
                        if not (found.islnk() or found.issym()):
                            break
                        found = archive._find_link_target(found)  # what tarfile's extract and extractfile follow
                except (KeyError, tarfile.TarError):
                    continue
                if found.isfile():
                    read[(found.offset_data, found.size)] = name
    except (tarfile.TarError, ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        collector.problem("(tar)", 0, f"cannot read the tar archive: {clip_words(' '.join(str(exc).split()), 120)}")
        # torch.load then reads the file as a pickle (legacy_load's TarError is its cue): walk it as one.
        _scan_pickle_file(handle, size, collector)
        return
    # torch.load unpickles the file from byte 0 on any TarError its tar loader meets after the open, in an extraction
    # too (a member Python 3.14's default extraction filter refuses: a hard link "storages" to an absolute path). A
    # genuine tar's first header is no pickle; one there that imports is reported.
    handle.seek(0)
    first = _walk(handle, size)
    if first.imports:
        collector.add_walk(first, "the file read as a pickle (torch.load's fallback when its tar loader fails)")
    for name, offset, length in members:
        data = expanded.get((offset, length))
        if data is None:
            data = _read_region(handle, offset, min(size, offset + length))
        region = io.BytesIO(data)
        role = read.get((offset, length))
        if role == "pickle":
            _walk_stream(region, 0, len(data), collector, name)
            continue
        if role is not None:
            _walk_tar_records(region, len(data), collector, name, role)
        _carve(region, 0, len(data), collector, name)


def _walk_tar_records(region: BinaryIO, end: int, collector: _Collector, name: str, role: str) -> None:
    """Walk the pickles of a legacy tar's "storages" or "tensors" member where torch.load unpickles them: a count,
    then per record a pickle of its arguments and the raw bytes that follow it (a storage: an int64 count of
    elements and their bytes; a tensor: its ndim, sizes, strides and offset), then for storages a pickle of views.
    Carving alone found only pickles that open with PROTO or a GLOBAL line: one of protocol 4 opcodes without a
    PROTO (STACK_GLOBAL of posix.system) went unseen, and torch.load ran it.

    The records are followed as torch's loop reads them: `range(count)` of a bool (True is one record) or of a
    negative count (none: the views pickle comes next), and arguments unpacked from a list as from a tuple. Where
    the layout cannot be followed but torch.load may read on (a count or arguments built by a call, a storage type
    of no known size), a problem says so: stopping there in silence called such a file safe while torch.load
    unpickled the PROTO-less pickle after it. What lies beyond is still carved."""
    position, index = 0, 0

    def walk_next() -> PickleWalk | None:
        nonlocal position, index
        region.seek(position)
        walk = _walk(region, end)
        index += 1
        collector.add_walk(walk, name if index == 1 else f"{name} (pickle {index})")
        if walk.error is not None or walk.end <= position:
            return None
        position = walk.end
        return walk

    def lost(what: str) -> None:
        collector.problem(name, position, f"{what}: the scan cannot follow its records past byte {position:,}, "
                          "where torch.load's legacy tar loader reads on and unpickles what it finds")

    first = walk_next()
    if first is None:
        return
    count = first.value
    if not isinstance(count, int):  # bool included: range(True) is one record to torch's loop
        built = isinstance(count, OpaqueDict) or call_result(count)
        lost("its record count is built by a call, not a literal the scan can read" if built
             else f"its record count is {shown(count)}, not an integer")
        return
    for _ in range(max(0, count)):
        if position >= end:
            return
        record = walk_next()
        if record is None:
            return
        args = record.value
        if not (isinstance(args, (tuple, list)) and len(args) == 3):
            # torch unpacks `key, ..., ... = args`: three values of any sequence (a tensor record reads no type).
            built = isinstance(args, OpaqueDict) or call_result(args)
            lost("a record's arguments are built by the pickle, not literal values the scan can read" if built
                 else f"a record's arguments are {shown(args)}, not three values")
            return
        region.seek(position)
        if role == "storages":
            element = STORAGE_ELEMENT_SIZE.get(getattr(args[2], "name", None) or "")
            if element is None:
                lost(f"a storage record's type is {_global_name(args[2]) or shown(args[2])}, of no size the scan knows")
                return
            header = region.read(8)
            if len(header) < 8 or struct.unpack("<q", header)[0] < 0:
                return
            position += 8 + struct.unpack("<q", header)[0] * element
        else:
            header = region.read(4)
            if len(header) < 4 or struct.unpack("<i", header)[0] < 0:
                return
            position += 8 + 16 * struct.unpack("<i", header)[0] + 8
        if position > end:
            return
    if role == "storages" and position < end:
        walk_next()


def _read_region(handle: BinaryIO, start: int, end: int) -> bytes:
    handle.seek(start)
    return handle.read(max(0, end - start))


def _storage_sizes(data_walk: PickleWalk) -> dict[str, int]:
    """Legacy format: storage key -> element size, from the data pickle's persistent ids."""
    sizes: dict[str, int] = {}
    for pid in data_walk.persistent_ids:
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] in ("storage", b"storage"):
            storage_type = getattr(pid[1], "name", None)
            key = pid[2]
            if isinstance(key, (str, bytes)) and storage_type in STORAGE_ELEMENT_SIZE:
                # torch's legacy loader types a storage at its first reference; later ones share it as it is.
                name = key if isinstance(key, str) else key.decode("latin-1")
                sizes.setdefault(name, STORAGE_ELEMENT_SIZE[storage_type])
    return sizes


def _storage_counts(data_walk: PickleWalk) -> dict[str, int]:
    """Legacy format: storage key -> the element count the data pickle declares (the first reference's)."""
    counts: dict[str, int] = {}
    for pid in data_walk.persistent_ids:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage") \
                and isinstance(pid[2], (str, bytes)) and isinstance(pid[4], int) and not isinstance(pid[4], bool):
            counts.setdefault(pid[2] if isinstance(pid[2], str) else pid[2].decode("latin-1"), pid[4])
    return counts


def _scan_pickle_file(handle: BinaryIO, size: int, collector: _Collector) -> str:
    """Scan a legacy torch file or a plain pickle; return which of the two it is."""
    handle.seek(0)
    first = _walk(handle, size)
    if first.error is not None or first.value != LEGACY_MAGIC_NUMBER or isinstance(first.value, bool):
        collector.add_walk(first, "pickle 1")
        if first.error is None and first.end < size:
            # pickle.load reads the first pickle only: whatever follows would be invisible to every command.
            _scan_trailing(handle, first.end, size, collector, "after the pickle")
        return "pickle"
    collector.add_walk(first, LEGACY_PICKLES[0])
    walks = [first]
    position = first.end
    for label in LEGACY_PICKLES[1:]:
        handle.seek(position)
        walk = _walk(handle, size)
        collector.add_walk(walk, label)
        walks.append(walk)
        if walk.error is not None:
            return "pytorch-legacy"
        position = walk.end
    keys = walks[4].value
    sizes = _storage_sizes(walks[3])
    declared = _storage_counts(walks[3])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k in sizes for k in keys):
        # The storage layout cannot be followed: look for pickles hidden anywhere in what follows.
        _carve(handle, position, size, collector, "storage data")
        return "pytorch-legacy"
    for key in keys:
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            collector.problem("storage data", position, f"storage {key!r} is cut short (truncated file)")
            return "pytorch-legacy"
        (count,) = struct.unpack("<q", header)
        if count >= 0 and declared.get(key, count) != count:
            # torch.load allocates the size the pickle declares (a 1 KB file asked for 32 GB: "can't allocate
            # memory"), then refuses the record with "storage has wrong byte size: expected %ld got %ld", unformatted.
            collector.problem("storage data", position, f"storage {key!r} holds {count:,} elements, but the pickle "
                              f"declares {declared[key]:,} (a damaged file: torch.load refuses it, storage has wrong "
                              "byte size)")
            return "pytorch-legacy"
        position += 8 + max(0, count) * sizes[key]
        if count < 0 or position > size:
            collector.problem("storage data", position, f"storage {key!r} runs past the end of the file")
            return "pytorch-legacy"
    if position < size:
        _scan_trailing(handle, position, size, collector, "after the storages")
    return "pytorch-legacy"


def scan_file(path: str | os.PathLike[str], label: str | None = None) -> ScanReport:
    """Scan one pickle-based checkpoint file statically; nothing in it is unpickled or imported.

    Example:
        >>> report = scan_file("pytorch_model.bin")  # doctest: +SKIP
        >>> report.verdict, [g.qualified for g in report.globals][:2]  # doctest: +SKIP
        ('safe', ['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2'])

    Args:
        path: a `.bin`/`.pt`/`.pth`/`.ckpt`/`.pkl` file (zip, legacy or plain pickle).
        label: how the file is named in `member` (a shard's relative path); None for a single file.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    collector = _Collector(label)
    size = path.stat().st_size
    # The walk keeps every literal of the pickle (memo, stack, persistent ids) until it ends, and the collector's
    # passes over them found no cycle to free (see weightdoctor.gcpause).
    with gc_paused(), open(path, "rb") as handle:
        head = handle.read(4)
        if head == archive.LOCAL_SIGNATURE:
            container = "pytorch-zip"
            _scan_zip(handle, size, collector)
        elif _is_tar(handle):
            container = "pytorch-tar"
            _scan_tar(handle, size, collector)
        elif size <= MAX_IN_MEMORY_SCAN:
            # The same bytes the file reader would see (a file cut short since its stat ends early either way).
            handle.seek(0)
            container = _scan_pickle_file(io.BytesIO(handle.read(size)), size, collector)
        else:
            container = _scan_pickle_file(handle, size, collector)
    return ScanReport(format="pickle", container=container, files=[label or path.name], pickles=collector.pickles,
                      protocol=collector.protocol, globals=collector.globals, problems=collector.problems,
                      notes=collector.all_notes())


def scan_embedded_pickle(path: str | os.PathLike[str], start: int) -> ScanReport:
    """Scan the one pickle that starts at byte `start` of a file of another format: a NumPy .npy of Python objects,
    whose `numpy.load(allow_pickle=True)` unpickles what follows its header. Offsets are the file's own.

    Raises:
        OSError: the file cannot be read.
    """
    collector = _Collector(None)
    size = Path(path).stat().st_size
    with open(path, "rb") as handle:
        handle.seek(start)
        collector.add_walk(_walk(handle, size), Path(path).name)
    return ScanReport(format="pickle", container="pickle", files=[Path(path).name], pickles=collector.pickles,
                      protocol=collector.protocol, globals=collector.globals, problems=collector.problems,
                      notes=collector.all_notes())


def scan_bytes(data: bytes) -> ScanReport:
    """Scan an in-memory pickle stream (for tests and fuzzing); same rules as `scan_file`."""
    collector = _Collector(None)
    handle = io.BytesIO(data)
    if data[:4] == archive.LOCAL_SIGNATURE:
        container = "pytorch-zip"
        _scan_zip(handle, len(data), collector)
    elif _is_tar(handle):
        container = "pytorch-tar"
        _scan_tar(handle, len(data), collector)
    else:
        container = _scan_pickle_file(handle, len(data), collector)
    return ScanReport(format="pickle", container=container, pickles=collector.pickles,
                      protocol=collector.protocol, globals=collector.globals, problems=collector.problems,
                      notes=collector.all_notes())


__all__ = ["GlobalRef", "ScanProblem", "ScanReport", "VERDICTS", "SAFE", "scan_file", "scan_bytes",
           "scan_embedded_pickle", "merge_reports", "safetensors_report", "persistent_ids"]
