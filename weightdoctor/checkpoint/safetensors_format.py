"""Reading the safetensors format: the header alone for structure, one tensor's bytes on demand.

The header is parsed here as well as by the safetensors library: the library validates offsets and
dtypes, and this parser adds what the library does not check or expose (duplicate keys, which it
silently collapses; names unfit for use; the byte offsets). Tensor bytes are read with ordinary file
reads rather than through a memory map, so that a file truncated while it is being read raises an
error instead of killing the process with SIGBUS.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate, chain, repeat
from operator import floordiv, itemgetter, le, mul, sub
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.checkpoint.model import TensorInfo, strides_overflow, tensor_infos
from weightdoctor.dtypes import BITS_PER_ELEMENT, SAFETENSORS_TO_CANONICAL, SIX_BIT
from weightdoctor.errors import CorruptCheckpoint, UnsupportedEnvironment, UnsupportedFormat, clip_middle
from weightdoctor.gcpause import gc_paused
from weightdoctor.jsontext import TooManyEntries, parse_json, refuse_too_many_entries
from weightdoctor.wording import counted

if TYPE_CHECKING:
    import torch

# The safetensors library refuses headers above 100 MB; so do we, before reading them.
MAX_HEADER_BYTES = 100_000_000
# Real checkpoints have at most tens of thousands of tensors per file; a header with more is refused
# before it is parsed (every entry is a JSON object, so counting "{" bounds the count from above).
MAX_TENSORS = 200_000
# Real `__metadata__` holds some tens of entries (kohya's LoRA metadata, ~50, some of long values); entries are no
# JSON objects, so the count of "{" let millions through: 5,000,000 of `"i": ""` (a 74 MB file) were parsed here,
# then again by the safetensors library, which keeps them twice (check-dtype and convert rose 2 GB).
MAX_METADATA_ENTRIES = 200_000
# The longest `__metadata__` value a header keeps once parsed: as long as the longest tensor name read (an alias
# record of huggingface_hub's is {dropped name: name kept}), and past any genuine value (kohya's ss_tag_frequency,
# a modelspec thumbnail: some hundreds of KB). A 60 MB value was kept whole for the whole run: plan-devices rose from
# 345 to 517 MB, diff-keys A A from 39 to 266 MB, and inspect --json printed it. Longer ones are cut in their middle
# (`clip_middle`, which says so in the value); convert and shard, which carry the source's metadata into their output,
# read it whole again (`read_whole_metadata`).
MAX_METADATA_VALUE_CHARS = 1 << 20
# A tensor's entry is at least 5 JSON strings (its name, "dtype" and its value, "shape", "data_offsets"), a metadata
# entry 2, "__metadata__" 1: a header within both bounds holds at most this many.
_MAX_STRINGS = 5 * MAX_TENSORS + 2 * MAX_METADATA_ENTRIES + 1
# Values and members (`jsontext.refuse_too_many_entries`): a tensor's entry of d dims is d + 6 of them, a metadata
# entry 1. A shape of 5,000,000 dims of 1 (a 10 MB header) took convert 17 s and 503 MiB, inspect 15 s; the 100 MB
# header bound let ten times that through. 200,000 tensors of 8 dims and a full __metadata__ pass.
_MAX_HEADER_ENTRIES = 14 * MAX_TENSORS + MAX_METADATA_ENTRIES + 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The largest dimension torch can hold (int64); the library takes up to 2**64 - 1, but no tensor can have it.
MAX_DIM = 2**63 - 1
# The safetensors library multiplies a shape's dimensions in order in a 64-bit unsigned integer and refuses the
# file when that overflows, even if a later dimension is 0: [2**40, 2**40, 0] passed here (an empty tensor) and
# plan-devices then asked torch for it (an unexpected RuntimeError: "Storage size calculation overflowed").
MAX_RUNNING_PRODUCT = 2**64 - 1
# A `\uXXXX` escape of a UTF-16 surrogate: JSON text that may hold one unpaired (Python accepts it, the library not).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
FP4 = "float4_e2m1fn_x2"
# Bytes per element of the dtypes whose elements are whole bytes (for `_checked_entries_fast`).
_BYTES_PER_ELEMENT = {dtype: bits // 8 for dtype, bits in BITS_PER_ELEMENT.items() if bits % 8 == 0}


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header of one safetensors file."""

    header_size: int
    tensors: list[TensorInfo]
    metadata: dict[str, str] | None
    # (device, inode, size, mtime_ns) when the header was read: a tensor read from a file that has
    # changed since then is refused rather than mixed with the old header.
    identity: tuple[int, int, int, int] | None = None
    # The metadata keys whose values `metadata` holds cut (past MAX_METADATA_VALUE_CHARS), with their whole lengths,
    # the longest first.
    metadata_cut: tuple[tuple[str, int], ...] = ()

    @property
    def data_start(self) -> int:
        return 8 + self.header_size


def looks_like_safetensors(prefix: bytes) -> bool:
    """True when the first bytes of a file are a plausible safetensors header start."""
    if len(prefix) < 9:
        return False
    (size,) = struct.unpack("<Q", prefix[:8])
    return 2 <= size <= MAX_HEADER_BYTES and prefix[8:9] in (b"{", b" ")


class _Repeated(dict):  # type: ignore[type-arg]
    """An object of the header that gave `repeated` twice (json.loads keeps the last one without a word);
    `dropped` is a value json.loads dropped that is no string, else None."""

    repeated: str
    dropped: Any = None


