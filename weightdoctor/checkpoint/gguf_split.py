"""Split GGUF files (llama.cpp's gguf-split): the parts of one set found, checked and read as one checkpoint.

Layout (llama.cpp's examples/gguf-split/gguf-split.cpp, `split_strategy`): part n of N is named
`{prefix}-{n:05d}-of-{N:05d}.gguf` (n from 1; `llama_split_path`), and every part holds `split.no` (uint16, n - 1),
`split.count` (uint16, N) and `split.tensors.count` (int32, the tensors of the whole set). Only the first part holds
the model's metadata (architecture, hyperparameters, tokenizer); the others hold the three split keys alone. With
--no-tensor-first-split the first part holds no tensor. llama.cpp's loader (llama_model_loader) reads part 1's
split.count, opens the other parts by that name pattern and checks each part's split.no.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from weightdoctor.checkpoint.gguf_format import GgufHeader
from weightdoctor.errors import CorruptCheckpoint, SourceNotFound

SPLIT_NAME = re.compile(r"(?P<prefix>.+)-(?P<number>\d{5})-of-(?P<count>\d{5})\.gguf", re.IGNORECASE)
# The most parts read as one set. split.count is a uint16 (65,535), and the name allows 99,999: each part is a file
# opened and a header parsed, and the largest sets published (a 671B model in BF16 at gguf-split's default sizes) have
# some 30 to 50 parts.
MAX_PARTS = 10_000
# Missing parts named in the error before "and N more".
_SHOWN = 5


@dataclass(frozen=True)
class SplitName:
    """What a part's file name says: its set's prefix, its number (from 1) and the set's count of parts."""

    prefix: str
    number: int
    count: int

    def part_name(self, number: int) -> str:
        return f"{self.prefix}-{number:05d}-of-{self.count:05d}.gguf"


def split_name(name: str) -> SplitName | None:
    """The split set a file name says it belongs to, or None for a name of no set.

    Example:
        >>> split_name("m-00002-of-00003.gguf")
        SplitName(prefix='m', number=2, count=3)
    """
    found = SPLIT_NAME.fullmatch(name)
    if found is None:
        return None
    return SplitName(found["prefix"], int(found["number"]), int(found["count"]))


def set_parts(path: Path) -> list[Path] | None:
    """The parts of the split set `path` is named a part of, in order, when its name says it is one of more than one
    (`m-00002-of-00003.gguf`); None otherwise (a GGUF of one file).

    Raises:
        CorruptCheckpoint: the name's numbers are impossible (part 0, part 4 of 3, more than `MAX_PARTS`).
        SourceNotFound: parts are missing beside it (each named, with what downloads or merges them).
    """
    named = split_name(path.name)
    if named is None or named.count == 1 and named.number == 1:
        return None
    if named.number < 1 or named.number > named.count or named.count > MAX_PARTS:
        why = (f"more than the {MAX_PARTS:,} parts read as one set" if named.count > MAX_PARTS
               else "which no set has")
        raise CorruptCheckpoint(f"its name says it is part {named.number:,} of {named.count:,} of a split GGUF "
                                f"(llama.cpp's gguf-split), {why}", str(path))
    folder = path.parent
    try:
        # One listing of the folder, not a stat per part: a name saying 99,999 parts costs one pass.
        present = {entry.name for entry in os.scandir(folder)}
    except OSError as exc:
        raise SourceNotFound(f"cannot list the folder of a split GGUF part: {exc.strerror}", str(path)) from exc
    names = [named.part_name(number) for number in range(1, named.count + 1)]
    missing = [name for name in names if name not in present]
    if missing:
        shown = ", ".join(missing[:_SHOWN]) + (f" and {len(missing) - _SHOWN:,} more" if len(missing) > _SHOWN
                                              else "")
        raise SourceNotFound(f"part {named.number} of {named.count} of a split GGUF (llama.cpp's gguf-split), whose "
                             f"other {'part' if len(missing) == 1 else 'parts'} {shown} "
                             f"{'is' if len(missing) == 1 else 'are'} not beside it in {folder}: download every "
                             "part; the set is read as one checkpoint", str(path))
    others = sorted(name for name in present if (other := split_name(name)) is not None
                    and other.prefix == named.prefix and other.count != named.count)
    if others:
        # Two splits of one model under one prefix (re-split with another size): which set is meant is unsure.
        raise CorruptCheckpoint(f"part {named.number} of {named.count} of a split GGUF, beside {others[0]}, a part of "
                                f"another split of the same name ({len(others):,} such files): not one set; move one "
                                "set to its own folder", str(path))
    return [folder / name for name in names]


