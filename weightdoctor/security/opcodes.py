"""A static walk over one pickle's opcodes: every import it would make, without unpickling anything.

`pickletools.genops` parses the opcodes; this module runs a small symbolic stack beside it so that
`STACK_GLOBAL`, whose module and name come from the stack (often through the memo: `MEMOIZE`, `PUT`,
`BINPUT`, `LONG_BINPUT` then `GET`, `BINGET`, `LONG_BINGET`), is resolved to the strings it would
import. Only literal values (strings, bytes, numbers, tuples and lists of them) are tracked; anything
built by a call is opaque, and a `STACK_GLOBAL` fed by an opaque value is reported as unresolved.
"""

from __future__ import annotations

import functools
import io
import pickletools
import warnings
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from weightdoctor.errors import clip_words
from weightdoctor.security.policy import (
    BUILT_FROM_DICT,
    COPYING_CALLS,
    NEVER_BUILT,
    RECONSTRUCTION_GLOBALS,
    RECONSTRUCTOR,
)
from weightdoctor.wording import counted

HIGHEST_PROTOCOL = 5
# Longest line a text opcode (GLOBAL, INST, protocol 0 strings) may have; without a bound pickletools
# would read a whole multi-gigabyte file looking for a newline.
MAX_LINE = 1 << 20


class _Mark:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MARK"


class _Opaque:
    """A value the walk cannot know (the result of a call, a dict, a set, ...)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<opaque>"


MARK = _Mark()
OPAQUE = _Opaque()


class _Keyed(_Opaque):
    """A mapping the walk notes the keys of (SETITEM, SETITEMS, DICT, a mapping call's source), for a BUILD whose state
    it is: `dunder`, the first key of the form `__name__` (see `dunder_key`), and `entries`, how many keys were set in
    it (a key set twice counts twice), what a BUILD copies into an instance's __dict__."""

    __slots__ = ("dunder", "entries", "hashes")

    def __init__(self, dunder: str | None = None) -> None:
        self.dunder = dunder
        self.entries = 0
        self.hashes: dict[int, int] | None = None

    def hashed(self, keys: Any) -> int:
        """Note the hashes of the keys (or set items) put in it, and return how many keys before them each shares its
        hash with: the keys a dict or set compares one with on insertion (`MAX_HASH_COLLISIONS`). Text and bytes are
        left out: their hash is salted per process, so a file cannot choose it."""
        hashes = self.hashes if self.hashes is not None else {}
        collisions = 0
        for key in keys:
            if isinstance(key, (str, bytes, _Opaque)):
                continue
            try:
                value = hash(key)
            except TypeError:
                continue
            seen = hashes.get(value, 0)
            collisions += seen
            hashes[value] = seen + 1
        self.hashes = hashes
        return collisions

    def keyed(self, keys: Any) -> None:
        """Note the keys set in it: their number, and the first that may set a special name."""
        keys = keys if isinstance(keys, (list, tuple)) else list(keys)
        self.entries += len(keys)
        if self.dunder is None:
            self.dunder = _first_special(keys)


class Result(_Keyed):
    """A set the pickle built (EMPTY_SET, FROZENSET) or a Counter a call made: as unknown as `OPAQUE`, but one object
    each, so that a memo GET of it is told apart from a new one (`PickleWalk.fetched`). `dunder` is the first key of
    the form `__name__` a Counter holds, for BUILD."""

    __slots__ = ()


# What a memo GET or DUP pushes for `OPAQUE`: a call's result fetched again, which `policy.COPYING_CALLS` would copy
# call after call (one object for all: the walk allocates nothing per call).
FETCHED = _Opaque()


class Encoded(_Opaque):
    """The bytes a `_codecs.encode(text, ...)` call made (how protocols 0-2 write bytes, and a bytearray's argument:
    `bytearray(_codecs.encode(text, "latin1"))`), one object each: a call's result made of text the file holds, so
    a copying call on it copies that text once, unless the memo fetches it again."""

    __slots__ = ()


def call_result(value: Any) -> bool:
    """Whether `value` is what a call returned (or a set the pickle built), its content unknown to the walk."""
    return value is OPAQUE or value is FETCHED or value.__class__ is Result or value.__class__ is Encoded


class OpaqueDict(_Keyed):
    """A dict the pickle built (EMPTY_DICT, DICT, `collections.OrderedDict(...)`), its items unknown but whether it has
    any: told apart from a call's result, which may return anything (`builtins.tuple(...)` a slot state pair), for
    `policy.build_problem`, and an empty one from a filled one, for a tensor's backward hooks. `dunder` is the first
    key of the form `__name__` the pickle set in it, for BUILD (see `dunder_key`)."""

    __slots__ = ("filled",)

    def __init__(self, filled: bool = False) -> None:
        super().__init__()
        self.filled = filled


def _first_special(keys: Any) -> str | None:
    """The first of `keys` that may set a special name on an instance, as `_special_key` names it, or None."""
    return next((named for named in map(_special_key, keys) if named is not None), None)


def _special_key(key: Any) -> str | None:
    """How a BUILD refusal names `key` when it may set a special name (`dunder_key`): the name itself, or, for a key
    a call made, words saying so: numpy.str_ and TorchVersion are text subclasses that equal the text they hold, and
    pickle.load sets them in an instance's __dict__ as they are."""
    if dunder_key(key):
        return str(key)
    if isinstance(key, _Opaque):
        return "a name a call made (a text subclass such as numpy.str_ equals any name it holds)"
    return None


def dunder_key(key: Any) -> bool:
    """Whether `key` names a special attribute (`__deepcopy__`, `__reduce_ex__`): a BUILD whose state sets one puts
    it in the instance's __dict__, where copy.deepcopy, copy.copy and pickle (a re-save: torch.save, convert) look it
    up by getattr before the class's own and call it. No pickler writes one: an instance's __dict__ holds its fields.

    Example:
        >>> dunder_key("__deepcopy__"), dunder_key("_metadata"), dunder_key("__")
        (True, False, False)
    """
    return isinstance(key, str) and len(key) > 4 and key.startswith("__") and key.endswith("__")


# The rebuild functions that set a tensor's `_backward_hooks` from an argument (its index), which torch.save always
# writes as an empty OrderedDict (torch/_utils.py: "the general expectation is that backward_hooks is an empty
# OrderedDict"). Setting it registers each value as a hook that autograd calls on the tensor's gradient.
HOOKS_ARGUMENT: dict[str, int] = {
    "torch._utils._rebuild_tensor_v2": 5, "torch._utils._rebuild_parameter": 2,
    "torch._utils._rebuild_parameter_with_state": 2, "torch._utils._rebuild_qtensor": 6,
}


# The rebuild functions that setattr each item of an argument (its index) on the tensor they make (torch/_utils.py's
# `_set_obj_state`): a tensor subclass's or Parameter's Python attributes.
STATE_ARGUMENT: dict[str, int] = {
    "torch._tensor._rebuild_from_type_v2": 3, "torch._utils._rebuild_parameter_with_state": 3,
}


def built_global(qualified: str) -> bool:
    """Whether a later BUILD on what `qualified` returns is judged by the policy (`policy.build_problem`): a numpy
    dtype's state (`numpy.dtype(...)`, `numpy.dtypes.Float64DType()`) carries flags numpy then trusts for how it
    reads memory; an inert class of `policy.NEVER_BUILT` (an enum returns a member the whole process shares) is never
    built by a genuine file; one of `policy.BUILT_FROM_DICT` is built from a dict alone."""
    return (qualified == "numpy.dtype" or (qualified.startswith("numpy.dtypes.") and qualified.endswith("DType"))
            or qualified in NEVER_BUILT or qualified in BUILT_FROM_DICT)


class Made(_Keyed):
    """The result of calling a `built_global`, with the arguments as far as they are literals: opaque like
    any other call's result, but a BUILD on it is recorded (as a `GlobalCall` of opcode BUILD whose args are
    `(made.args, state)`). Its keys are noted as `Result`'s: a dict subclass (AttributeDict) SETITEMS fills."""

    __slots__ = ("callee", "args")

    def __init__(self, callee: GlobalImport, args: Any) -> None:
        super().__init__()
        self.callee = callee
        self.args = args


# The calls that return a dict a BUILD may take as its state, by the index of the argument whose keys they copy
# (`Result.dunder`): a mapping's keys, or, for Counter, an iterable's items; defaultdict's first is its factory.
_MAPPING_CALLS: dict[str, int] = {"collections.Counter": 0, "collections.defaultdict": 1, "builtins.dict": 0,
                                  "__builtin__.dict": 0}

# What the walk notes the keys of (SETITEM, SETITEMS), for a BUILD whose state it is: a dict the pickle built, what a
# call returned (a Counter, a dict subclass NEWOBJ built).
_KEYED = (OpaqueDict, Result, Made)


def _entries(source: Any) -> int:
    """How many keys a mapping call (or `_reconstructor`'s dict(state)) makes of `source`, as far as the walk knows
    them: a list's or tuple's items, a text's or bytes' (Counter counts each character), the keys noted of a dict or
    a call's result; 0 for anything else."""
    if isinstance(source, (list, tuple, str, bytes, bytearray)):
        return len(source)
    return source.entries if isinstance(source, _Keyed) else 0


def _special_name(state: Any) -> str | None:
    """The first special name (`__deepcopy__`, ...) a BUILD-like `state` (one value, or a (dict, slotstate) tuple)
    would set on an instance, among the keys the walk noted of the dicts it built or calls returned; None if none."""
    parts = state if isinstance(state, tuple) else (state,)
    return next((p.dunder for p in parts if p.__class__ in _KEYED and p.dunder), None)


@dataclass(frozen=True)
class GlobalImport:
    """One import a pickle would make: `module.name`, by which opcode, at which byte of the stream."""

    module: str
    name: str
    opcode: str
    offset: int


@dataclass(frozen=True)
class GlobalCall:
    """A call a pickle would make to a global it imported (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST), with the
    arguments as far as they are literals (`OPAQUE` where not; the whole tuple when it is not built inline)."""

    callee: GlobalImport
    args: Any
    opcode: str
    offset: int


@dataclass
class PickleWalk:
    """What one pickle holds, statically.

    Attributes:
        start / end: byte offsets of the pickle in its stream (`end` just after STOP, or where the walk stopped).
        protocol: the PROTO opcode's value (0 when absent, as in protocols 0 and 1).
        imports: every global, in stream order.
        error: why the walk stopped before STOP (None when the pickle parsed to the end).
        error_offset: where that happened.
        bound: True when `error` is a bound the pickle passed (a nesting no pickler writes), which the walk refuses
            there, rather than bytes it cannot parse.
        value: the pickled value, when it is a literal (the legacy format's magic number, its storage keys).
        persistent_ids: literal persistent ids (the legacy format's storage records).
        calls: the calls made to globals named in `watch` (see `walk_pickle`), in stream order.
        problems: (offset, message) of what no pickler writes but the walk could go past (a crafted memo index).
        pushed: how often each of `policy.RECONSTRUCTION_GLOBALS` was pushed on the stack, by the text the pickle
            wrote (a GLOBAL or INST, or a memo GET or DUP of a value that holds it), for
            `policy.reconstruction_vouched`;
            `UNCOUNTED` among them where a value too large to look into was pushed again.
        counted_items: how many items that counting looked into (one a byte walked at most).
        counted: what counting found in a memo value already looked into, by its id: (the value, the names it holds
            with their counts); only values that hold no list but themselves, so that nothing but an APPEND,
            APPENDS, SETITEM or SETITEMS on the value itself (which drops its entry) changes what it holds.
    """

    start: int
    end: int = 0
    protocol: int = 0
    imports: list[GlobalImport] = field(default_factory=list)
    error: str | None = None
    error_offset: int | None = None
    bound: bool = False
    value: Any = OPAQUE
    persistent_ids: list[Any] = field(default_factory=list)
    calls: list[GlobalCall] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)
    pushed: dict[str, int] = field(default_factory=dict)
    counted_items: int = 0
    counted: dict[int, tuple[Any, tuple[str, ...]]] = field(default_factory=dict)
    # Each container a memo GET or DUP pushed again (a non-empty list, tuple, text or bytes, a dict, a call's result),
    # by its id (kept, so that no other takes its id): a call of `policy.COPYING_CALLS` on one is refused.
    fetched: dict[int, Any] = field(default_factory=dict)
    # Entries the BUILDs so far copy into objects from states a memo GET or DUP pushed again (`MIN_COPY_BUDGET`).
    copied_entries: int = 0
    # The keys the dicts and sets so far compare a key with on insertion, as they share its hash (`_Keyed.hashed`).
    hash_collisions: int = 0


