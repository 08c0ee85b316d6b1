"""Red team 41: the reader's remaining weak reads, and a fuzz round on the formats added last.

What did not hold, each fixed here:
1. A TransformerEngine `_extra_state` tensor of the state dict larger than `MAX_EXTRA_STATE_BYTES` that is a view
   spread over its storage (a slice of columns) was read whole (`load_tensor`, the span's slabs) to judge its first
   16 MiB: its leading rows alone are read now (`StaticTensor.leading`, as red team 40 reads one beside the state dict).
2. The byte copy's comparing thread (convert, shard, convert --to bin) mapped each chunk of its own temporary output:
   one cut short by another process between the size check and the comparison killed the process with SIGBUS (exit
   135, no message, the temporary left behind). The output's chunk is read into a buffer now, as the source's is.
3. Tied names of a torch zip the system would not map whole (a private map larger than it commits: each view then maps
   the bytes it reaches, anew) were one tensor to inspect (`alias_groups`: one `view_id`) and two to convert (their
   views' addresses differed): convert wrote both, warning that they "share storage but are different views". convert
   tells them apart by `view_id` now.
4. check-dtype --sample of a torch zip changed since it was read said "the file changed since its header was read": a
   zip has no header; it says "its zip records" now.
5. The fuzzer, given seeds of the formats added last (`build_recent_seeds`) and a GGUF header mutator, found a torch.ao
   state dict whose zero_point record was given the weight's storage key: torch.load makes it a qint8 tensor with no
   quantizer, and every command said "unexpected RuntimeError: ... cannot call qscheme on UnknownQuantizer". Refused
   in one line now.
6. An index naming a GGUF shard was read as "gguf (sharded)"; a GGUF under a safetensors shard's name beside a real one
   had its tensor said to be "in no shard". Refused in one line naming the GGUF now.

What held (measured, not all pinned here): `mutation_fuzz.py --formats all --structured --seed 4141` (435 mutants of 14
formats, 360 s), `--formats gguf,quant,llama2c,int4,reparam,stmeta,index,zip --structured --seed 4143` (689 mutants,
420 s, after the fix of 5) and `--seed 4144` of the six new formats (468 mutants, 300 s): no finding; `--seed 4142` of
the six new formats (709 mutants, 480 s): the one finding of 5. An index whose shard is a folder, a FIFO, a link to
itself, a loop of two links, a link to /dev/zero or to `.`, or `../outside.safetensors`: every command exits 2 in one
line. safetensors metadata of 400,000 keys is refused; a 60 MB value is read (the header's own 100 MB bound), inspect
clipping it, --json holding it whole.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import REPO_ROOT, run_cli

# --- 1. the first bytes of a large _extra_state view of the state dict ----------------------------------------------

_TE_STATE = pickle.dumps({"recipe": None, "amax_history": [1.0, 2.0]}, protocol=4)


def _extra_state_columns(path: Path, payload: bytes, rows: int = 16384, columns: int = 4096) -> Path:
    """A torch zip whose `layer._extra_state` is the left half of a (rows, columns) uint8 storage (32 MiB of 64: over
    the 16 MiB judged), `payload` its first bytes (the first row's), zeros after."""
    storage = torch.zeros(rows, columns, dtype=torch.uint8)
    storage[0, :len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(41)
    torch.save({"layer.weight": torch.randn(64, 64, generator=generator),
                "layer._extra_state": storage[:, :columns // 2]}, path)
    return path


def _bytes_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes every os.preadv reads from now on (the reader's plain reads of a torch zip)."""
    read = [0]
    real = os.preadv

    def counting(fd: int, buffers: list[memoryview], offset: int, *rest: int) -> int:
        got = real(fd, buffers, offset, *rest)
        read[0] += got
        return got

    monkeypatch.setattr(os, "preadv", counting)
    return read


def test_a_large_extra_state_view_has_only_its_first_bytes_read(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Its 16 MiB judged are its first 8,192 rows (32 MiB of the storage, each row's right half read and left out);
    all 64 MiB of the storage were read before."""
    from weightdoctor.security.extra_state import MAX_EXTRA_STATE_BYTES

    path = _extra_state_columns(tmp_path / "te.pt", _TE_STATE)
    read = _bytes_read(monkeypatch)
    done = run_cli("inspect", path, "--json")
    assert done.exit_code == 0, done.stderr
    assert '"layer._extra_state"' in done.stdout
    # 33,519,616 read (67,041,280 before: the whole span)
    assert 0 < read[0] <= 2 * MAX_EXTRA_STATE_BYTES + 4096, f"{read[0]:,}"


def test_a_large_extra_state_view_that_pickles_a_call_is_still_refused(tmp_path: Path) -> None:
    hostile = b"\x80\x04cposix\nsystem\n\x8c\x04echo\x85R."
    path = _extra_state_columns(tmp_path / "te.pt", hostile)
    done = run_cli("inspect", path)
    assert done.exit_code == 2, done.stderr
    assert "layer._extra_state" in done.stderr and "posix.system" in done.stderr, done.stderr


@pytest.mark.parametrize("limit", [1, 2047, 2048, 4097, 1 << 20])
def test_the_first_bytes_of_a_state_dict_view_are_those_of_its_values(tmp_path: Path, limit: int) -> None:
    """`_tensor_bytes(..., limit)` of a column slice gives the first `limit` bytes of its C-order values."""
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.checkpoint.reader import _tensor_bytes

    base = torch.randint(0, 255, (600, 4096), dtype=torch.uint8, generator=torch.Generator().manual_seed(41))
    torch.save({"v": base[:, 5:2053]}, tmp_path / "v.pt")
    checkpoint = open_checkpoint(tmp_path / "v.pt")
    expected = base[:, 5:2053].contiguous().numpy().tobytes()
    assert _tensor_bytes(checkpoint, checkpoint.tensor_info("v"), limit) == expected[:limit]
    assert _tensor_bytes(checkpoint, checkpoint.tensor_info("v")) == expected


# --- 2. a byte copy whose temporary output is cut short while it is compared ---------------------------------------

# Cuts the output the comparing thread compares to 4,096 bytes while it compares its first chunk (after the map of
# that chunk was made, where it was mapped), once the writer has copied everything and waits for the comparisons
# (`finish`): nothing writes to the output meanwhile (a copy past the cut would make the rest a hole of zeros, which
# differ from the source), so the next chunk read is the one past the new end.
_CUT_THE_OUTPUT_WHILE_COMPARED = """
import os, threading
from weightdoctor.writers import byte_copy
outputs = []
finishing = threading.Event()
real_init = byte_copy.RangeComparer.__init__
def init(self, output, **kwargs):
    outputs.append(output)
    real_init(self, output, **kwargs)
byte_copy.RangeComparer.__init__ = init
real_finish = byte_copy.RangeComparer.finish
def finish(self):
    finishing.set()
    return real_finish(self)
byte_copy.RangeComparer.finish = finish
real_memcmp = byte_copy._MEMCMP
def memcmp(a, b, count):
    if outputs and count >= 1 << 20 and os.path.getsize(outputs[-1]) > 4096:
        finishing.wait(60)
        os.truncate(outputs[-1], 4096)
    return real_memcmp(a, b, count)
byte_copy._MEMCMP = memcmp
import sys
from weightdoctor.entry import main
sys.argv[0] = "weightdoctor"
main()
"""


@pytest.mark.parametrize("command", [
    ["convert", "{src}", "-o", "{tmp}/out.safetensors"], ["convert", "{src}", "-o", "{tmp}/out.bin", "--to", "bin"],
    ["shard", "{src}", "-o", "{tmp}/sharded", "--max", "40MB"],
], ids=["convert", "convert-to-bin", "shard"])
def test_a_byte_copy_whose_output_is_cut_short_while_compared_is_said_not_a_bus_error(
        tmp_path: Path, command: list[str]) -> None:
    generator = torch.Generator().manual_seed(41)
    path = tmp_path / "src.safetensors"
    save_file({f"layer.{i}.weight": torch.randn(2048, 2048, generator=generator) for i in range(2)}, str(path))
    size = path.stat().st_size
    done = subprocess.run([sys.executable, "-c", _CUT_THE_OUTPUT_WHILE_COMPARED,
                           *[w.format(src=path, tmp=tmp_path) for w in command]], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # -7 (135 in a shell) was SIGBUS
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "'layer.0.weight' (at byte 4,096 now): cut short by another process while it was compared" in lines[0], \
        lines[0]
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors"]  # no output, no temporary
    assert path.stat().st_size == size


def test_a_byte_copy_compares_large_tensors_a_chunk_at_a_time(tmp_path: Path) -> None:
    """Tensors of several chunks (8 MiB each, the last a part) are compared and their copy equals the source."""
    generator = torch.Generator().manual_seed(42)
    tensors = {"big": torch.randn(5_000_000, generator=generator), "small": torch.randn(10, generator=generator)}
    save_file(tensors, str(tmp_path / "src.safetensors"))
    done = run_cli("convert", tmp_path / "src.safetensors", "-o", tmp_path / "out.safetensors", "--json")
    assert done.exit_code == 0, done.stderr
    assert '"tensors_verified": 2' in done.stdout and '"method": "copy"' in done.stdout, done.stdout
    written = load_file(str(tmp_path / "out.safetensors"))
    assert all(torch.equal(written[name], tensors[name]) for name in tensors)
    done = run_cli("convert", tmp_path / "src.safetensors", "-o", tmp_path / "out.bin", "--to", "bin")
    assert done.exit_code == 0, done.stderr
    loaded = torch.load(tmp_path / "out.bin", weights_only=True)
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)


# --- 3. tied names of a torch zip the system will not map whole -----------------------------------------------------

# The system refuses a private map of the whole file (ENOMEM, as Linux's overcommit rule refuses one larger than RAM
# and swap): each view then maps the bytes it reaches.
_NO_WHOLE_MAP = """
import errno, mmap
from weightdoctor.checkpoint import pickle_static
real_mmap = mmap.mmap
class refusing:
    def __new__(cls, fileno, length, *args, **kwargs):
        if length == 0:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return real_mmap(fileno, length, *args, **kwargs)
pickle_static.mmap.mmap = refusing
import sys
from weightdoctor.entry import main
sys.argv[0] = "weightdoctor"
main()
"""


def _tied(path: Path) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(41)
    embedding = torch.randn(50, 16, generator=generator)
    fused = torch.randn(40, 30, generator=generator)
    tensors = {"embed.weight": embedding, "lm_head.weight": embedding, "q": fused[:20], "k": fused[20:]}
    torch.save(tensors, path)
    return tensors


@pytest.mark.parametrize("mapped_by_torch", [False, True], ids=["torch-free", "torch-mapped"])
def test_tied_names_not_mapped_whole_are_one_tensor_to_convert_as_to_inspect(tmp_path: Path,
                                                                              mapped_by_torch: bool) -> None:
    path = tmp_path / "src.bin"
    tensors = _tied(path)
    if mapped_by_torch:
        from tests.hostile.test_redteam36 import _read_by_torch

        _read_by_torch(path, tensors)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", _NO_WHOLE_MAP, *argv], cwd=tmp_path, text=True,
                              capture_output=True, timeout=300, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})

    inspected = run("inspect", str(path))
    assert inspected.returncode == 0, inspected.stderr
    assert "embed.weight ≡ lm_head.weight" in inspected.stdout, inspected.stdout
    done = run("convert", str(path), "-o", str(tmp_path / "out.safetensors"))
    assert done.returncode == 0, done.stderr
    assert "embed.weight, lm_head.weight share storage but are different views" not in done.stderr, done.stderr
    assert "q, k share storage but are different views" in done.stderr or \
        "k, q share storage but are different views" in done.stderr, done.stderr
    written = load_file(str(tmp_path / "out.safetensors"))
    assert sorted(written) == ["embed.weight", "k", "q"]  # lm_head.weight was written too, a copy of its own
    assert all(torch.equal(written[name], tensors[name]) for name in written)


def test_the_name_kept_of_tied_names_is_the_first_not_declared_tied(tmp_path: Path) -> None:
    """`choose_aliases` keeps what huggingface_hub's `_remove_duplicate_names` kept: the first name in sorted order
    that the model does not declare tied, else the first; the view need not cover its storage."""
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.rewrite import choose_aliases

    storage = torch.arange(100, dtype=torch.float32)
    whole = torch.arange(8, dtype=torch.float32)
    torch.save({"b.weight": storage[:50], "a.weight": storage[:50], "c.weight": storage[:50], "d": storage[50:],
                "x": whole, "y": whole}, tmp_path / "t.bin")
    checkpoint = open_checkpoint(tmp_path / "t.bin")
    dropped, copies = choose_aliases(checkpoint, [r"a\.weight"])
    assert dropped == {"a.weight": "b.weight", "c.weight": "b.weight", "y": "x"}
    assert copies == [["a.weight", "b.weight", "c.weight", "d"]]
    assert choose_aliases(checkpoint, [r"\.weight", "x", "y"])[0] == {"b.weight": "a.weight", "c.weight": "a.weight",
                                                                        "y": "x"}


# --- 4. a torch zip changed before check-dtype --sample reads it ----------------------------------------------------

def test_a_torch_zip_changed_before_its_sample_is_read_says_its_records_not_a_header(tmp_path: Path) -> None:
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.errors import CorruptCheckpoint

    path = tmp_path / "w.bin"
    torch.save({"w": torch.randn(64, 64, generator=torch.Generator().manual_seed(41))}, path)
    checkpoint = open_checkpoint(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched since its records were read
    with pytest.raises(CorruptCheckpoint) as raised:
        checkpoint.load_values("w", torch.tensor([0, 5, 4095]))
    assert str(raised.value).startswith("the file changed since its zip records were read (size or modification "
                                        "time); reading tensor 'w' from it"), raised.value
    assert raised.value.path == str(path)


def test_a_safetensors_file_changed_before_its_sample_is_read_still_says_its_header(tmp_path: Path) -> None:
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.errors import CorruptCheckpoint

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(64, 64, generator=torch.Generator().manual_seed(41))}, str(path))
    checkpoint = open_checkpoint(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(CorruptCheckpoint, match="^the file changed since its header was read"):
        checkpoint.load_values("w", torch.tensor([0, 5, 4095]))



# Touches the file named by TOUCH (its modification time one second on) right before the reader reads a sample.
_TOUCH_BEFORE_THE_SAMPLE = """
import os
from weightdoctor.checkpoint import reader
real = reader.Checkpoint.load_values
def load_values(self, *args, **kwargs):
    stat = os.stat(os.environ["TOUCH"])
    os.utime(os.environ["TOUCH"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    return real(self, *args, **kwargs)
reader.Checkpoint.load_values = load_values
import sys
from weightdoctor.entry import main
sys.argv[0] = "weightdoctor"
main()
"""


def test_check_dtype_sample_of_a_torch_zip_touched_meanwhile_names_its_records(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    torch.save({"w": torch.randn(256, 256, generator=torch.Generator().manual_seed(41))}, path)
    done = subprocess.run([sys.executable, "-c", _TOUCH_BEFORE_THE_SAMPLE, "check-dtype", str(path), "--sample",
                           "100"], cwd=tmp_path, text=True, capture_output=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TOUCH": str(path)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: {path}: the file changed since its zip records were read (size or "
                                   "modification time); reading tensor 'w' from it could mix old and new contents"), \
        done.stderr


# --- 5. findings of the fuzz round (scripts/mutation_fuzz.py --formats gguf,quant,llama2c,int4,reparam,stmeta) ------

def _plain_record_over_a_quantized_storage(path: Path) -> Path:
    """torch.save of a qint8 tensor `q` and an int64 scalar `z`, `z`'s storage key then set to `q`'s (the fuzzer's
    mutant of a torch.ao state dict did so to a zero_point): torch.load rebuilds `z` as a plain tensor over the
    QInt8Storage, a qint8 tensor with no quantizer."""
    import pickletools
    import zipfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that quantize_per_tensor is deprecated (once a process)
        quantized = torch.quantize_per_tensor(torch.randn(4, 4, generator=torch.Generator().manual_seed(41)), 0.1,
                                              0, torch.qint8)
    source = path.with_name("source.pt")
    torch.save({"q": quantized, "z": torch.zeros((), dtype=torch.int64)}, source)
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in archive.infolist():
            data = archive.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                keys = [(arg, position) for op, arg, position in pickletools.genops(data)
                        if op.name == "BINUNICODE" and arg in ("0", "1")]
                assert [key for key, _ in keys] == ["0", "1"], keys
                at = keys[1][1] + 5  # the opcode and its 4-byte length, then "1"
                data = data[:at] + b"0" + data[at + 1:]
            out.writestr(info.filename, data)
    source.unlink()
    return path


@pytest.mark.parametrize("command", [
    ["inspect", "{src}"], ["inspect", "{src}", "--stats"], ["check-dtype", "{src}"],
    ["plan-devices", "{src}", "--gpu", "1GB"], ["convert", "{src}", "-o", "{tmp}/out.safetensors"],
    ["diff-keys", "{src}", "{src}", "--values"],
], ids=["inspect", "inspect-stats", "check-dtype", "plan-devices", "convert", "diff-keys-values"])
def test_a_plain_record_over_a_quantized_storage_is_refused_in_one_line(tmp_path: Path,
                                                                        command: list[str]) -> None:
    """Every command said "unexpected RuntimeError: false INTERNAL ASSERT FAILED at .../Quantizer.cpp:447, please
    report a bug to PyTorch. cannot call qscheme on UnknownQuantizer"."""
    path = _plain_record_over_a_quantized_storage(tmp_path / "q.pt")
    assert torch.load(path, weights_only=True)["z"].dtype == torch.qint8  # what torch makes of it
    done = run_cli(*[word.format(src=path, tmp=tmp_path) for word in command])
    assert done.exit_code == 2, done.stderr
    assert done.stderr.strip() == (f"error: {path}: tensor 'z' has the quantized dtype qint8 but no scale or zero "
                                   "point: its record is a plain tensor's over a storage of a quantized type "
                                   "(torch.save never writes one; the file was edited or is damaged)"), done.stderr
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.pt"]


def _index_of(folder: Path, weight_map: dict[str, str]) -> Path:
    import json

    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("beside_safetensors", [False, True], ids=["gguf-alone", "gguf-beside-safetensors"])
@pytest.mark.parametrize("command", [
    ["inspect", "{src}"], ["check-dtype", "{src}"], ["diff-keys", "{src}", "{src}", "--values"],
    ["plan-devices", "{src}", "--gpu", "1GB"], ["convert", "{src}", "-o", "{tmp}/out.safetensors"],
], ids=["inspect", "check-dtype", "diff-keys-values", "plan-devices", "convert"])
def test_an_index_naming_a_gguf_shard_is_refused_as_one(tmp_path: Path, beside_safetensors: bool,
                                                        command: list[str]) -> None:
    """An index of a GGUF file was read as "gguf (sharded)" (inspect, check-dtype, diff-keys exit 0; convert refused
    the GGUF); one named like a safetensors shard beside a real one had its tensor said to be "in no shard"."""
    from fixtures.gguf_files import tiny_llama_gguf

    folder = tmp_path / "model"
    folder.mkdir()
    if beside_safetensors:
        save_file({"a.weight": torch.zeros(4, 4)}, str(folder / "model-00001-of-00002.safetensors"))
        tiny_llama_gguf(folder / "model-00002-of-00002.safetensors")
        shard = "model-00002-of-00002.safetensors"
        _index_of(folder, {"a.weight": "model-00001-of-00002.safetensors", "b.weight": shard})
    else:
        shard = "model.gguf"
        tiny_llama_gguf(folder / shard)
        _index_of(folder, {"token_embd.weight": shard})
    done = run_cli(*[word.format(src=folder, tmp=tmp_path) for word in command])
    assert done.exit_code == 2, (done.exit_code, done.stderr)
    assert done.stderr.strip() == (
        f"error: {folder / 'model.safetensors.index.json'}: shard {shard!r} named by the index is a GGUF file "
        "(llama.cpp): from_pretrained opens an index's shards with safetensors or torch.load, neither of which reads "
        "it; a GGUF file is read alone (weightdoctor inspect FILE.gguf)"), done.stderr
    assert not (tmp_path / "out.safetensors").exists()


# --- the fuzzer's new seeds and GGUF mutator ------------------------------------------------------------------------

def test_the_gguf_mutator_walks_the_header_as_the_writer_laid_it_out(fuzz: ModuleType, tmp_path: Path) -> None:
    import random
    import struct

    from fixtures.gguf_files import STRING, UINT32, Tensor, write_gguf

    path = write_gguf(tmp_path / "g.gguf", {"general.architecture": (STRING, "llama"), "n": (UINT32, 7)},
                      [Tensor("a", [32, 4], "Q8_0"), Tensor("b", [5], "F32")])
    raw = path.read_bytes()
    fields = fuzz._gguf_fields(raw)
    read = {what: [] for _, _, what in fields}
    for offset, size, what in fields:
        read[what].append(int.from_bytes(raw[offset:offset + size], "little"))
    assert read["tensor count"] == [2] and read["kv count"] == [2]
    assert read["key length"] == [len("general.architecture"), 1] and read["value type"] == [STRING, UINT32]
    assert read["tensor name length"] == [1, 1] and read["n_dims"] == [2, 1]
    assert read["dimension"] == [32, 4, 5] and read["ggml type"] == [8, 0] and read["tensor offset"] == [0, 160]
    data, said = fuzz.mutate_gguf(raw, random.Random(41))
    assert len(data) == len(raw) and data != raw and said.startswith("gguf "), said
    assert struct.unpack_from("<4s", data)[0] == b"GGUF"
    assert fuzz.mutate_gguf(b"not a gguf", random.Random(0)) is None


def test_seeded_mutants_of_the_recent_formats_end_in_a_report_or_one_error_line(
        fuzz: ModuleType, tmp_path: Path) -> None:
    """Two seeded mutants of each of red team 41's seeds, every command on each: no finding."""
    import random
    import signal

    def on_alarm(signum: int, frame: object) -> None:
        raise fuzz.Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        seeds = fuzz.build_recent_seeds(tmp_path / "seeds")
        assert sorted(seeds) == sorted(fuzz.RECENT_FORMATS)
        # plan-devices' first run imports transformers and accelerate (20 s on two busy cores): the fuzzer runs each
        # command on the unmutated seed first, held to its own bounds (red team 42), not beforehand unchecked.
        fuzzer = fuzz.Fuzzer(tmp_path / "out", seeds)
        for fmt in fuzz.RECENT_FORMATS:
            for n in range(2):
                fuzzer.run_mutant(fmt, random.Random(f"41-{fmt}-{n}"), tmp_path / "work")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert fuzzer.findings == {}, list(fuzzer.findings.values())
    assert dict(fuzzer.counts) == dict.fromkeys(fuzz.RECENT_FORMATS, 2)
