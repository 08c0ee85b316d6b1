"""What `pickle.loads` of a TransformerEngine `_extra_state` byte tensor would import, judged without unpickling.

TransformerEngine 1.x and later keep each module's FP8 state as `torch.frombuffer(pickle.dumps(state), uint8)`
under `<module>._extra_state`, and its `set_extra_state` runs `pickle.loads` on the tensor's bytes when the model
loads the state dict, with no restriction at all. The outer file's scan sees a tensor of bytes, so a pickle that
calls `os.system` there left a `.pt`, and a `.safetensors` (which holds no pickle of its own), called safe.
"""

from __future__ import annotations

import io

from weightdoctor.security.opcodes import walk_pickle
from weightdoctor.security.policy import DANGEROUS, UNKNOWN, WATCHED_CALLS
from weightdoctor.security.scan import _Collector, scan_bytes

SUFFIX = "_extra_state"
# TE's state is a few KB per module (scales and amax histories); a larger tensor is not read whole to be checked.
MAX_EXTRA_STATE_BYTES = 16 << 20
BYTE_DTYPES = ("uint8", "int8")
# How plain `pickle.dumps` writes a CPU tensor's storage: `_load_from_bytes(<a legacy torch.save>)`, which
# torch.loads those bytes with weights_only=False. Every genuine TE state with tensors names it.
LOAD_FROM_BYTES = "torch.storage._load_from_bytes"


def is_extra_state(name: str, dtype: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor is stored where nn.Module keeps a module's extra state, as bytes TE would unpickle.

    Example:
        >>> is_extra_state("decoder.layers.0.mlp.linear_fc1._extra_state", "uint8", (1234,))
        True
        >>> is_extra_state("decoder.layers.0.mlp.my_extra_state", "uint8", (1234,))
        False
    """
    return (name == SUFFIX or name.endswith("." + SUFFIX)) and dtype in BYTE_DTYPES and len(shape) == 1


def starts_like_a_pickle(data: bytes) -> bool:
    """A PROTO opcode first, as every pickle of protocol 2 to 5 (TE's `pickle.dumps`) begins."""
    return len(data) >= 2 and data[0] == 0x80 and data[1] <= 5


def pickle_loads_problem(data: bytes) -> tuple[str, str] | None:
    """Why `pickle.loads(data)` may run code or exhaust memory, as `(verdict, what the bytes hold)`, or None when
    it imports only safe (or inert) globals.

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
            if not isinstance(blob, (bytes, bytearray)):
                unresolved = True  # built by a call: what torch.load would read is not known here
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
    # The parse error itself is judged below, by how the bytes start; any other problem (a call making memory
    # nothing fills, a memo index built to exhaust memory) is one pickle.loads would meet.
    other = [p for p in collector.problems if not p.message.startswith("the pickle cannot be parsed")]
    if other:
        return "suspicious", f"holds a pickle that, at byte {other[0].offset:,}, {other[0].message}"
    if walk.error is not None and starts_like_a_pickle(data):
        return "suspicious", f"starts like a pickle but cannot be parsed ({walk.error})"
    return None


__all__ = ["BYTE_DTYPES", "LOAD_FROM_BYTES", "MAX_EXTRA_STATE_BYTES", "SUFFIX", "is_extra_state",
           "pickle_loads_problem", "starts_like_a_pickle"]