# Items of a memo value looked into for `PickleWalk.pushed` (a GET of a larger list or tuple holding one of those
# names is marked `UNCOUNTED`): a genuine protocol 0/1 pickle gets _reconstructor and `object` back alone, and an
# (cls, object, None) tuple at most.
MAX_COUNTED_ITEMS = 64
# All the memo GETs and DUPs of one pickle together look into at most one item per byte walked (besides the 64 above):
# every GET is looked into once one of those names was pushed, and 2M GETs of a 63-int tuple (a 6 MB file) took the
# scan 60 s, not 5.5 s. Past the bound nothing more is counted, as `UNCOUNTED`. A genuine file gets back storages and
# small tuples (a protocol 1 torch.save of 20,000 tensors beside a Namespace: 5 items a tensor, 0.03 a byte).
UNCOUNTED = "<uncounted>"
# The smallest memo index `_walk` reports past the bytes before it: below it a C unpickler sets aside under 1 MB
# (16 bytes an index), which exhausts nothing. Binary data kept as a bytes value can start like a pickle (b"\x80\x02"
# then a BININT2 and a BINPUT 213: an int16 sample, a protobuf's field 32) and is scanned as one since review51: its
# BINPUT of at most 255 was refused as memory exhaustion ("set aside 0.0 GB") where the file was read before.
MIN_HOSTILE_MEMO_INDEX = 2**16
# The entries BUILDs may copy from states the pickle fetched again from its memo, besides one per byte walked: a BUILD
# copies every item of its state into the instance's __dict__ (pickle.load, and torch's weights_only loader for an
# OrderedDict), so one dict of 10,000 keys set as the state of 1,000 OrderedDicts (a 133 KB file) peaked
# torch.load(weights_only=True) 204 MB over its baseline and pickle.loads at 216 MB. A state is shared by design
# where instances share one __dict__ (accelerate's PartialState, a Borg singleton: its 9 fields set on each of 3
# instances copy 18 entries), which refusing the GET itself would refuse.
MIN_COPY_BUDGET = 2**16
# The comparisons of keys with keys of the same hash that the dicts and sets of a pickle may cost, besides one per byte
# walked: ints, floats and tuples hash as the file chooses (hash(n) == hash(n + 2**61 - 1)), and each key inserted
# compares with every key of its hash before it. Genuine int-keyed dicts (an optimizer's state, 0..N) share none.
MIN_HASH_COLLISIONS = 2**16
# The containers (lists, dicts, sets) and MARKs one pickle may hold on its stack at once, unfinished or waiting to be
# put in their parent: at most its nesting depth times the batch a pickler writes at a level (1,000 items: Adam's
# state of over 1,000 parameters holds 1,000 dicts). Genuine checkpoints held at most 57 (red team 44 measured the
# fixtures' .bin/.pt, save_pretrained(safe_serialization=False), a Lightning-like checkpoint with Adam's state in
# protocols 0-2 and zip, 100,000 tensors); a pickle of 1,000,000 nested lists (2 MB) took inspect 5.8 s (the walk,
# then the readers after it), and 256 MB of them would take minutes. Counted at each doubling of the stack.
MAX_OPEN_CONTAINERS = 100_000
# The stack size at which `_walk` first counts what it holds.
_FIRST_STACK_CHECK = 4_096
# The opcodes one pickle may hold besides `OPCODES_PER_STRUCTURE` for each persistent id (a tensor's storage) and each
# container (list, tuple, dict, set) it builds. A flat pickle is not bounded by `MAX_OPEN_CONTAINERS`: a list of
# 8,000,000 None (8 MB) took inspect 9-27 s (the walk here about two thirds, then the readers' own walks of its
# values), and 256 MB of them (`MAX_PICKLE_MEMBER`) would take minutes. Red team 45 measured genuine pickles at 5-6
# opcodes a persistent id or container (the fixtures' .bin/.pt, save_pretrained(safe_serialization=False), training
# and DDP-nested checkpoints, numpy arrays in a plain pickle) and a Lightning-like checkpoint with Adam's state and
# 150,000 leaf values in its hyper-parameters at 31, 236,520 opcodes in all: the bound leaves room for 2,000,000 leaf
# values more and twice that ratio. Counted every 65,536 opcodes.
MAX_UNEXPLAINED_OPCODES = 2_000_000
OPCODES_PER_STRUCTURE = 64
_OPCODE_CHECK_MASK = 0xFFFF


