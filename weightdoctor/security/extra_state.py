"""What `pickle.loads` of a TransformerEngine `_extra_state` byte tensor would import, judged without unpickling.

TransformerEngine 1.x and later keep each module's FP8 state as `torch.frombuffer(pickle.dumps(state), uint8)`
under `<module>._extra_state`, and its `set_extra_state` runs `pickle.loads` on the tensor's bytes when the model
loads the state dict, with no restriction at all. The outer file's scan sees a tensor of bytes, so a pickle that
calls `os.system` there left a `.pt`, and a `.safetensors` (which holds no pickle of its own), called safe.
"""

from __future__ import annotations

import io

from weightdoctor.security.opcodes import MAX_LINE, walk_pickle
from weightdoctor.security.policy import DANGEROUS, UNKNOWN, WATCHED_CALLS
from weightdoctor.security.scan import _Collector, scan_bytes, walk_stopped

SUFFIX = "_extra_state"
# TE's state is a few KB per module (scales and amax histories); a larger tensor is not read whole to be checked.
MAX_EXTRA_STATE_BYTES = 16 << 20
BYTE_DTYPES = ("uint8", "int8")
# TE reads `state.detach().cpu().numpy().tobytes()`: any dtype numpy holds, any shape, gives it the tensor's bytes
# (C order), so only the dtypes `.numpy()` refuses (it raises before pickle.loads) are left out.
# torch's bits types and torch 2.14's bcomplex32 too ("Got unsupported ScalarType Bits16"): called dangerous, a TE
# state that pickle.loads never sees.
NOT_NUMPY_PREFIXES = ("bfloat16", "float8", "float6", "float4", "complex32", "bcomplex32", "bits")
# How plain `pickle.dumps` writes a CPU tensor's storage: `_load_from_bytes(<a legacy torch.save>)`, which
# torch.loads those bytes with weights_only=False. Every genuine TE state with tensors names it.
LOAD_FROM_BYTES = "torch.storage._load_from_bytes"