def check_set(parts: list[Path], headers: list[GgufHeader | None]) -> str:
    """Check the headers of a split set's parts (in order) against each other and their names; return the note
    that says the set was read as one.

    Raises:
        CorruptCheckpoint: a part whose split.no, split.count or split.tensors.count disagrees with its name or
            the other parts (a link to another part has that part's split.no), a GGUF version differing between
            parts, a tensor in two parts, or a tensor count other than split.tensors.count.
    """
    count = len(parts)
    for number, (path, header) in enumerate(zip(parts, headers, strict=True), start=1):
        if header is None:
            raise CorruptCheckpoint(f"part {number} of {count} of a split GGUF is not a GGUF file (no GGUF magic)",
                                    str(path))
    first = headers[0]
    assert first is not None
    expected_total = first.metadata.get("split.tensors.count")
    owner: dict[str, int] = {}
    for number, (path, header) in enumerate(zip(parts, headers, strict=True), start=1):
        assert header is not None
        where = f"part {number} of {count} of a split GGUF"
        for key, expected in (("split.no", number - 1), ("split.count", count),
                              ("split.tensors.count", expected_total)):
            value = header.metadata.get(key)
            if not _is_int(value):
                raise CorruptCheckpoint(f"{where}: its metadata has no integer {key} (gguf-split writes it in every "
                                        f"part): not a part of this set", str(path))
            if value != expected:
                said = f"{value:,}"
                wanted = (f"{expected} (its name says part {number})" if key == "split.no" else
                          f"{expected:,} ({'its name says' if key == 'split.count' else 'part 1 says'} so)")
                raise CorruptCheckpoint(f"{where}: its {key} is {said}, where this part's is {wanted}: the parts are "
                                        "not of one set", str(path))
        if header.version != first.version:
            raise CorruptCheckpoint(f"{where}: GGUF version {header.version}, where part 1 is version "
                                    f"{first.version}: the parts are not of one gguf-split run", str(path))
        for info in header.tensors:
            if info.name in owner:
                raise CorruptCheckpoint(f"{where}: tensor {info.name!r} is in part {owner[info.name]} too: the parts "
                                        "are not of one set", str(path))
            owner[info.name] = number
    if not _is_int(expected_total) or expected_total != len(owner):
        raise CorruptCheckpoint(f"a split GGUF of {count} parts holds {len(owner):,} tensors, where its "
                                f"split.tensors.count says {expected_total:,}: a part is truncated or of "
                                "another set", str(parts[0]))
    return (f"{parts[0].name} ... {parts[-1].name}: the {count} parts of a split GGUF (llama.cpp's gguf-split), read "
            f"as one checkpoint of {len(owner):,} tensors (split.tensors.count)")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def loaded_name(names: list[str]) -> str:
    """The GGUF file from_pretrained(gguf_file=) reads for GGUF files `names` read as one checkpoint: the file
    itself, or for a split set's parts the file llama-gguf-split --merge writes of them (transformers reads one
    file).

    Example:
        >>> loaded_name(["m-00001-of-00002.gguf", "m-00002-of-00002.gguf"])
        'm.gguf'
    """
    named = split_name(names[0]) if len(names) > 1 else None
    return f"{named.prefix}.gguf" if named is not None else names[0]