def _check_opcode_count(walked: int, persistent_ids: int, containers: int) -> None:
    """Raise `_StackError` once `walked` opcodes are more than the persistent ids and containers built so far explain
    (`MAX_UNEXPLAINED_OPCODES`)."""
    explained = OPCODES_PER_STRUCTURE * (persistent_ids + containers)
    if walked > MAX_UNEXPLAINED_OPCODES + explained:
        raise _StackError(f"{walked:,} opcodes walked where its {counted(persistent_ids, 'tensor storage')} and "
                          f"{counted(containers, 'container')} so far explain at most {explained:,} (no checkpoint's "
                          f"pickle holds more than {OPCODES_PER_STRUCTURE} a storage or container, besides "
                          f"{MAX_UNEXPLAINED_OPCODES:,} others: padded with values to make every reader walk it for "
                          "minutes)")


def _count_pushed(walk: PickleWalk, value: Any, position: int) -> None:
    """Count each of `policy.RECONSTRUCTION_GLOBALS` that `value`, pushed at byte `position`, holds (in tuples and
    lists).

    A tuple or list looked into before, and unchanged since (`PickleWalk.counted`), adds what it held then, at no
    cost to the bound: a genuine protocol 0/1 pickle of a Namespace beside one (3, 224, 224) tuple or list of ints
    shared 3,000 times got it back by a 2-byte BINGET each time, 4 items a GET, and passed the bound of one item a
    byte (the Namespace's globals were then read as dangerous where they were inert before).
    """
    if UNCOUNTED in walk.pushed:
        return  # nothing is vouched for any more: counting on costs time and changes nothing
    cached = walk.counted.get(id(value)) if isinstance(value, (tuple, list)) else None
    if cached is not None and cached[0] is value:
        for qualified in cached[1]:
            walk.pushed[qualified] = walk.pushed.get(qualified, 0) + 1
        return
    pending, seen = [value], 0
    found: list[str] = []
    mutable = False  # a list inside `value`, which may change while `value` does not
    while pending:
        item = pending.pop()
        seen += 1
        if seen > MAX_COUNTED_ITEMS or walk.counted_items + seen > MAX_COUNTED_ITEMS + position - walk.start:
            walk.pushed[UNCOUNTED] = 1
            return
        if isinstance(item, GlobalImport):
            qualified = f"{item.module}.{item.name}"
            if qualified in RECONSTRUCTION_GLOBALS:
                walk.pushed[qualified] = walk.pushed.get(qualified, 0) + 1
                found.append(qualified)
        elif isinstance(item, (tuple, list)):
            mutable = mutable or (item is not value and isinstance(item, list))
            pending.extend(item)
    walk.counted_items += seen
    if isinstance(value, (tuple, list)) and not mutable:
        walk.counted[id(value)] = (value, tuple(found))  # the value is kept: its id is not given to another


class _LineBoundedReader:
    """File-like view of a binary stream for pickletools: bounded lines, reads never past `end`."""

    def __init__(self, handle: BinaryIO, end: int) -> None:
        self._handle = handle
        self._end = end
        # The position is counted here: pickletools asks for it at every opcode, and the file's own tell() made
        # up a third of a legacy file's scan (200,000 storages: 23 s, past what torch.load itself takes).
        self._position = handle.tell()

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._end - self._position)
        data = self._handle.read(left if n < 0 else min(n, left))
        self._position += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        left = max(0, self._end - self._position)
        data = self._handle.readline(min(left, MAX_LINE))
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position


class _FastReader:
    """pickletools' view of an in-memory stream: its own methods, with text lines bounded."""

    def __init__(self, handle: io.BytesIO) -> None:
        self.read = handle.read
        self.tell = handle.tell
        self.readline = functools.partial(handle.readline, MAX_LINE)