def is_extra_state(name: str, dtype: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor is stored where nn.Module keeps a module's extra state, as bytes TE would unpickle.

    TE writes a 1-D uint8 tensor, but `load_state_dict` hands set_extra_state whatever the file holds under the
    name, and its `.numpy().tobytes()` flattens any shape and numpy dtype: a float32 or 2-D tensor is unpickled
    all the same.

    Example:
        >>> is_extra_state("decoder.layers.0.mlp.linear_fc1._extra_state", "uint8", (1234,))
        True
        >>> is_extra_state("decoder.layers.0.mlp.linear_fc1._extra_state", "float32", (2, 8))
        True
        >>> is_extra_state("decoder.layers.0.mlp.linear_fc1._extra_state", "bfloat16", (8,))
        False
        >>> is_extra_state("decoder.layers.0.mlp.my_extra_state", "uint8", (1234,))
        False
    """
    del shape  # any shape: `.numpy().tobytes()` reads it in C order
    return (name == SUFFIX or name.endswith("." + SUFFIX)) and not dtype.startswith(NOT_NUMPY_PREFIXES)


def starts_like_a_pickle(data: bytes) -> bool:
    """A PROTO opcode first, as every pickle of protocol 2 to 5 (TE's `pickle.dumps`) begins."""
    return len(data) >= 2 and data[0] == 0x80 and data[1] <= 5


def _ran_out(error: str) -> bool:
    """Whether a walk stopped because the bytes ended (the cut at the size bound), not at bytes no pickler writes.

    pickletools words the end of the bytes four ways: no next opcode, a counted argument short of its count, a text
    line with no newline, and a fixed-width argument (a BININT's 4 bytes, a BINUNICODE's length) cut through, which
    a cut at the bound falls into as readily as the others.
    """
    return ("exhausted before seeing STOP" in error or " remain" in error or error.startswith("no newline found")
            or error.startswith("not enough data in stream to read"))


def pickle_loads_problem(data: bytes, *, prefix: bool = False) -> tuple[str, str] | None:
    """Why `pickle.loads(data)` may run code or exhaust memory, as `(verdict, what the bytes hold)`, or None when
    it imports only safe (or inert) globals.

    `prefix`: `data` is only the first bytes of a larger tensor. A pickle that stops within them is judged whole
    (pickle.loads reads nothing past STOP, so zeros padding a hostile pickle past the size bound change nothing);
    what the walk met before the cut refuses as it would anyway, and a pickle still running at the cut is
    refused as suspicious.

    Only the first pickle counts, from byte 0, as `pickle.loads` reads nothing past its STOP. A call to
    `torch.storage._load_from_bytes` (how `pickle.dumps` writes every tensor's storage) is accepted when its
    argument is a bytes literal whose own scan is safe: that is the nested `torch.load` it makes. Bytes that do
    not start like a pickle and import nothing unsafe before they stop parsing are left alone (`pickle.loads`
    fails on them having imported nothing unsafe); ones that start like a pickle and cannot be parsed are refused,
    as no pickler writes them.

    Example:
        >>> import pickle
        >>> pickle_loads_problem(pickle.dumps({"scale": 1.0})) is None
        True
        >>> pickle_loads_problem(b"cposix\\nsystem\\n(S'id'\\ntR.")
        ('dangerous', 'holds a pickle that names posix.system')
    """
    collector = _Collector(None)
    walk = walk_pickle(io.BytesIO(data), len(data), WATCHED_CALLS | {LOAD_FROM_BYTES})
    collector.add_walk(walk, "the tensor's bytes")
    flagged = sorted({g.qualified for g in collector.globals if g.safety in (DANGEROUS, UNKNOWN)})
    nested: list[str] = []
    if LOAD_FROM_BYTES in flagged:
        calls = [call for call in walk.calls if f"{call.callee.module}.{call.callee.name}" == LOAD_FROM_BYTES]
        unresolved = False
        scanned: set[int] = set()
        for call in calls:
            blob = call.args[0] if isinstance(call.args, tuple) and len(call.args) == 1 else None
            # bytes only: a bytearray literal can be rewritten before the call (SETITEMS runs `ba[i] = v`, which
            # the walk does not model), and pickle.dumps of a storage never writes one.
            if not isinstance(blob, bytes):
                unresolved = True  # built by a call, or mutable: what torch.load would read is not known here
                continue
            if id(blob) in scanned:
                continue  # one literal called a million times through the memo is scanned once
            scanned.add(id(blob))
            inner = scan_bytes(bytes(blob))
            if inner.unsafe:
                nested.append(inner.summary(limit=4))
        if not unresolved:
            flagged.remove(LOAD_FROM_BYTES)
    if flagged:
        shown = ", ".join(flagged[:4]) + (", ..." if len(flagged) > 4 else "")
        dangerous = any(g.safety == DANGEROUS and g.qualified in flagged for g in collector.globals)
        return "dangerous" if dangerous else "suspicious", f"holds a pickle that names {shown}"
    if nested:
        return "dangerous", f"holds a pickle whose {LOAD_FROM_BYTES} torch.loads bytes that are not safe ({nested[0]})"
    if (walk.error is not None and walk.error.startswith("no newline found") and walk.error_offset is not None
            and len(data) - walk.error_offset - 1 >= MAX_LINE):
        # The walk's text lines stop at MAX_LINE; pickle.loads reads a longer one whole and goes on past it.
        return "suspicious", (f"holds a pickle whose text line at byte {walk.error_offset:,} runs past the "
                              f"{MAX_LINE:,} bytes the scanner reads of one")
    if prefix and walk.error is not None and _ran_out(walk.error):
        # A pickle longer than the bytes read: no TransformerEngine state comes near the bound (a module's FP8
        # scales and amax histories are kilobytes), and what its rest would import is not known, so it is not
        # vouched for; padding a hostile pickle past the bound no longer turns a refusal into a warning.
        return "suspicious", (f"holds a pickle that runs past the first {len(data):,} bytes weightdoctor scans of "
                              f"one ({walk.error}): what the rest imports is not known")
    # The parse error itself is judged below, by how the bytes start; any other problem (a call making memory
    # nothing fills, a memo index built to exhaust memory) is one pickle.loads would meet.
    other = [p for p in collector.problems if not walk_stopped(p.message)]
    if other:
        return "suspicious", f"holds a pickle that, at byte {other[0].offset:,}, {other[0].message}"
    if walk.error is not None and walk.bound:
        return "suspicious", f"holds a pickle that, at byte {walk.error_offset or 0:,}, {walk.error}: refused there"
    if walk.error is not None and starts_like_a_pickle(data):
        return "suspicious", f"starts like a pickle but cannot be parsed ({walk.error})"
    return None


__all__ = ["BYTE_DTYPES", "LOAD_FROM_BYTES", "MAX_EXTRA_STATE_BYTES", "SUFFIX", "is_extra_state",
           "pickle_loads_problem", "starts_like_a_pickle"]