def _refuse_repeated_keys(text: str) -> None:
    """Parse `text` again and refuse a key given twice where the safetensors library refuses it: a tensor's name,
    `__metadata__`, or a field of a tensor's entry (`dtype`, `shape`, `data_offsets`).

    Every repeated key of any object was refused as `header lists tensor 'dtype' twice`: a field of one entry was
    called a tensor, and a key repeated inside `__metadata__` (which the library reads, keeping the last, as the
    fast path here does) refused the file whenever anything else sent it down this path (a colon in a name).
    json.loads builds inner objects first and cannot say where one sits: each is marked, and the header is looked
    at once it is whole.

    A key repeated inside `__metadata__` is refused where a value json.loads dropped is no string: the library
    reads that one too, and refuses it.

    Raises:
        CorruptCheckpoint: naming the key and the tensor or header that repeats it.
    """
    marked: list[_Repeated] = []

    def mark(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        repeated = None
        dropped = None
        for key, value in pairs:
            if key in result:
                repeated = repeated if repeated is not None else key
                if dropped is None and not isinstance(result[key], str):
                    dropped = (key, result[key])
            result[key] = value
        if repeated is None:
            return result
        marked.append(_Repeated(result))
        marked[-1].repeated = repeated
        marked[-1].dropped = dropped
        return marked[-1]

    header = json.loads(text, object_pairs_hook=mark)
    if not marked or not isinstance(header, dict):
        return
    if isinstance(header, _Repeated):
        key = header.repeated
        raise CorruptCheckpoint("header gives __metadata__ twice" if key == "__metadata__"
                                else f"header lists tensor {key!r} twice")
    metadata = header.get("__metadata__")
    if isinstance(metadata, _Repeated) and metadata.dropped is not None:
        # The library reads every value of __metadata__ as a string, the dropped one too ("invalid type: null,
        # expected a string"); only a string given twice is read as json.loads reads it, the last kept.
        key, value = metadata.dropped
        raise CorruptCheckpoint(f"__metadata__ must map strings to strings (it gives {key!r} twice, once as "
                                f"{clip_middle(json.dumps(value), 80)})")
    for name, entry in header.items():
        if name != "__metadata__" and isinstance(entry, _Repeated) and entry.repeated in _ENTRY_FIELDS:
            raise CorruptCheckpoint(f"tensor {name!r} gives its {entry.repeated!r} twice")


_ENTRY_FIELDS = ("dtype", "shape", "data_offsets")


_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")
# Joins names for one regex pass; a private-use character no name check looks for.
_NAME_JOINER = "\ue000"


def _colons_prove_no_duplicates(text: str, header: dict[str, Any]) -> bool:
    """True when the colons of `text` prove that no key of any object of the JSON text was repeated.

    In JSON every key of every object is followed by one colon outside strings, and a colon outside
    strings is nothing else, so the text's colons are at least its keys, which are at least the keys
    `json.loads` kept (one of duplicates), which are at least those of the top-level object and of its
    dict values. When the colons are exactly that last count, every inequality is an equality: no key
    anywhere was dropped. A colon in a name or value, or an object nested deeper, makes them differ.
    One pass over the text.
    """
    values = header.values()
    return set(map(type, values)) <= {dict} and text.count(":") == len(header) + sum(map(len, values))


def _keys_and_string_colons(value: Any) -> int:
    """The keys of every object in `value` and the colons of every string in it (keys included)."""
    if isinstance(value, str):
        return value.count(":")
    if isinstance(value, dict):
        return len(value) + sum(key.count(":") + _keys_and_string_colons(item) for key, item in value.items())
    if isinstance(value, list):
        return sum(_keys_and_string_colons(item) for item in value if isinstance(item, (str, dict, list)))
    return 0


def _string_colons_prove_no_duplicates(text: str, header: dict[str, Any]) -> bool:
    """True when the colons of `text` prove no key was repeated, counting those inside its strings.

    The text's colons are one per key of every object it holds (a repeated key's included) plus those inside its
    strings (a dropped value's included), each written as it reads unless escaped. When they are exactly the keys
    and string colons of the parsed header, nothing was dropped. A colon escaped as \\u003a reads as one the text
    does not hold, so that it could hide a dropped key's: a text with one proves nothing.
    """
    if "\\u003" in text and ("\\u003a" in text or "\\u003A" in text):
        return False
    colons = text.count(":")
    values = header.values()
    if set(map(type, values)) <= {dict}:
        # A bound first, in C but for the metadata: the parsed keys and string colons are at least the top-level
        # keys and their colons, each entry's keys and the metadata's string colons, and at most the text's colons.
        # Where the text holds no more, they are equal. Walking every entry (below) cost 0.09 s of CPU on 50,000
        # tensors named `...kernel:0` (or on any header whose metadata holds a colon: a URL, a time of day), where
        # the key-name counts it replaced cost 0.01 s.
        metadata = header.get("__metadata__")
        bound = (len(header) + sum(map(len, values)) + "".join(header).count(":")
                 + (_keys_and_string_colons(metadata) - len(metadata) if metadata is not None else 0))
        if colons == bound:
            return True
    return colons == _keys_and_string_colons(header)


def _may_hide_duplicates(text: str, header: dict[str, Any]) -> bool:
    """False when the colons prove that no key (top-level or inside an entry) was repeated.

    First by colons outside strings (`_colons_prove_no_duplicates`), then by every colon, those of names and
    metadata counted (`_string_colons_prove_no_duplicates`); anything else goes to the slow check. Counting the
    names "dtype", "shape" and "data_offsets" instead cleared a tensor listed twice whose other entry holds none
    of them (`"w": {}` before the real "w": json.loads keeps the last, the library refuses the first).
    """
    return not (_colons_prove_no_duplicates(text, header) or _string_colons_prove_no_duplicates(text, header))


def _check_names(header: dict[str, Any], text: str | None = None) -> None:
    """Refuse empty names, control characters and path separators (one regex pass in the common case).

    `text`: the JSON text `header` was parsed from by `json.loads` (strict, so control characters in its
    strings were backslash escapes). A text with no backslash, slash or DEL byte anywhere holds no name
    with a character the regex pass looks for (a backslash too is written as an escape): the pass is
    skipped.
    """
    if text is not None and "\\" not in text and "/" not in text and "\x7f" not in text:
        bad_chars = False
    else:
        bad_chars = _BAD_NAME_CHARS.search(_NAME_JOINER.join(header)) is not None
    if bad_chars or "" in header or "." in header or ".." in header:
        for name in header:
            check_tensor_name(name)


def check_tensor_name(name: str) -> None:
    """Refuse an empty name, control characters, path separators, `__metadata__` and unpaired surrogates
    (`CorruptCheckpoint`)."""
    if not name:
        raise CorruptCheckpoint("a tensor has an empty name")
    if _CONTROL.search(name):
        raise CorruptCheckpoint(f"tensor name {name!r} contains control characters")
    if "/" in name or "\\" in name or name in {".", ".."}:
        raise CorruptCheckpoint(f"tensor name {name!r} contains a path separator")
    if name == "__metadata__":
        raise CorruptCheckpoint("tensor name '__metadata__' is the key of a safetensors header's metadata")
    if _SURROGATES.search(name):
        raise CorruptCheckpoint(f"tensor name {name!r} holds an unpaired UTF-16 surrogate (not valid Unicode)")


def read_header(path: Path, relpath: str, whole_metadata: bool = False) -> SafetensorsHeader:
    """Parse and validate the header of a safetensors file, reading no tensor data. Metadata values longer than
    `MAX_METADATA_VALUE_CHARS` are kept cut in their middle (`metadata_cut` names them) unless `whole_metadata`.

    Example:
        >>> header = read_header(Path("model.safetensors"), "model.safetensors")  # doctest: +SKIP
        >>> header.tensors[0].name, header.tensors[0].shape  # doctest: +SKIP

    Raises:
        CorruptCheckpoint: the file is too short, the header is not valid JSON, offsets overlap or run
            past the end of the file, a dtype is unknown, a key is duplicated or badly named.
    """
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        file_size = stat.st_size
        identity = _identity(stat)
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CorruptCheckpoint(f"file is {counted(file_size, 'byte', grouped=False)}, too short to be safetensors")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > MAX_HEADER_BYTES:
            from weightdoctor.checkpoint.foreign import text_reply_hint

            raise CorruptCheckpoint(
                f"not a safetensors file, or a damaged one: its first 8 bytes give a header of {header_size} bytes"
                f" (the limit is {MAX_HEADER_BYTES}){text_reply_hint(Path(path))}"
            )
        if 8 + header_size > file_size:
            raise CorruptCheckpoint(
                f"header claims {counted(header_size, 'byte', grouped=False)} "
                f"but the file has only {file_size - 8} after the prefix"
                " (truncated?)"
            )
        # The parse allocates a few containers per entry, all kept: see weightdoctor.gcpause. The bytes read are
        # handed over, not kept here: `_parse_header` drops them once decoded (a 90 MB header was held three times
        # over, bytes, text and parsed values, at the parse's peak).
        with gc_paused():
            metadata, tensors = _parse_header(handle.read(header_size), relpath, file_size - 8 - header_size)
    cut: tuple[tuple[str, int], ...] = ()
    if metadata and not whole_metadata:
        # The longest first: the one a warning names.
        cut = tuple(sorted(((key, len(value)) for key, value in metadata.items()
                            if len(value) > MAX_METADATA_VALUE_CHARS), key=lambda cut: (-cut[1], cut[0])))
        if cut:
            metadata = {key: clip_middle(value, MAX_METADATA_VALUE_CHARS) for key, value in metadata.items()}
    return SafetensorsHeader(header_size=header_size, tensors=tensors, metadata=metadata, identity=identity,
                             metadata_cut=cut)


def read_whole_metadata(path: Path, header: SafetensorsHeader) -> dict[str, str] | None:
    """The `__metadata__` of the file `header` was read from, every value whole (`header.metadata` where none was
    cut).

    Raises:
        CorruptCheckpoint: the file changed since `header` was read, or no longer parses.
    """
    if not header.metadata_cut:
        return header.metadata
    again = read_header(path, Path(path).name, whole_metadata=True)
    if header.identity is not None and again.identity != header.identity:
        raise CorruptCheckpoint("the file changed since its header was read (size or modification time); its "
                                "metadata is not carried over")
    return again.metadata


def _parse_header(raw: bytes, relpath: str, data_size: int) -> tuple[dict[str, str] | None, list[TensorInfo]]:
    """Parse and check a header's JSON text: (its `__metadata__`, its tensors). See `read_header`.

    `raw` is dropped once decoded and the decoded text once parsed: a caller that keeps no reference of its own
    (`read_header`) has the header's bytes, text and parsed values held two at a time at most, not three.
    """
    if not raw.startswith(b"{"):
        raise CorruptCheckpoint("header does not start with '{' (leading whitespace or garbage)")
    # Every "{" is a byte of the text: one no longer than the bound cannot pass it, and is not counted (a pass over
    # the whole text, 27 us for a 70B-class model's 80 KB header).
    braces = raw.count(b"{") if len(raw) > MAX_TENSORS + 2 else 0
    if braces > MAX_TENSORS + 2:
        raise CorruptCheckpoint(
            f"header holds {braces - 1:,} JSON objects, so up to that many tensors (the limit is {MAX_TENSORS:,})"
        )
    _refuse_too_many_strings(raw)
    try:
        # The "{" counted above, where the text is longer than MAX_TENSORS + 2 (always, where this one counts).
        refuse_too_many_entries(raw, _MAX_HEADER_ENTRIES, curly=braces if len(raw) > MAX_TENSORS + 2 else None)
    except TooManyEntries as exc:
        raise CorruptCheckpoint(f"header: {exc}, more than {MAX_TENSORS:,} tensors of 8 dims and a __metadata__ of "
                                f"{MAX_METADATA_ENTRIES:,} entries hold") from None
    try:
        text = raw.decode("utf-8")
        del raw  # the checks below read the text (a UTF-8 byte below 0x80 is always its own character)
        try:
            header = parse_json(text)
        except ValueError:
            # The padding spaces at the end are whitespace to json.loads, so they change no verdict, only where
            # an error says the text ended: read again without them (stripping them first copied 1 MB headers).
            text = text.rstrip(" ")
            header = parse_json(text)
    except (UnicodeDecodeError, ValueError) as exc:  # malformed, an integer past the digit limit, too deep
        raise CorruptCheckpoint(f"header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CorruptCheckpoint("header is not a JSON object")
    if "-" in text and "-0" in text:  # a dash is rare: one memchr pass rules it out (searching "-0" cost 1 ms per MB)
        # `-0` reads as the integer 0 here; the library refuses it (a float where a size belongs). Read again, with
        # `-0` as the float it is to the library, for the entry checks to name.
        header = json.loads(text, parse_int=_int_or_negative_zero)
    if "\\" in text and _SURROGATE_ESCAPE.search(text):  # every escape has a backslash: memchr rules them out
        _refuse_lone_surrogates(header)
    if _may_hide_duplicates(text, header):
        # json.loads keeps the last of duplicate keys silently; re-parse slowly to name the duplicate.
        _refuse_repeated_keys(text)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise CorruptCheckpoint("__metadata__ must map strings to strings")
    if metadata is not None and len(metadata) > MAX_METADATA_ENTRIES:
        raise CorruptCheckpoint(
            f"header's __metadata__ holds {len(metadata):,} entries (the limit is {MAX_METADATA_ENTRIES:,})")
    if len(header) > MAX_TENSORS:
        raise CorruptCheckpoint(f"header lists {len(header)} tensors (the limit is {MAX_TENSORS})")
    if metadata is not None and metadata.get("format") == "tf" and "/" in text:
        # transformers' TF save_pretrained(safe_serialization=True): Keras variable names, `bert/embeddings/
        # word_embeddings/weight:0`, not state-dict keys; said as what it is, not as a name with a path separator.
        example = next((name for name in header if "/" in name), "")
        raise UnsupportedFormat(
            f"a TensorFlow checkpoint (safetensors metadata format \"tf\", Keras variable names such as "
            f"{example[:80]!r}), written by transformers' TF save_pretrained: transformers 4's PyTorch "
            "from_pretrained converts it on load (it reads the format; TensorFlow must be installed), transformers 5 "
            "cannot load it")
    if "/" in text:
        _refuse_slash_joined_tree(header, metadata)
    _check_names(header, text)
    # The text is read no more: dropped before the entries' `TensorInfo`s are made beside the parsed header.
    del text

    tensors = _checked_entries_fast(header, relpath, data_size)
    if tensors is None:
        # Something is wrong: find the first bad entry and name it.
        tensors = _checked_entries(header, relpath, data_size)
    return metadata, tensors


def _refuse_too_many_strings(raw: bytes) -> None:
    """Refuse, before it is parsed, a header of more JSON strings than `MAX_TENSORS` tensors and a `__metadata__` of
    `MAX_METADATA_ENTRIES` entries can hold (`_MAX_STRINGS`).

    A string is two unescaped quotes (a long value of embedded JSON, all escaped quotes, counts for none). A quote
    after a backslash is an escaped one unless that backslash is itself escaped (`"C:\\\\"`): where a quote
    follows two backslashes, the escaped backslashes are taken out before the escaped quotes are counted. Counting
    every quote after a backslash as escaped let a `__metadata__` of 1,400,000 entries `"k\\\\": "\\\\"` count
    as half that and be parsed (313 MiB) before its entries were. A text shorter than two bytes a string cannot pass
    the bound and is not counted.

    Example:
        >>> _refuse_too_many_strings(b'{"__metadata__": {"format": "pt"}}')
    """
    if len(raw) <= 2 * _MAX_STRINGS:
        return
    quotes = raw.count(b'"')
    if quotes // 2 <= _MAX_STRINGS:
        # The escaped quotes only lower the count: without them it is within the bound already (a 5 MB header of
        # 50,000 tensors: their count, a two-byte search, took 4 of the 6 ms this check took).
        return
    strings = (quotes - raw.count(b'\\"')) // 2  # at most the true count
    if strings <= _MAX_STRINGS and b'\\\\"' in raw:
        strings = (quotes - raw.replace(b"\\\\", b"").count(b'\\"')) // 2  # exact: each pair is one escape
    if strings > _MAX_STRINGS:
        raise CorruptCheckpoint(
            f"header holds {strings:,} JSON strings, more than {MAX_TENSORS:,} tensors and a __metadata__ of "
            f"{MAX_METADATA_ENTRIES:,} entries can hold (the limits)")


def _refuse_slash_joined_tree(header: dict[str, Any], metadata: dict[str, str] | None) -> None:
    """Refuse a file whose every name is a '/'-joined path of plain parts (`params/Dense_0/kernel`): a JAX / Flax
    params tree flattened with sep="/" (flax.traverse_util.flatten_dict) and saved with safetensors.flax / numpy,
    which was refused as "contains a path separator", as if the file were damaged. A name with an empty, `.` or
    `..` part, or a backslash, is still refused as a path (`../../etc/passwd`)."""
    names = list(header)
    if not names or not all("/" in name for name in names):
        return
    for name in names:
        if "\\" in name or any(part in ("", ".", "..") for part in name.split("/")):
            return
    framework = (metadata or {}).get("format", "")
    said = f"safetensors metadata format {framework!r}, " if framework else ""
    flax = framework == "flax" or any(name.rsplit("/", 1)[-1] in ("kernel", "embedding", "scale") for name in names)
    what = "a JAX / Flax params tree flattened with sep='/'" if flax else "a nested tree flattened with '/'"
    raise UnsupportedFormat(
        f"every tensor name is a path joined with '/' ({said}e.g. {names[0][:80]!r}): {what}, not a PyTorch "
        "state dict, whose names are joined with '.', which weightdoctor reads; "
        + ("flax.traverse_util.unflatten_dict(safetensors.flax.load_file(path), sep='/') reads it back, and a Dense "
           "kernel there is [in, out], the transpose of nn.Linear's weight" if flax else
           "safetensors.numpy.load_file(path) reads its arrays under these names"))


def _int_or_negative_zero(text: str) -> int | float:
    return -0.0 if text == "-0" else int(text)


def _refuse_lone_surrogates(header: dict[str, Any]) -> None:
    """Refuse a name or metadata string holding an unpaired UTF-16 surrogate (not Unicode; the library refuses it)."""
    metadata = header.get("__metadata__")
    texts = [*header, *(chain.from_iterable(metadata.items()) if isinstance(metadata, dict) else ())]
    for text in texts:
        if isinstance(text, str) and _SURROGATES.search(text):
            raise CorruptCheckpoint(f"header string {text!r} holds an unpaired UTF-16 surrogate (not valid Unicode)")


_SURROGATES = re.compile("[\ud800-\udfff]")


def _checked_entries(header: dict[str, Any], relpath: str, data_size: int) -> list[TensorInfo]:
    """Check every header entry in turn and build its `TensorInfo`; the error names the first bad entry."""
    dtypes = SAFETENSORS_TO_CANONICAL
    tensors: list[TensorInfo] = []
    append = tensors.append
    for name, entry in header.items():
        if type(entry) is not dict:
            raise CorruptCheckpoint(f"header entry for {name!r} is not an object")
        st_dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        dtype = dtypes.get(st_dtype) if type(st_dtype) is str else None
        if dtype is None:
            raise CorruptCheckpoint(f"tensor {name!r} has unknown dtype {st_dtype!r}")
        if type(shape) is not list:
            raise CorruptCheckpoint(f"tensor {name!r} has an invalid shape {shape!r}")
        numel = 1
        for dim in shape:
            if type(dim) is not int or dim < 0:
                raise CorruptCheckpoint(f"tensor {name!r} has an invalid shape {shape!r}")
            if dim > MAX_DIM:
                raise CorruptCheckpoint(f"tensor {name!r} has a dimension of {dim}, beyond 2**63 - 1")
            numel *= dim
            if numel > MAX_RUNNING_PRODUCT:
                raise CorruptCheckpoint(f"tensor {name!r} has shape {shape}: the product of its dimensions passes "
                                        "2**64 - 1 (the safetensors library refuses it, even with a 0 after)")
        if not numel and strides_overflow(shape):
            raise CorruptCheckpoint(f"tensor {name!r} has shape {shape}: holding no value, its first dimension's "
                                    "stride (the product of the others) passes 2**63 - 1, which torch cannot make "
                                    "(\"Stride calculation overflowed\": the library's load_file and from_pretrained "
                                    "fail on it)")
        # Empty ones too: the library refuses [0, 3] as torch's pairs cannot hold it, and a write of it held
        # [0, 2] (torch's pair count doubled), another shape than the source's.
        if dtype == FP4 and (not shape or shape[-1] % 2):
            raise CorruptCheckpoint(f"tensor {name!r} is F4 of shape {shape}: fp4 values are stored in pairs, so its "
                                    "last dimension must be even")
        if dtype in SIX_BIT and numel % 4:
            raise CorruptCheckpoint(f"tensor {name!r} is {st_dtype} of shape {shape}: {numel} six-bit values end "
                                    "mid-byte (their count must be a multiple of 4; the safetensors library refuses "
                                    "it too)")
        if type(offsets) is not list or len(offsets) != 2:
            raise CorruptCheckpoint(f"tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if type(begin) is not int or type(end) is not int or not 0 <= begin <= end:
            raise CorruptCheckpoint(f"tensor {name!r} has invalid data_offsets {offsets!r}")
        expected = numel * BITS_PER_ELEMENT[dtype] // 8
        if end - begin != expected:
            raise CorruptCheckpoint(f"tensor {name!r} spans {counted(end - begin, 'byte', grouped=False)} "
                                    f"but {st_dtype}{shape} needs {expected}")
        if end > data_size:
            raise CorruptCheckpoint(
                f"tensor {name!r} ends at byte {end} of a {data_size}-byte data section (truncated?)"
            )
        append(TensorInfo(name, tuple(shape), dtype, relpath, (begin, end)))

    # The format requires the data section to be covered exactly once, in order.
    position = 0
    for info in sorted(tensors, key=lambda t: t.data_offsets or (0, 0)):
        begin, end = info.data_offsets or (0, 0)
        if begin != position:
            raise CorruptCheckpoint(
                f"tensor {info.name!r} starts at byte {begin}, expected {position} (overlap or gap)"
            )
        position = end
    if position != data_size:
        raise CorruptCheckpoint(
            f"the tensors cover {counted(position, 'byte', grouped=False)} "
            f"but the data section has {data_size} (extra or missing bytes)"
        )
    return tensors


def _checked_entries_fast(header: dict[str, Any], relpath: str, data_size: int) -> list[TensorInfo] | None:
    """The checks of `_checked_entries`, done column by column with C-level loops; None if any fails.

    Same verdict as `_checked_entries` (a test holds them to it), about four times faster on a
    10,000-entry header: every dtype known, every shape a list of ints >= 0, every `data_offsets` two
    ints 0 <= begin <= end <= data size spanning exactly the bytes the dtype and shape need, and the
    data section covered exactly once, in order. The caller re-runs the slow checks for the message.
    """
    names = list(header)
    entries = list(header.values())
    if not entries:
        return [] if data_size == 0 else None
    if set(map(type, entries)) != {dict}:
        return None
    try:
        st_dtypes = list(map(itemgetter("dtype"), entries))  # KeyError when an entry lacks one
        shapes = list(map(itemgetter("shape"), entries))
        offsets = list(map(itemgetter("data_offsets"), entries))
        dtypes = list(map(SAFETENSORS_TO_CANONICAL.get, st_dtypes))  # TypeError for an unhashable dtype
    except (KeyError, TypeError):
        return None
    # Only a str can equal a str key, so a known dtype is a str (as `type(st_dtype) is str` demands).
    if None in dtypes or set(map(type, shapes)) != {list} or set(map(type, offsets)) != {list}:
        return None
    dims = list(chain.from_iterable(shapes))
    if dims and (set(map(type, dims)) != {int} or min(dims) < 0 or max(dims) > MAX_DIM):  # `type(...) is int`
        return None  # refuses bools too
    if FP4 in dtypes and any(d == FP4 and (not shape or shape[-1] % 2)
                             for d, shape in zip(dtypes, shapes, strict=True)):
        return None
    if set(map(len, offsets)) != {2}:
        return None
    spans = list(map(tuple, offsets))
    begins, ends = zip(*spans, strict=True)
    if set(map(type, begins)) != {int} or set(map(type, ends)) != {int}:
        return None
    if min(begins) < 0 or max(ends) > data_size or not all(map(le, begins, ends)):
        return None
    num_params = list(map(math.prod, shapes))
    if not SIX_BIT.isdisjoint(dtypes) and any(d in SIX_BIT and count % 4
                                              for d, count in zip(dtypes, num_params, strict=True)):
        return None
    if 0 in num_params and any(not count and (max(accumulate(shape, mul), default=0) > MAX_RUNNING_PRODUCT
                                              or strides_overflow(shape))
                               for count, shape in zip(num_params, shapes, strict=True)):
        return None  # a non-empty shape's running product and strides are at most its numel, bounded by the data
    try:  # whole-byte dtypes (all but fp4): numel * (bits // 8) == numel * bits // 8, one C-level pass fewer
        nbytes = list(map(mul, num_params, map(_BYTES_PER_ELEMENT.__getitem__, dtypes)))
    except KeyError:
        nbytes = list(map(floordiv, map(mul, num_params, map(BITS_PER_ELEMENT.__getitem__, dtypes)), repeat(8)))
    if list(map(sub, ends, begins)) != nbytes:
        return None
    # Covered exactly once, in order: sorted by (begin, end), each range starts where the last ended.
    # Writers list the entries in file order, and there the chain can be checked without sorting: if
    # each range starts where the one before it ends (and begin <= end, checked above), the begins never
    # decrease and two equal begins belong to an empty range then the next, so the file order already is
    # the (begin, end) order and the sorted check would see the same sequence. Otherwise, sort.
    if begins[0] != 0 or begins[1:] != ends[:-1] or ends[-1] != data_size:
        sorted_begins, sorted_ends = zip(*sorted(spans), strict=True)
        if sorted_begins[0] != 0 or sorted_begins[1:] != sorted_ends[:-1] or sorted_ends[-1] != data_size:
            return None
    return tensor_infos(names, list(map(tuple, shapes)), dtypes, relpath, spans, num_params, nbytes)


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def validate_with_library(path: Path, header: SafetensorsHeader | None = None) -> None:
    """Let the safetensors library validate the file too (it checks things our parser may not).

    With `header`, a file that changed since that header was read is refused first, in those words.
    """
    from safetensors import SafetensorError, safe_open

    if header is not None and header.identity is not None and _identity(os.stat(path)) != header.identity:
        raise CorruptCheckpoint(
            "the file changed since its header was read (size or modification time); nothing more is read from it"
        )

    try:
        # Opening is the check: the library parses and validates the whole header there. Its `metadata()` would
        # build every value whole besides, as Python strings (a 89 MB value took check-dtype from 403 to 572 MB
        # peak), where `read_header` keeps them cut.
        with safe_open(str(path), framework="np"):
            pass
    except SafetensorError as exc:
        raise CorruptCheckpoint(f"safetensors rejects the file: {exc}") from exc
    except MemoryError as exc:
        from weightdoctor.units import format_bytes

        raise UnsupportedEnvironment(
            f"the safetensors library maps the whole file ({format_bytes(os.path.getsize(path))}) to validate it, "
            "and the system refused the map (more than this process may map: its address-space limit, ulimit -v): "
            "nothing was read", path=str(path)) from exc


def available_memory() -> int | None:
    """Bytes of memory this process can still take, or None where unknown: the least of

    - the machine's: Linux's MemAvailable, plus the free swap (an allocation past MemAvailable is swapped, slow
      but done, not refused), that swap no more than the cgroup swap limits of this process's cgroup and of those
      above it leave it (v2 `memory.swap.max`, v1 `memory.memsw.limit_in_bytes`: a container with
      `memory.swap.max` 0 swaps nothing, whatever the machine's swap holds);
    - its cgroup's (a container's limit, or one of a cgroup above it: the kernel's OOM killer ends the process at
      it, whatever the machine has free): the limit less what the cgroup uses, its page cache counted free (the
      kernel reclaims it, active or inactive, before it kills anything; MemAvailable counts it so too);
    - its address-space limit (`ulimit -v`, RLIMIT_AS): the limit less the address space it maps already;
    - its data limit (`ulimit -d`, RLIMIT_DATA: since Linux 4.7 it bounds private writable maps, so every
      allocation of a large buffer): the limit less its data already (`VmData`), unless the kernel was booted to
      ignore that limit (`ignore_rlimit_data`).

    Which of them it was is kept, in words, for the refusal to say (`_limit_words`).

    Nothing stands in for MemAvailable where /proc/meminfo lacks it (unreadable, not mounted, a kernel before 3.14):
    the free pages (`SC_AVPHYS_PAGES`, MemFree) leave out the page cache the kernel gives back on demand, often most
    of a machine's memory (the checkpoint's own pages once read), and refused reads that fit.
    """
    memory, swap = _cgroup_rooms()
    rooms = [room for room in (_machine_room(swap), memory, *_process_limit_rooms()) if room is not None]
    least = min(rooms, key=itemgetter(0)) if rooms else None
    _LIMIT_SAID.words = least[1] if least is not None else None
    return least[0] if least is not None else None


_MACHINE_WORDS = "this machine has available"
# The words of the limit `available_memory` last found the least, per thread (several read tensors at once).
_LIMIT_SAID = threading.local()


def _limit_words() -> str:
    """What the figure `available_memory` last gave is, in words that follow it ("1.00 GB this machine has
    available"); the machine's where it was not that function that answered (a caller's own figure)."""
    return getattr(_LIMIT_SAID, "words", None) or _MACHINE_WORDS


def _fields(path: str) -> dict[str, int]:
    """The `Name: number [kB]` (or `name number`) lines of a /proc or /sys file, in bytes where given in kB."""
    found: dict[str, int] = {}
    with open(path, encoding="ascii") as text:
        for line in text:
            parts = line.replace(":", " ").split()
            if len(parts) >= 2 and parts[1].isdigit():
                found[parts[0]] = int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    return found


def _machine_room(swap_limit: tuple[int, str] | None = None) -> tuple[int, str] | None:
    """MemAvailable and the free swap, that swap no more than `swap_limit` (what a cgroup's swap limit leaves, and
    its words) where there is one."""
    from weightdoctor.units import format_bytes

    try:
        meminfo = _fields("/proc/meminfo")
    except (OSError, ValueError):
        return None
    if "MemAvailable" not in meminfo:
        return None
    swap = meminfo.get("SwapFree", 0)
    if swap_limit is None or swap_limit[0] >= swap:
        return meminfo["MemAvailable"] + swap, _MACHINE_WORDS
    return meminfo["MemAvailable"] + swap_limit[0], (
        f"this machine has available to this process (its available memory, and {format_bytes(swap_limit[0])} "
        f"of its {format_bytes(swap)} of free swap under the cgroup swap limit {swap_limit[1]})")


def _first_line(path: str) -> str:
    with open(path, encoding="ascii") as text:
        return text.readline().strip()


def _limit_of(path: str) -> int | None:
    """A cgroup limit file's bytes, or None for none ("max", or v1's page-rounded 2**63 - 1)."""
    limit = _first_line(path)
    return int(limit) if limit.isdigit() and int(limit) < 1 << 60 else None


def _cgroup_rooms() -> tuple[tuple[int, str] | None, tuple[int, str] | None]:
    """What the memory limits of this process's cgroup and of those above it (v2 `memory.max`, v1
    `memory.limit_in_bytes`) leave it, and what their swap limits (v2 `memory.swap.max`, v1 the part of
    `memory.memsw.limit_in_bytes`, memory and swap together, past what `memory.limit_in_bytes` leaves) leave it
    of swap, each with words naming the tightest, or None without one. Inside a container the cgroup's own folder
    is the mount's root, outside it the path /proc/self/cgroup names: both are read, with every folder above the
    latter (a systemd slice's MemoryMax, a Kubernetes pod's limit above its container's), and the smallest room
    kept."""
    from weightdoctor.units import format_bytes

    try:
        with open("/proc/self/cgroup", encoding="ascii") as text:
            lines = text.read().splitlines()
    except (OSError, ValueError):
        return None, None
    rooms: list[tuple[int, str]] = []
    swap_rooms: list[tuple[int, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        if parts[1] == "":
            root, files = "/sys/fs/cgroup", ("memory.max", "memory.current", "inactive_file", "active_file")
        elif "memory" in parts[1].split(","):
            root, files = "/sys/fs/cgroup/memory", ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                    "total_inactive_file", "total_active_file")
        else:
            continue
        names = [name for name in parts[2].split("/") if name]
        for folder in {root + "".join(f"/{name}" for name in names[:depth]) for depth in range(len(names) + 1)}:
            try:
                limit = _limit_of(f"{folder}/{files[0]}")
                usage = None if limit is None else int(_first_line(f"{folder}/{files[1]}"))
                stat = {} if limit is None else _fields(f"{folder}/memory.stat")
            except (OSError, ValueError):
                limit = usage = None
            if limit is not None and usage is not None:
                cache = stat.get(files[2], 0) + stat.get(files[3], 0)
                rooms.append((max(0, limit - max(0, usage - cache)),
                              f"left under this process's cgroup memory limit ({folder}/{files[0]}: "
                              f"{format_bytes(limit)}, less what the cgroup uses)"))
            swap = _cgroup_swap_room(folder, parts[1] == "")
            if swap is not None:
                swap_rooms.append(swap)
    return (min(rooms, key=itemgetter(0)) if rooms else None,
            min(swap_rooms, key=itemgetter(0)) if swap_rooms else None)


def _cgroup_swap_room(folder: str, v2: bool) -> tuple[int, str] | None:
    """The swap a cgroup folder's swap limit leaves its processes, with words naming that limit, or None without
    one (or without swap accounting, where the files are absent)."""
    from weightdoctor.units import format_bytes

    try:
        if v2:
            limit = _limit_of(f"{folder}/memory.swap.max")
            if limit is None:
                return None
            used = int(_first_line(f"{folder}/memory.swap.current"))
            return max(0, limit - used), f"{folder}/memory.swap.max: {format_bytes(limit)}, less the swap it uses"
        # v1 bounds memory and swap together (memsw >= memory); swap is what that leaves past the memory limit's
        # own room: memsw.limit - memsw.usage - (limit - usage), the page cache in both usages cancelling out.
        both = _limit_of(f"{folder}/memory.memsw.limit_in_bytes")
        if both is None:
            return None
        both_used = int(_first_line(f"{folder}/memory.memsw.usage_in_bytes"))
        limit = _limit_of(f"{folder}/memory.limit_in_bytes")
        memory_room = 0 if limit is None else limit - int(_first_line(f"{folder}/memory.usage_in_bytes"))
    except (OSError, ValueError):
        return None
    return (max(0, both - both_used - max(0, memory_room)),
            f"{folder}/memory.memsw.limit_in_bytes: {format_bytes(both)} of memory and swap together")


def _process_limit_rooms() -> list[tuple[int, str]]:
    """What this process's address-space limit (RLIMIT_AS, against its `VmSize`) and data limit (RLIMIT_DATA,
    against its `VmData`) leave it, each with its words; none where unlimited or unknown."""
    from weightdoctor.units import format_bytes

    try:
        import resource

        limits = [(resource.getrlimit(resource.RLIMIT_AS)[0], "VmSize", "address-space limit (ulimit -v",
                   "mapped already"),
                  (_data_limit(), "VmData", "data limit (ulimit -d", "in private writable memory already")]
    except (ImportError, OSError, ValueError):
        return []
    limits = [limit for limit in limits if limit[0] != resource.RLIM_INFINITY and limit[0] >= 0]
    if limits and limits[-1][1] == "VmData" and _rlimit_data_ignored():
        limits.pop()
    if not limits:
        return []
    _start_torch_threads(limits)
    try:
        status = _fields("/proc/self/status")
    except (OSError, ValueError):
        return []
    rooms = []
    for soft, field, name, used in limits:
        if field in status:
            rooms.append((max(0, soft - status[field]), (f"{_PROCESS_LIMIT_WORDS} {name}: {format_bytes(soft)}, "
                                                         f"{format_bytes(status[field])} of it {used})")))
    return rooms


_TORCH_THREADS_STARTED = False


def _start_torch_threads(limits: list[tuple[int, str, str, str]]) -> None:
    """Have torch start its OpenMP worker threads now, where torch is imported, so that their stacks (private
    writable maps, 8 MiB each) count in what `_process_limit_rooms` measures: started later, by the first parallel
    copy or reduction once a tensor's map had filled the room, libgomp could not make one and ended the process,
    "libgomp: Thread creation failed: Resource temporarily unavailable", with exit code 1 (which reads as a finding:
    diff-keys --values under `ulimit -v`, convert of a .bin under `ulimit -d`). They are kept for the process.

    `limits` are the process limits set, as `_process_limit_rooms` lists them. No more threads are started than
    half the room they leave holds stacks for: on a 16-core machine whose stack limit (`ulimit -s`) is 64 MiB,
    16 stacks took more than an 80 MiB data room, and libgomp ended the process while starting them. Where that
    room cannot be measured, the threads are left as torch has them."""
    global _TORCH_THREADS_STARTED
    import sys

    torch = sys.modules.get("torch")
    if _TORCH_THREADS_STARTED or torch is None or not hasattr(torch, "ones"):
        return
    _TORCH_THREADS_STARTED = True
    threads = torch.get_num_threads()
    if threads > 1:
        affordable = _threads_the_room_holds(limits)
        if affordable is not None and affordable < threads:
            torch.set_num_threads(affordable)
            threads = affordable
    if threads > 1 and _address_space_limited():
        # Each thread's first allocation would reserve a malloc arena of its own, 64 MiB of address space (72 MiB
        # a thread in all, measured, against 8.4 MiB with one arena): under `ulimit -v` they share the first.
        _one_malloc_arena()
    if threads > 1:
        # A sum over more than `threads` grains of 32,768 values (at::internal::GRAIN_SIZE) runs in parallel.
        torch.ones(threads * 65536, dtype=torch.uint8).sum()


def _threads_the_room_holds(limits: list[tuple[int, str, str, str]]) -> int | None:
    """How many threads torch can run whose stacks take at most half the least room under `limits` (at least 1),
    or None where no room is known (/proc/self/status unreadable, or without the limits' fields).

    Each thread past the calling one costs two stacks: an OpenMP worker's (`_thread_stack_bytes`), and one of
    torch's pthreadpool, which `torch.set_num_threads(n)` makes at once with n - 1 threads of glibc's default stack
    (`_default_stack_bytes`): set to 4, torch started 3 threads at once, 3 more at its first parallel op."""
    try:
        status = _fields("/proc/self/status")
    except (OSError, ValueError):
        return None
    rooms = [soft - status[field] for soft, field, _, _ in limits if field in status]
    if not rooms:
        return None
    return max(1, 1 + min(rooms) // 2 // (_thread_stack_bytes() + _default_stack_bytes()))


def _thread_stack_bytes() -> int:
    """The stack libgomp gives each worker thread: OMP_STACKSIZE, else GOMP_STACKSIZE (libgomp's order), where set
    to a size it takes (a number of KiB, or with a B, K, M or G suffix; at least PTHREAD_STACK_MIN, below which
    libgomp says "Stack size less than minimum" and keeps the default), else glibc's default stack."""
    import os
    import re

    try:
        least = os.sysconf("SC_THREAD_STACK_MIN")
    except (AttributeError, OSError, ValueError):
        least = 16384
    for name in ("OMP_STACKSIZE", "GOMP_STACKSIZE"):
        match = re.fullmatch(r"\s*\+?(\d+)\s*([bBkKmMgG]?)\s*", os.environ.get(name, ""))
        if match:
            scale = {"b": 1, "k": 1 << 10, "": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
            size = int(match.group(1)) * scale
            if least <= size < 1 << 64:
                return size
            if size < least:  # refused by pthread_attr_setstacksize: libgomp keeps the default
                break
    return _default_stack_bytes()


def _default_stack_bytes() -> int:
    """glibc's default thread stack: the stack limit (`ulimit -s`) where set; 8 MiB where unlimited or unknown."""
    import resource

    try:
        soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    except (OSError, ValueError):
        soft = resource.RLIM_INFINITY
    return soft if soft != resource.RLIM_INFINITY and soft > 0 else 8 << 20


def _address_space_limited() -> bool:
    import resource

    return resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY


def _one_malloc_arena() -> None:
    """glibc's mallopt(M_ARENA_MAX, 1), where the C library has it (no effect elsewhere)."""
    import contextlib
    import ctypes

    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX


_PROCESS_LIMIT_WORDS = "left under this process's"  # how the words of `_process_limit_rooms` begin


def _room_beside_process_limits() -> int | None:
    """`available_memory()` less this process's own limits (address space, data): the machine's and the cgroups'
    rooms alone, their words kept as it keeps them."""
    memory, swap = _cgroup_rooms()
    rooms = [room for room in (_machine_room(swap), memory) if room is not None]
    least = min(rooms, key=itemgetter(0)) if rooms else None
    _LIMIT_SAID.words = least[1] if least is not None else None
    return least[0] if least is not None else None


def private_map_limits() -> list[str]:
    """The limits of this process that a private writable map (torch.load(mmap=True)'s) counts against, in words,
    for those set: its address-space limit (RLIMIT_AS) and its data limit (RLIMIT_DATA, unless the kernel ignores
    it). Where it cannot be told (no `resource` module), the address-space limit is named, as a possibility."""
    try:
        import resource

        address_space = resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY
        data = _data_limit() != resource.RLIM_INFINITY and not _rlimit_data_ignored()
    except (ImportError, OSError, ValueError):
        address_space, data = True, False
    named = ["this process's address-space limit, ulimit -v"] if address_space else []
    return named + ["this process's data limit, ulimit -d"] if data else named


def _data_limit() -> int:
    """The data limit (RLIMIT_DATA) the kernel holds a private writable map to: the soft limit, or the hard one
    where the soft limit is 0 (Linux's rule for Valgrind, which sets it so: a map is then refused only past the
    hard limit; `ulimit -S -d 0` had every read refused, "0 B left under this process's data limit").

    Raises:
        ImportError, OSError, ValueError: as `resource.getrlimit` (no `resource` module off Unix).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    return hard if soft == 0 else soft


def _rlimit_data_ignored() -> bool:
    """Whether the kernel was booted with `ignore_rlimit_data` (it then only warns past RLIMIT_DATA)."""
    try:
        return _first_line("/sys/module/kernel/parameters/ignore_rlimit_data") in ("Y", "1")
    except (OSError, ValueError):
        return False


# Reading /proc/meminfo, the cgroup's files and /proc/self/status took 0.69 ms a measure on the build machine:
# before each of 10,000 small tensors, 1.5 s of inspect --stats' 5.7 s of CPU. A measure is reused, for at most
# _ROOM_RECHECK_SECONDS, only by a read of at most 1/_ROOM_SHARE of the room it left after the reads it admitted
# already (each is charged to it, as if none were freed); any larger read, and every refusal, measures again.
_ROOM_RECHECK_SECONDS = 1.0
_ROOM_SHARE = 4
_last_room: tuple[Any, float, int | None] | None = None  # (the measure used, when, the room left)


def forget_memory_room() -> None:
    """Drop the memory measure `require_memory` reuses: the next read measures again (each command starts so)."""
    global _last_room
    _last_room = None


def _room_for(length: int) -> int | None:
    """The memory available for a read of `length` bytes, or None where unknown: `available_memory()`, measured
    again unless a measure under a second old leaves at least _ROOM_SHARE times `length` (less what the reads it
    admitted took)."""
    global _last_room
    import time

    measure = available_memory  # looked up at each call: a test's simulated machine replaces it
    now = time.monotonic()
    last = _last_room
    if last is not None and last[0] is measure and now - last[1] < _ROOM_RECHECK_SECONDS:
        if last[2] is None:
            return None
        if length * _ROOM_SHARE <= last[2]:
            _last_room = (measure, last[1], last[2] - length)
            return last[2]
    room = measure()
    _last_room = (measure, now, None if room is None else room - length if length <= room else room)
    return room


def require_memory_for(path: Path | str, info: TensorInfo, length: int, hint: str = "", mapped: bool = False) -> None:
    """Refuse, before allocating anything, to read a tensor of `length` bytes whole where that is more memory
    than the machine has available: the allocation would fail (or, where memory is overcommitted, the read
    would run until the process is killed) with an error that names neither the file nor the tensor.

    `mapped`: the tensor's bytes lie in a private map of its file made already (a torch zip's, mapped whole), which
    this process's address-space and data limits counted in full when it was made: reading its pages takes no
    more of either, so those limits refuse nothing (a second 200 MB tensor of a 400 MB .bin was refused under
    `ulimit -d` 768 MB, "127.56 MB left under this process's data limit", where the read peaked at 639 MiB).

    Raises:
        UnsupportedEnvironment: `length` is more than the available memory.
    """
    require_memory(path, f"tensor {info.name!r}", length, hint, mapped=mapped)


def require_memory(path: Path | str, what: str, length: int, hint: str = "",
                   done: str = "is read whole into memory: nothing was read", mapped: bool = False) -> None:
    """`require_memory_for` of anything read whole (`what`: its words, "tensor 'w'"): every read of values whole
    into memory, whatever the format, is refused by this one check. `done`: what is made of it, and what was not
    done, split at the colon (a cast's copy: "is made in memory: nothing was written").

    Raises:
        UnsupportedEnvironment: `length` is more than the available memory.
    """
    _LIMIT_SAID.words = None  # set again by the measure a refusal always makes afresh (`_room_for`)
    available = _room_for(length)
    if available is not None and length > available and mapped and (_LIMIT_SAID.words or "").startswith(
            _PROCESS_LIMIT_WORDS):
        # Refused by a limit the map was counted against already (`require_memory_for`): the others decide.
        available = _room_beside_process_limits()
    if available is not None and length > available:
        from weightdoctor.units import format_bytes

        made, _, not_done = done.partition(": ")
        raise UnsupportedEnvironment(
            f"{what} ({format_bytes(length)}) {made}, more than the {format_bytes(available)} {_limit_words()}: "
            f"{not_done}{hint}", path=str(path))


def require_map_room(path: Path | str, name: str, nbytes: int, span: int) -> None:
    """Refuse to map the `span` bytes of its storage a strided view of `nbytes` bytes reaches (a slice of columns of
    a larger tensor, saved as such) where this process's address-space or data limit leaves less: the private map
    of all of them counts in full against both, and past either it failed as "[Errno 12] Cannot allocate memory",
    of no tensor. The machine's memory is not asked: only the pages read of the map are memory.

    Raises:
        UnsupportedEnvironment: `span` is more than a limit of this process leaves it.
    """
    rooms = _process_limit_rooms()
    if not rooms:
        return
    room, words = min(rooms, key=itemgetter(0))
    if span > room:
        from weightdoctor.units import format_bytes

        raise UnsupportedEnvironment(
            f"tensor {name!r} ({format_bytes(nbytes)}) is a view spread over {format_bytes(span)} of its storage, "
            f"all of it mapped to read it, more than the {format_bytes(room)} {words}: nothing was read",
            path=str(path))


@contextlib.contextmanager
def working_on(info: TensorInfo) -> Iterator[None]:
    """Name tensor `info` in a memory refusal raised while a command works on it (torch's allocator refusing one of
    its buffers: a chunk's float copies, which no guard measured): the line said "out of memory: torch could not
    allocate 4.19 MB", of no tensor. The error's `weightdoctor_tensor` is what the line adds."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if getattr(exc, "weightdoctor_tensor", None) is None:
            from weightdoctor.units import format_bytes

            exc.weightdoctor_tensor = (  # type: ignore[attr-defined]
                f"tensor {info.name!r} ({format_bytes(info.nbytes)}, {info.dtype})")
        raise


def _refuse_if_changed(fd: int, identity: Any, name: str, path: Path | None, structure: str = "its header") -> None:
    """Refuse to read tensor `name` from an open file that is no longer the one whose structure (`structure`: its
    header, a torch zip's records) was read (`identity`: its size and modification time then; None where unknown).

    Raises:
        CorruptCheckpoint: the file changed since its structure was read.
    """
    if identity is not None and _identity(os.fstat(fd)) != identity:
        raise CorruptCheckpoint(
            f"the file changed since {structure} {'were' if structure.endswith('s') else 'was'} read (size or "
            f"modification time); reading tensor {name!r} from it could mix old and new contents",
            path=None if path is None else str(path))


def read_tensor_bytes(path: Path, header: SafetensorsHeader, info: TensorInfo) -> bytearray:
    """Read one tensor's raw bytes with plain file reads (no mmap, so truncation raises).

    Raises:
        UnsupportedEnvironment: the tensor is larger than the memory available (`require_memory_for`).
    """
    assert info.data_offsets is not None
    begin, end = info.data_offsets
    length = end - begin
    require_memory_for(path, info, length)
    buffer = bytearray(length)
    view = memoryview(buffer)
    fd = os.open(path, os.O_RDONLY)
    try:
        _refuse_if_changed(fd, header.identity, info.name, None)
        done = 0
        while done < length:
            got = os.preadv(fd, [view[done:]], header.data_start + begin + done)
            if got == 0:
                raise CorruptCheckpoint(
                    f"file ended while reading tensor {info.name!r} (truncated or changed while reading)"
                )
            done += got
    finally:
        os.close(fd)
    return buffer


# `read_values_at` reads sampled positions closer than this together, in spans of at most `_SPAN_WINDOW` bytes.
_SPAN_GAP = 64 << 10
_SPAN_WINDOW = 4 << 20
_SPAN_WHOLE = 16 << 20  # positions all within this many bytes: read in one span, not sorted


def read_values_at(path: Path | str, base: int, dtype: torch.dtype, name: str, indices: torch.Tensor,
                   identity: tuple[int, int, int, int] | None = None, structure: str = "its header") -> torch.Tensor:
    """The values at `indices` (positions in the flattened tensor) of a tensor stored as one contiguous run of
    `path` from byte `base`: memory for those values and one span buffer of at most 4 MiB, whatever the tensor's
    size (`read_tensor` reads it whole). Positions less than 64 KiB apart are read in one span (one read per
    position took 45 s for a --sample of 200,000 values of each of 40 tensors of a million, whose whole reads took
    11 s); farther apart, one read each. `identity`: the file's, when its structure was read (`structure` says
    what that was, in a refusal: "its header", a torch zip's "its zip records").

    Example:
        >>> import tempfile, torch
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     _ = f.write(torch.arange(8, dtype=torch.int16).numpy().tobytes()); f.flush()
        ...     read_values_at(f.name, 0, torch.int16, "w", torch.tensor([5, 1, 5])).tolist()
        [5, 1, 5]
    """
    import torch

    itemsize = torch.empty((), dtype=dtype).element_size()
    flat = indices.to(torch.int64).reshape(-1)
    low, high = (int(end) for end in torch.aminmax(flat)) if len(flat) else (0, -1)
    if len(flat) and (high - low + 1) * itemsize <= _SPAN_WHOLE:
        # All within one span (a tensor of up to 16 MiB): one read, indexed as it is, with nothing to sort.
        span = bytearray((high - low + 1) * itemsize)
        fd = os.open(path, os.O_RDONLY)
        try:
            _refuse_if_changed(fd, identity, name, path, structure)
            if os.preadv(fd, [span], base + low * itemsize) != len(span):
                raise CorruptCheckpoint(
                    f"file ended while reading tensor {name!r} (truncated or changed while reading)", path=str(path))
        finally:
            os.close(fd)
        return torch.frombuffer(span, dtype=dtype)[flat - low if low else flat]
    # Sorted, duplicates kept (torch.unique and a search back took longer than the reads).
    positions, order = torch.sort(flat)
    raw = torch.empty((len(positions), itemsize), dtype=torch.uint8)
    offsets = positions * itemsize
    firsts: list[int] = []
    if len(positions):
        new_span = torch.ones(len(positions), dtype=torch.bool)
        new_span[1:] = ((offsets[1:] - offsets[:-1] > _SPAN_GAP)
                        | (offsets[1:] // _SPAN_WINDOW != offsets[:-1] // _SPAN_WINDOW))
        firsts = torch.nonzero(new_span).flatten().tolist()
    bounds = [*firsts, len(positions)]
    span = torch.empty(min(_SPAN_WINDOW + itemsize, int(offsets[-1] - offsets[0]) + itemsize) if firsts else 0,
                       dtype=torch.uint8)
    window = memoryview(span.numpy())
    byte = torch.arange(itemsize)
    fd = os.open(path, os.O_RDONLY)
    try:
        _refuse_if_changed(fd, identity, name, path, structure)
        for first, stop in zip(bounds, bounds[1:], strict=False):
            low = int(offsets[first])
            length = int(offsets[stop - 1]) + itemsize - low
            if os.preadv(fd, [window[:length]], base + low) != length:
                raise CorruptCheckpoint(
                    f"file ended while reading tensor {name!r} (truncated or changed while reading)", path=str(path))
            raw[first:stop] = span[(offsets[first:stop] - low).unsqueeze(1) + byte]
    finally:
        os.close(fd)
    values = torch.empty(len(positions), dtype=dtype)
    values[order] = raw.reshape(-1).view(dtype)
    return values


def read_tensor(path: Path, header: SafetensorsHeader, info: TensorInfo) -> torch.Tensor:
    """Read one tensor as a torch tensor (CPU, owning its memory)."""
    import torch

    dtype = getattr(torch, info.dtype, None)
    if dtype is None:
        from weightdoctor.dtypes import torch_dtype

        try:
            dtype = torch_dtype(info.dtype)  # raises, saying which torch has it, or that none does (six-bit floats)
        except UnsupportedEnvironment as exc:
            exc.message = f"tensor {info.name!r}: {exc.message}"
            raise
    if info.num_params == 0:
        from weightdoctor.dtypes import torch_shape

        return torch.empty(torch_shape(info.shape, info.dtype), dtype=dtype)
    buffer = read_tensor_bytes(path, header, info)
    if info.dtype == "float4_e2m1fn_x2":
        from weightdoctor.dtypes import torch_shape

        return torch.frombuffer(buffer, dtype=torch.uint8).view(dtype).reshape(torch_shape(info.shape, info.dtype))
    return torch.frombuffer(buffer, dtype=dtype).reshape(info.shape)