class CompactMemo:
    """A pickle's memo as an unpickler uses it (`memo[i] = value`, `memo[i]`, `len(memo)` for MEMOIZE), held in
    a list while its indices run 0, 1, 2, ... as every pickler writes them, in a dict only past the list's end.

    8 bytes an entry, not ~100 (an int key and a dict slot): 10^7 MEMOIZE opcodes in a 10 MB .pkl or .npy held
    0.8 GB in the scan's memo and 1 GB in the restricted unpickler's. A genuine state dict's pickle keeps 8 entries
    a tensor (a 1,000,000-tensor torch.save, legacy or zip: 8M entries, 31M opcodes; Adam's state of 100,000
    parameters: 2M), so a memo bound cannot tell hostile from genuine: its cost per entry is what is cut.

    Example:
        >>> memo = CompactMemo()
        >>> memo[0] = "a"; memo[2] = "c"; memo[len(memo)] = "b"  # MEMOIZE's index is the count: 2 again
        >>> memo[0], memo[2], len(memo), 1 in memo._sparse
        ('a', 'b', 2, False)
    """

    __slots__ = ("_dense", "_sparse")

    def __init__(self) -> None:
        self._dense: list[Any] = []
        self._sparse: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._dense) + len(self._sparse)

    def __getitem__(self, index: int) -> Any:
        if 0 <= index < len(self._dense):
            return self._dense[index]
        return self._sparse[index]  # KeyError, as a dict's

    def __setitem__(self, index: int, value: Any) -> None:
        dense = self._dense
        if 0 <= index < len(dense):
            dense[index] = value
        elif index == len(dense):
            dense.append(value)
            while self._sparse and len(dense) in self._sparse:  # entries written ahead join once it reaches them
                dense.append(self._sparse.pop(len(dense)))
        else:
            self._sparse[index] = value


class _StackError(Exception):
    pass


class _BoundError(_StackError):
    """A pickle past a bound no pickler of a checkpoint reaches (`MAX_OPEN_CONTAINERS`): the walk stops there as at a
    parse error, and the scan words it as the refusal it is, with the bound and why, not as bytes it cannot parse."""


def _pop(stack: list[Any]) -> Any:
    if not stack:
        raise _StackError("stack underflow")
    value = stack.pop()
    if value is MARK:
        raise _StackError("a MARK where a value was expected")
    return value


def _pop_mark(stack: list[Any]) -> list[Any]:
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is MARK:
            items = stack[index + 1:]
            del stack[index:]
            return items
    raise _StackError("no MARK on the stack")


def _top(stack: list[Any]) -> Any:
    if not stack or stack[-1] is MARK:
        raise _StackError("stack underflow")
    return stack[-1]


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return None


_PUSH_ARG = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING", "SHORT_BINSTRING",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
    "FLOAT", "BINFLOAT",
}
_PUSH_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def _set_list_item(target: list[Any], key: Any, value: Any) -> None:
    """SETITEM on a list, as unpicklers run it (`target[key] = value`, any object that takes item assignment): a
    list of [key, value] pairs the walk had checked had a pair replaced by an enum class, which OrderedDict(pairs)
    then iterated. A key the walk cannot read (a numpy integer a call made) leaves the list's items unknown: an
    opaque item is added, which no check takes for a literal."""
    if isinstance(key, int):
        if -len(target) <= key < len(target):
            target[key] = value  # out of range, the unpickler fails there (IndexError)
    else:
        target.append(OPAQUE)


def _copyable(value: Any) -> bool:
    """Whether a call of `policy.COPYING_CALLS` on `value` copies items the file holds once: a non-empty list or
    tuple, text or bytes of two items or more (shorter ones are shared objects a genuine pickle fetches again), a
    dict, a set or anything a call returned (a set, a Counter, a tensor whose elements iterate)."""
    kind = value.__class__
    if kind is list or kind is tuple:
        return bool(value)
    if kind is str or kind is bytes or kind is bytearray:
        return len(value) > 1
    return kind is OpaqueDict or kind is Result or kind is Made or kind is Encoded or value is FETCHED


def _state_dunder(qualified: str, args: Any) -> str | None:
    """The special name a `_reconstructor(cls, base, state)` call copies in from its state's keys (an AttributeDict
    made of dict(state) is a BUILD state as a Counter is), or None."""
    if qualified in RECONSTRUCTOR and isinstance(args, tuple) and len(args) == 3:
        return getattr(args[2], "dunder", None)
    return None


# io.BytesIO copies a bytearray it is made of or given by BUILD (its __setstate__ copies bytes too, but pickle writes
# the bytes getvalue() returns, one object for two buffers made of the same bytes): one 1 MB bytearray the memo fetched
# again for 1,000 BytesIO calls (a 1 MB file) peaked pickle.loads at 993 MB, and 1,000 BUILDs on NEWOBJ'd ones did.
_BUFFERS = frozenset({"_io.BytesIO", "io.BytesIO"})


# torch's rebuilds of a tensor saved from a device without storage (XLA, MPS, ...): `data.to(dtype, device)` of the
# numpy array or CPU tensor they are given, a copy whenever the dtype differs (and weightdoctor's own reader copies a
# read-only array first). torch.save writes an array or tensor made for each call: one 1 MB uint8 array fetched again
# for 100 calls to float64 (a 1.0 MB file) peaked `weightdoctor inspect` at 1,029 MB (255 MB for one call).
_DEVICE_REBUILDS = frozenset({"torch._utils._rebuild_device_tensor_from_numpy",
                              "torch._utils._rebuild_device_tensor_from_cpu_tensor"})

# numpy's protocol 5 rebuild of an array over a buffer (`np.frombuffer`): over bytes the array is read-only, and
# weightdoctor's reader copies a read-only array before it becomes a tensor. numpy writes a buffer made for each
# array: one 1 MB bytes value fetched again for 300 calls (a 1.0 MB plain pickle) peaked `weightdoctor inspect` at
# 540 MB (247 MB for one call).
_ARRAY_BUFFERS = frozenset({"numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer"})


def _copied_argument(qualified: str, args: Any) -> tuple[Any, ...]:
    """What a call of `qualified` copies item by item, as far as it is one of the pickle's values: the container a
    `policy.COPYING_CALLS` call takes (or its whole argument tuple, fetched again), the state _reconstructor hands to
    its base (dict(state) for Lightning's AttributeDict, str(state) for torch's TorchVersion)."""
    if not isinstance(args, tuple):
        return ()
    if qualified in COPYING_CALLS:
        return (args[0], args) if args else (args,)
    if qualified in RECONSTRUCTOR and len(args) == 3:
        return (args[2],)
    if qualified in _BUFFERS and args and args[0].__class__ is bytearray:
        return (args[0],)
    if (qualified in _DEVICE_REBUILDS or qualified in _ARRAY_BUFFERS) and args:
        return (args[0],)
    return ()


def _copied_state(state: Any) -> Any:
    """What a BUILD of `state` on an io.BytesIO copies, when it is a bytearray: the value its state
    `(value, position, dict)` starts with; else None."""
    if isinstance(state, tuple) and state and state[0].__class__ is bytearray:
        return state[0]
    return None


def _copy_problem(what: str, fetched: Any) -> str:
    """The refusal of a call or BUILD (`what`, up to the container) that copies a container the pickle fetched again
    from its memo."""
    return (f"{what} {_fetched_kind(fetched)} the pickle fetched again from its memo: each call copies every item "
            "it holds, so one container handed to call after call makes memory the file does not hold (a 59 KB file "
            "of one 10,000-int list and 1,000 set calls on it: a process that pickle.loads it peaks at 515 MB), where "
            "pickle writes each container's items for it alone")


def _fetched_kind(value: Any) -> str:
    """How a refusal names what the pickle fetched again (`_copyable`)."""
    kind = value.__class__
    return {list: "a list", tuple: "a tuple", str: "a text", bytes: "bytes", bytearray: "bytes",
            OpaqueDict: "a dict"}.get(kind, "what a call returned")


def _refetched_entries(walk: PickleWalk, state: Any) -> int:
    """How many entries a BUILD of `state` (one value, or a tuple: a (dict, slot state) pair, a numpy array's
    (version, shape, dtype, fortran, data)) copies from what the pickle fetched again from its memo (the state, or a
    part of it, pushed by a GET or DUP): the keys the walk noted of a mapping, a list's or tuple's items (an object
    array's __setstate__ copies its data list)."""
    parts = state if isinstance(state, tuple) else (state,)
    again = id(state) in walk.fetched
    total = 0
    for part in parts:
        if again or id(part) in walk.fetched:
            if part.__class__ in _KEYED:
                total += part.entries
            elif part.__class__ is list or part.__class__ is tuple:
                total += len(part)
    return total


def _count_copies(walk: PickleWalk, state: Any, position: int, what: str) -> None:
    """Add what setting `state` on one more object copies from states fetched again (`_refetched_entries`: a BUILD, or
    a tensor rebuild of `STATE_ARGUMENT` that setattrs each item) to the pickle's total, and add a problem once the
    total passes `MIN_COPY_BUDGET` besides one entry per byte walked."""
    copies = _refetched_entries(walk, state) if walk.fetched else 0
    if not copies:
        return
    walk.copied_entries += copies
    walked = position - walk.start
    if walk.copied_entries > MIN_COPY_BUDGET + walked and not walk.problems:
        walk.problems.append((position, _build_copy_problem(what, walk.copied_entries, walked)))


# The calls that make a set of their argument's items (how protocols 0-3 write a set or frozenset).
_SET_CALLS = frozenset({"builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset"})


def _count_collisions(walk: PickleWalk, collisions: int, position: int) -> None:
    """Add the keys an insertion compares with (`_Keyed.hashed`) to the pickle's total, and add a problem once the
    total passes `MIN_HASH_COLLISIONS` besides one per byte walked."""
    if not collisions:
        return
    walk.hash_collisions += collisions
    walked = position - walk.start
    if walk.hash_collisions > MIN_HASH_COLLISIONS + walked and not walk.problems:
        walk.problems.append((position, (
            f"its dicts or sets compare keys {walk.hash_collisions:,} times with keys of the same hash, more than the "
            f"{walked:,} bytes before it hold: keys chosen to share one hash (ints that differ by 2**61 - 1) make "
            "each insertion compare with every such key before it, so loading takes time that grows with the square "
            "of their number (60,000 int keys of one hash, a 779 KB pickle: pickle.loads took 30 s)")))


def _build_copy_problem(what: str, entries: int, walked: int) -> str:
    """The refusal of BUILDs (or state-setting rebuilds, `what`) that copy more entries from states fetched again than
    `MIN_COPY_BUDGET` allows."""
    return (f"{what} copies {entries:,} entries into objects from states the pickle fetched again from its memo, more "
            f"than the {walked:,} bytes before it hold: each one copies every item of its state into the object (an "
            "instance's or tensor's __dict__, an object array's data), so memory grows past what the file holds (one "
            "10,000-key dict as the state of 1,000 OrderedDicts, a 133 KB file: torch.load(weights_only=True) took "
            "204 MB more; one 100,000-item list as the data of 1,000 object arrays, 152 KB: pickle.loads peaked at "
            "809 MB), where a state shared by design (accelerate's PartialState, one __dict__ for all its instances) "
            "copies a few fields")


def _opaque_state_problem() -> str:
    """The refusal of a BUILD whose state is what a call returned (a tensor, an array), not a dict or tuple."""
    return ("BUILD sets the state of an object to what a call returned (a tensor, an array): torch's weights_only "
            "loader updates an OrderedDict's __dict__ from it item by item, and a view of one stored float as a "
            "million rows of two (a 1.6 KB file) made a million entries (torch.load(weights_only=True) peaked at "
            "2,041 MB), where pickle writes a state as a dict or a tuple")


def _device_copy_problem(opcode: str, qualified: str) -> str:
    """The refusal of a `_DEVICE_REBUILDS` call on an array or tensor the pickle fetched again from its memo."""
    return (f"{opcode} calls {qualified} on an array or tensor the pickle fetched again from its memo: each call "
            "converts it to the dtype it names, a copy, so one array handed to call after call makes memory the file "
            "does not hold (one 1 MB uint8 array and 100 calls to float64, a 1.0 MB file: weightdoctor inspect "
            "peaked at 1,029 MB, 255 MB for one call), where torch.save writes an array made for each tensor")


def _buffer_copy_problem(opcode: str, qualified: str) -> str:
    """The refusal of an `_ARRAY_BUFFERS` call on a buffer the pickle fetched again from its memo."""
    return (f"{opcode} calls {qualified} on a buffer the pickle fetched again from its memo: an array over bytes is "
            "read-only, and weightdoctor's reader copies each one into a tensor of its own, so one buffer handed to "
            "call after call makes memory the file does not hold (one 1 MB bytes value and 300 calls, a 1.0 MB file: "
            "weightdoctor inspect peaked at 540 MB, 247 MB for one call), where numpy writes a buffer made for each "
            "array")


def _call_result_copy_problem(opcode: str, qualified: str) -> str:
    """The refusal of a `policy.COPYING_CALLS` call on what a call returned (a tensor, a set, a Counter)."""
    return (f"{opcode} calls {qualified} on what a call returned (a tensor, a set, a Counter): it iterates it item by "
            "item, and a tensor's elements become one Python tensor each (a 1.7 KB file of a million-element view of "
            "one stored byte handed to set: torch.load(weights_only=True) took 675 MB more), where pickle writes "
            "the list, text, bytes or dict such a call takes as a literal made for it")


def _judge_hooks(walk: PickleWalk, hooks: list[tuple[int, str, Any]]) -> None:
    """Add a problem for each tensor whose backward hooks (`HOOKS_ARGUMENT`) hold items or come from a call, as the
    whole pickle left them (a SETITEM on the memo's reference fills them after the call)."""
    for offset, qualified, value in hooks:
        if (value.__class__ is OpaqueDict and value.filled) or call_result(value) or isinstance(value, Made):
            what = "a dict that holds items" if value.__class__ is OpaqueDict else "the result of a call"
            walk.problems.append((offset, f"{qualified} sets a tensor's backward hooks to {what}: autograd calls each "
                                  "one on the tensor's gradient, where torch.save writes an empty OrderedDict"))


def _check_open_containers(stack: list[Any]) -> int:
    """The stack size at which to count again (twice this one), once the containers and MARKs on `stack` are within
    `MAX_OPEN_CONTAINERS`.

    Raises:
        _BoundError: more than that, a nesting no pickler of a checkpoint writes.
    """
    held = sum(1 for value in stack if value is MARK or value.__class__ in _CONTAINERS)
    if held > MAX_OPEN_CONTAINERS:
        # Worded as the other bounds' refusals (what the pickle does, the bound, why it matters, what was measured).
        raise _BoundError(f"{held:,} containers and marks wait on its stack at once (values nested about that deep), "
                          f"more than the {MAX_OPEN_CONTAINERS:,} any checkpoint's pickle holds (genuine ones hold at "
                          "most 57): every reader walks such a nesting level by level (1,000,000 nested lists, a 2 MB "
                          "pickle: weightdoctor inspect took 5.8 s and 205 MB; 256 MB of them, minutes)")
    return 2 * len(stack)


_CONTAINERS = (list, OpaqueDict, Result)


def walk_pickle(handle: BinaryIO, end: int, watch: frozenset[str] = frozenset()) -> PickleWalk:
    """Walk one pickle starting at `handle`'s position, stopping after its STOP or at the first error.

    Example:
        >>> import io, pickle
        >>> walk = walk_pickle(io.BytesIO(pickle.dumps(print)), 10**6)
        >>> [(g.module, g.name, g.opcode) for g in walk.imports]
        [('builtins', 'print', 'STACK_GLOBAL')]

    Args:
        handle: a seekable binary stream positioned at the pickle's first byte.
        end: offset in `handle` that the walk never reads past (the end of the file or member).
        watch: qualified names (`numpy.ndarray`) whose calls are recorded with their arguments; only these,
            since a large data.pkl makes a call per tensor.

    Returns:
        A `PickleWalk`; parse errors are recorded in it (with the imports found before them), never raised.
    """
    start = handle.tell()
    walk = PickleWalk(start=start)
    with warnings.catch_warnings():
        # pickletools warns about odd escapes in protocol 0 strings; hostile input is not worth a warning.
        warnings.simplefilter("ignore")
        return _walk(handle, end, walk, watch)


def _walk(handle: BinaryIO, end: int, walk: PickleWalk, watch: frozenset[str]) -> PickleWalk:
    start = walk.start
    stack: list[Any] = []
    memo = CompactMemo()
    reader: Any
    if isinstance(handle, io.BytesIO) and end >= len(handle.getbuffer()):
        # In memory, reads already stop at the end: hand pickletools the bound methods (much faster).
        reader = _FastReader(handle)
    else:
        reader = _LineBoundedReader(handle, end)
    position = start
    frame_end = 0
    hooks: list[tuple[int, str, Any]] = []  # (offset, rebuild function, its backward hooks), judged at the end
    buffers: dict[int, Result] = {}  # each io.BytesIO a call made, by its id, for a BUILD of its state (`_BUFFERS`)
    next_stack_check = _FIRST_STACK_CHECK  # doubled after each count, so the counting is linear in the stack
    containers = 0  # lists, tuples, dicts and sets built, for `_check_opcode_count`

    def called(callee: Any, args: Any, opcode: str) -> Any:
        """Record a watched call; the value it pushes (a `Made` for a global whose state BUILD may set)."""
        if isinstance(callee, GlobalImport):
            qualified = f"{callee.module}.{callee.name}"
            # OrderedDict() opens every tensor's backward hooks: only a call with arguments is worth recording.
            if qualified in watch and (args != () or qualified != "collections.OrderedDict"):
                walk.calls.append(GlobalCall(callee, args, opcode, position))
            copied = _copied_argument(qualified, args) if walk.fetched and not walk.problems else ()
            fetched = next((walk.fetched[id(value)] for value in copied if id(value) in walk.fetched), None)
            if fetched is not None:
                walk.problems.append((position, _device_copy_problem(opcode, qualified) if qualified in _DEVICE_REBUILDS
                                      else _buffer_copy_problem(opcode, qualified) if qualified in _ARRAY_BUFFERS
                                      else _copy_problem(f"{opcode} calls {qualified} on", fetched)))
            if (qualified in COPYING_CALLS and qualified != "collections.OrderedDict" and isinstance(args, tuple)
                    and args and (call_result(args[0]) or args[0].__class__ is Made)
                    and args[0].__class__ is not Encoded and not walk.problems):
                # Not fetched again: a call's result made for this call (a tensor). OrderedDict of anything but pairs
                # is refused by `policy.call_problem` already; bytearray(_codecs.encode(text, "latin1")) is how
                # protocol 2 writes a bytearray.
                walk.problems.append((position, _call_result_copy_problem(opcode, qualified)))
            if qualified == "collections.OrderedDict":
                made = OpaqueDict(args != ())
                if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], (list, tuple)):
                    made.keyed(pair[0] for pair in args[0] if isinstance(pair, (list, tuple)) and pair)
                return made
            at = HOOKS_ARGUMENT.get(qualified)
            if at is not None and isinstance(args, tuple) and len(args) > at:
                hooks.append((position, qualified, args[at]))
            at = STATE_ARGUMENT.get(qualified)
            if at is not None and isinstance(args, tuple) and len(args) > at:
                special = _special_name(args[at])
                if special is not None and not walk.problems:
                    walk.problems.append((position, f"{qualified} sets {special} on a tensor through its state "
                                          "(setattr of each item): copy.deepcopy, copy.copy and pickle (a re-save) "
                                          "look it up on the instance before its class and call it, where torch "
                                          "writes a tensor subclass's fields, never a special method"))
                _count_copies(walk, args[at], position, qualified)
            if built_global(qualified) and "numpy.dtype" in watch:
                return Made(callee, args)
            if qualified in RECONSTRUCTOR and "numpy.dtype" in watch and isinstance(args, tuple) and args \
                    and isinstance(args[0], GlobalImport) and built_global(f"{args[0].module}.{args[0].name}"):
                # What _reconstructor(cls, ...) returns is built as cls.__new__'s is (NEWOBJ): a BUILD on it is judged
                # as one on cls.
                made = Made(args[0], ())
                made.dunder = _state_dunder(qualified, args)
                made.entries = _entries(args[2]) if len(args) == 3 else 0
                return made
            if _state_dunder(qualified, args) is not None:
                made = Result(_state_dunder(qualified, args))
                made.entries = _entries(args[2])
                return made
            if qualified in _BUFFERS:
                buffer = Result()
                buffers[id(buffer)] = buffer
                return buffer
            if qualified == "_codecs.encode":
                return Encoded()
            at = _MAPPING_CALLS.get(qualified)
            if at is not None and isinstance(args, tuple):
                # Counter(mapping) keeps its keys, Counter(iterable) makes keys of its items, dict and defaultdict
                # keep a mapping's keys or make them of pairs: a BUILD state either way. Each with nothing to copy
                # (REDUCE, or NEWOBJ's __new__) is one object too, whose keys SETITEM sets later: Counter() filled
                # with __deepcopy__ set it in a state dict's __dict__ under torch.load(weights_only=True), and so did
                # defaultdict() in a pickle of omegaconf containers (inert there) under pickle.load.
                source = args[at] if len(args) > at else None
                made = Result(getattr(source, "dunder", None))
                made.entries = _entries(source)
                if isinstance(source, (list, tuple)):
                    keys = (list(source) if qualified == "collections.Counter"
                            else [pair[0] for pair in source if isinstance(pair, (list, tuple)) and pair])
                    made.keyed(keys)
                    _count_collisions(walk, made.hashed(keys), position)
                return made
            if qualified in _SET_CALLS and isinstance(args, tuple) and args and isinstance(args[0], (list, tuple)):
                made = Result()
                _count_collisions(walk, made.hashed(args[0]), position)
                return made
        return OPAQUE

    try:
        for walked, (opcode, arg, pos) in enumerate(pickletools.genops(reader), 1):
            position = pos if pos is not None else position
            name = opcode.name
            if not walked & _OPCODE_CHECK_MASK:
                _check_opcode_count(walked, len(walk.persistent_ids), containers)
            if name in _PUSH_ARG:
                stack.append(arg)
            # The branches exclude one another; the most frequent in a state dict's pickle come first (a legacy
            # file of 100,000 tensors walks 3.1M opcodes, each testing the names above its own).
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if arg < 0:
                    raise _StackError("negative memo index")
                # The stack is read first, as C unpicklers do: a PUT on an empty stack (or right after a MARK) fails
                # there, before the memo grows. Binary data that starts like a pickle (b"\x80\x03q\xf3...") is
                # no pickle, and its loader sets nothing aside.
                value = _top(stack)
                if arg > max(position - start, MIN_HOSTILE_MEMO_INDEX) and not walk.problems:
                    # A pickler numbers its memo from 0, one entry per PUT, so no index passes the bytes before
                    # it. C unpicklers (pickle.load, torch.load(weights_only=False), the torch-free reader) hold
                    # the memo in an array grown to twice the index and filled: a 400-byte file with index 3e8
                    # took 4.6 GB of memory.
                    set_aside = 16 * arg
                    amount = f"{set_aside / 1e9:,.1f} GB" if set_aside >= 1e8 else f"{set_aside / 1e6:,.0f} MB"
                    walk.problems.append((position, f"memo index {arg:,}, a number no pickler reaches this early "
                                          "in a pickle (built to exhaust memory: C unpicklers such as pickle.load "
                                          f"set aside {amount} for it)"))
                memo[arg] = value
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                try:
                    stack.append(memo[arg])
                except KeyError:
                    raise _StackError(f"memo entry {arg} is read before it is written") from None
                if stack[-1] is OPAQUE:
                    stack[-1] = FETCHED
                if _copyable(stack[-1]):
                    walk.fetched[id(stack[-1])] = stack[-1]
                if walk.pushed:
                    _count_pushed(walk, stack[-1], position)
            elif name == "MARK":
                stack.append(MARK)
                if len(stack) > next_stack_check:
                    next_stack_check = _check_open_containers(stack)
            elif name == "TUPLE":
                stack.append(tuple(_pop_mark(stack)))
                containers += 1
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                containers += 1
                count = int(name[-1])
                items = [_pop(stack) for _ in range(count)][::-1]
                stack.append(tuple(items))
            elif name == "REDUCE" or name == "NEWOBJ":
                args = _pop(stack)
                stack.append(called(_pop(stack), args, name))
            elif name in _PUSH_CONST:
                stack.append(_PUSH_CONST[name])
            elif name == "BINPERSID":
                walk.persistent_ids.append(_pop(stack))
                stack.append(OPAQUE)
            elif name == "EMPTY_TUPLE":
                stack.append(())
                containers += 1
            elif name == "BYTEARRAY8":
                stack.append(bytearray(arg))
            elif name == "PROTO":
                if arg > HIGHEST_PROTOCOL:
                    raise _StackError(f"unsupported pickle protocol {arg}")
                walk.protocol = arg
            elif name == "FRAME":
                # The opcode, its 8-byte length, then the frame. The furthest of them: C's unpickler reads each
                # frame off a stream, so a second FRAME nested in the first, ending at the STOP, leaves a
                # stream without peek at the end of the first.
                frame_end = max(frame_end, position + 9 + arg)
            elif name == "STOP":
                walk.value = _pop(stack)
                walk.end = reader.tell()
                if frame_end > walk.end:
                    # No pickler writes one (a frame closes with the STOP it holds). pickle.load of a file reads
                    # the next pickle right after the STOP, of a stream without peek (io.BytesIO: torch.load of bytes)
                    # after the frame: a legacy torch file whose next pickle hid a posix.system call in a bytes value
                    # was safe to this walk and to torch.load(path), and ran under torch.load(io.BytesIO(data)).
                    walk.problems.append((position, f"its FRAME runs {frame_end - walk.end:,} bytes past its STOP "
                                          "(readers of a file and of a stream read different pickles after it)"))
                _judge_hooks(walk, hooks)
                return walk
            elif name == "POP":
                _pop(stack)
            elif name == "POP_MARK":
                _pop_mark(stack)
            elif name == "DUP":
                stack.append(_top(stack))
                if stack[-1] is OPAQUE:
                    stack[-1] = FETCHED
                if _copyable(stack[-1]):
                    walk.fetched[id(stack[-1])] = stack[-1]
                if walk.pushed:
                    _count_pushed(walk, stack[-1], position)
            elif name == "MEMOIZE":
                memo[len(memo)] = _top(stack)
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                found = GlobalImport(module, attr, name, position)
                walk.imports.append(found)
                stack.append(found)
                if arg.replace(" ", ".", 1) in RECONSTRUCTION_GLOBALS:
                    _count_pushed(walk, found, position)
            elif name == "STACK_GLOBAL":
                attr, module = _pop(stack), _pop(stack)
                module_text, attr_text = _text(module), _text(attr)
                if module_text is None or attr_text is None:
                    found = GlobalImport("<computed>", "<computed>", name, position)
                else:
                    found = GlobalImport(module_text, attr_text, name, position)
                walk.imports.append(found)
                stack.append(found)
                _count_pushed(walk, found, position)
            elif name == "INST":
                module, _, attr = arg.partition(" ")
                found = GlobalImport(module, attr, name, position)
                walk.imports.append(found)
                if arg.replace(" ", ".", 1) in RECONSTRUCTION_GLOBALS:
                    # INST calls the global it imports, never a _reconstructor's argument: a use no approved call
                    # consumes, so `dict` or `str` of the pickle's choosing is not read as inert (str(data,
                    # "punycode") beside a genuine TorchVersion was safe).
                    _count_pushed(walk, found, position)
                stack.append(called(found, tuple(_pop_mark(stack)), name))
            elif name in ("EXT1", "EXT2", "EXT4"):
                # copyreg's extension registry maps the code to a (module, name) that gets imported.
                walk.imports.append(GlobalImport("<extension registry>", str(arg), name, position))
                walk.problems.append((position, f"{name} imports the global registered under code {arg} in copyreg's "
                                      "extension registry of the process that loads the file, which Python leaves "
                                      "empty (pickle.load: unregistered extension code) and any library it imported "
                                      "may fill: what it names is not in the file, so the scan cannot judge it (a "
                                      "pickler writes one only for a global its own process registered)"))
                stack.append(OPAQUE)
            elif name == "OBJ":
                items = _pop_mark(stack)
                if not items:
                    raise _StackError("OBJ without a class")
                stack.append(called(items[0], tuple(items[1:]), name))
            elif name == "NEWOBJ_EX":
                _pop(stack)
                args = _pop(stack)
                stack.append(called(_pop(stack), args, name))
            elif name == "BUILD":
                state = _pop(stack)
                target = _top(stack)
                special = _special_name(state)
                if special is not None and not walk.problems:
                    # torch's weights_only loader updates an OrderedDict's __dict__ with a BUILD's state, and
                    # pickle.load any object's: state_dict.__deepcopy__ then answered copy.deepcopy(state_dict).
                    walk.problems.append((position, f"BUILD sets {special} on an object through its state: "
                                          "copy.deepcopy, copy.copy and pickle (a re-save) look it up on the "
                                          "instance before its class and call it, where pickle writes an object's "
                                          "fields, never a special method"))
                _count_copies(walk, state, position, "BUILD")
                if (state is OPAQUE or state is FETCHED) and not isinstance(target, Made) and not walk.problems:
                    # An inert class's state is judged by `policy.build_problem` (a Made target).
                    walk.problems.append((position, _opaque_state_problem()))
                if isinstance(target, Made):
                    walk.calls.append(GlobalCall(target.callee, (target.args, state), name, position))
                elif id(target) in buffers and walk.fetched and not walk.problems:
                    copied = _copied_state(state)
                    if copied is not None and id(copied) in walk.fetched:
                        walk.problems.append((position, _copy_problem("BUILD fills an io.BytesIO with a copy of",
                                                                      copied)))
                elif isinstance(target, GlobalImport):
                    # setattr on the class or function itself, for the whole process: BUILD on transformers'
                    # OptimizerNames of {"_value2member_map_": ...} made every later OptimizerNames("adamw_torch")
                    # return SGD (torch.load(weights_only=False)). Pickle writes a global by its name alone.
                    walk.problems.append((position, f"BUILD sets the attributes of {target.module}.{target.name} "
                                          "itself (the class or function the whole process shares); pickle never "
                                          "sets the state of an imported global"))
            elif name == "EMPTY_LIST":
                stack.append([])
                containers += 1
                if len(stack) > next_stack_check:
                    next_stack_check = _check_open_containers(stack)
            elif name in ("EMPTY_DICT", "EMPTY_SET"):
                stack.append(OpaqueDict() if name == "EMPTY_DICT" else Result())
                containers += 1
                if len(stack) > next_stack_check:
                    next_stack_check = _check_open_containers(stack)
            elif name == "LIST":
                stack.append(_pop_mark(stack))
                containers += 1
            elif name in ("DICT", "FROZENSET"):
                containers += 1
                items = _pop_mark(stack)
                if name == "DICT":
                    stack.append(OpaqueDict(bool(items)))
                    stack[-1].keyed(items[0::2])
                    _count_collisions(walk, stack[-1].hashed(items[0::2]), position)
                else:
                    stack.append(Result())
                    _count_collisions(walk, stack[-1].hashed(items), position)
            elif name == "APPEND":
                item = _pop(stack)
                target = _top(stack)
                if isinstance(target, list):
                    target.append(item)
                    if walk.counted:
                        walk.counted.pop(id(target), None)
            elif name == "APPENDS":
                items = _pop_mark(stack)
                target = _top(stack)
                if isinstance(target, list):
                    target.extend(items)
                    if walk.counted:
                        walk.counted.pop(id(target), None)
            elif name == "SETITEM":
                value = _pop(stack)
                key = _pop(stack)
                target = _top(stack)
                if target.__class__ in _KEYED:
                    if target.__class__ is OpaqueDict:
                        target.filled = True
                    target.keyed((key,))
                    _count_collisions(walk, target.hashed((key,)), position)
                elif isinstance(target, list):
                    _set_list_item(target, key, value)
                    walk.counted.pop(id(target), None)
            elif name in ("SETITEMS", "ADDITEMS"):
                items = _pop_mark(stack)
                if name == "SETITEMS" and len(items) % 2:
                    # Every unpickler indexes past the last key for its value: torch.load's ended in "IndexError: list
                    # index out of range", said as that. A pickler writes keys and values in pairs.
                    raise _StackError(f"SETITEMS of {counted(len(items), 'item')}, a key without its value")
                target = _top(stack)
                if items and target.__class__ in _KEYED:
                    if target.__class__ is OpaqueDict:
                        target.filled = True
                    if name == "SETITEMS":
                        target.keyed(items[0::2])
                    _count_collisions(walk, target.hashed(items[0::2] if name == "SETITEMS" else items), position)
                elif name == "SETITEMS" and isinstance(target, list):
                    walk.counted.pop(id(target), None)
                    for index in range(0, len(items) - 1, 2):
                        _set_list_item(target, items[index], items[index + 1])
            elif name == "PERSID":
                walk.persistent_ids.append(arg)
                stack.append(OPAQUE)
            elif name == "NEXT_BUFFER":
                stack.append(OPAQUE)
            elif name == "READONLY_BUFFER":
                _top(stack)
            else:  # an opcode pickletools knows but this walk does not: refuse rather than guess
                raise _StackError(f"opcode {name} is not understood by the scanner")
        raise _StackError("the pickle ends without a STOP opcode")
    except _StackError as exc:
        walk.error = str(exc)
        walk.bound = isinstance(exc, _BoundError)
    except (ValueError, UnicodeDecodeError, OverflowError, MemoryError, IndexError, KeyError, TypeError) as exc:
        walk.error = clip_words(" ".join(str(exc).split()), 200) or type(exc).__name__
    _judge_hooks(walk, hooks)
    walk.error_offset = position
    walk.end = reader.tell()
    return walk


# What may happen to what an EXT opcode pushed with nothing run on it: kept in the memo and fetched again, copied,
# dropped, or returned by STOP.
_INERT_USES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET", "DUP", "POP",
                         "POP_MARK", "STOP"})


def extension_import_used(data: bytes) -> bool:
    """Whether the first pickle in `data` does anything with what an EXT1, EXT2 or EXT4 opcode imported but keep it in
    the memo, drop it or return it, so that `pickle.loads` would run code of the global the process registered
    under the code (call it, build it, NEWOBJ it, set or append items on it, hash it as a key).

    `pickle.loads` of an unregistered code raises (Python registers none), and a registered one's import alone runs
    nothing the process did not register: random bytes (a digest) that parse whole by chance, such as EXT4, its
    4-byte code and STOP, only return it. Any other opcode taking it from the stack, even a tuple or list holding
    it, counts as a use; so do a pickle that cannot be parsed to its STOP and a stack or memo the loader would find
    short (what it would do there is not followed).

    Example:
        >>> extension_import_used(b"\\x84\\x98\\xe9N\\xa7.")  # EXT4 and STOP: returned
        False
        >>> extension_import_used(b"\\x82\\x01q\\x00h\\x000.")  # memoized, fetched, popped: the first is returned
        False
        >>> extension_import_used(b"\\x82\\x01)R.")  # called by REDUCE
        True
    """
    stack: list[bool | None] = []  # True: holds what an EXT opcode imported; None: a MARK
    memo: dict[int, bool] = {}
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = opcode.name
            if name in ("EXT1", "EXT2", "EXT4"):
                stack.append(True)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[int(arg) if name != "MEMOIZE" else len(memo)] = stack[-1] is True
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[int(arg)])
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "MARK":
                stack.append(None)
            elif name in ("POP", "POP_MARK", "STOP"):
                if name == "POP_MARK":
                    while stack.pop() is not None:
                        pass
                else:
                    stack.pop()
                if name == "STOP":
                    return False
            else:
                taken: list[bool | None] = []
                for kind in reversed(opcode.stack_before):  # the top of the stack first
                    if kind is pickletools.markobject:
                        while (item := stack.pop()) is not None:
                            taken.append(item)
                    elif kind is not pickletools.stackslice:
                        taken.append(stack.pop())
                if any(item is True for item in taken):
                    return True
                stack.extend(None if kind is pickletools.markobject else False for kind in opcode.stack_after)
    except (ValueError, IndexError, KeyError):
        return True
    return True
