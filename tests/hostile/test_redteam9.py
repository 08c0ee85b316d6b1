"""The reader's parsers, found by the ninth red-team round: torch zip archives, legacy torch pickles and the
pickles inside them, built by hand where torch.save would never write them. Each must exit 0 with a truthful
report or 2 with one line naming the file and what is wrong; never a traceback, a hang or gigabytes of memory."""

from __future__ import annotations

import io
import pickle
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from tests.helpers import REPO_ROOT, run_cli


def _one_line_exit_2(*args: str | Path, expected: str) -> str:
    result = run_cli(*map(str, args))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout[:300], result.stderr)
    assert len(lines) == 1 and expected in lines[0] and "unexpected" not in lines[0], result.stderr
    assert not result.stdout.strip()
    return lines[0]


def _torch_load_refuses(path: Path, error: type[Exception] = RuntimeError, **kwargs: object) -> str:
    """torch.load(weights_only=True)'s own refusal of `path` (the file must be refused: the oracle of the test)."""
    try:
        torch.load(path, weights_only=True, **kwargs)
    except error as exc:
        return str(exc)
    raise AssertionError(f"torch.load read {path.name}")


def _records(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(name, archive.read(name)) for name in archive.namelist()]


def _rewrite(path: Path, records: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in records:
            archive.writestr(name, data)
    return path


def test_a_memo_index_of_hundreds_of_millions_is_refused_before_it_is_allocated(tmp_path: Path) -> None:
    """A LONG_BINPUT of index 3e8 in a 400-byte data.pkl: the torch-free reader's C unpickler grew its memo array to
    6e8 entries and filled it, 4.6 GB of memory for `inspect`, before reading a single tensor (2**32 - 1 asked for
    68 GB). No pickler numbers a memo entry past the bytes before it: the scanner says so and nothing is unpickled.
    torch.load(weights_only=True), whose unpickler keeps a dict, reads the file; pickle.load would not."""
    source = tmp_path / "plain.bin"
    torch.save({"w": torch.arange(4.0)}, source)
    records = _records(source)
    name, data = next((n, d) for n, d in records if n.endswith("/data.pkl"))
    first_put = data.index(b"q\x00")  # the BINPUT after the pickle's first global
    crafted = data[:first_put] + b"r" + struct.pack("<I", 300_000_000) + data[first_put:]
    path = _rewrite(tmp_path / "memo.bin", [(n, crafted if n == name else d) for n, d in records])
    code = (
        "import resource, sys\n"
        "from weightdoctor.cli import app\n"
        "try:\n"
        "    app(['inspect', sys.argv[1], '--json'])\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)))
    words = proc.stdout.split()
    assert words[:2] == ["exit", "2"], (proc.stdout, proc.stderr[-2000:])
    assert int(words[2]) < 1000  # megabytes
    assert "memo index 300,000,000" in proc.stderr and "suspicious" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert torch.load(path, weights_only=True)["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_memo_indexes_of_real_pickles_are_not_flagged(tmp_path: Path) -> None:
    """The bound is no pickler's numbering: every protocol's own memo, and a plain pickle's, still pass."""
    from weightdoctor.security import scan_bytes

    state = {f"layer.{i}.weight": torch.ones(2) for i in range(300)}
    for protocol in range(6):
        buffer = io.BytesIO()
        torch.save(state, buffer, pickle_protocol=protocol, _use_new_zipfile_serialization=False)
        assert scan_bytes(buffer.getvalue()).verdict == "safe", protocol
        assert scan_bytes(pickle.dumps([[i] for i in range(1000)], protocol=protocol)).verdict == "safe"


def _with_comment(path: Path, comment: bytes, out: Path) -> Path:
    """`path`, a zip, with `comment` as its end record's comment (bytes no zip writer checks)."""
    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    out.write_bytes(data[:end + 20] + struct.pack("<H", len(comment)) + comment)
    return out


def test_a_second_archive_in_the_zip_comment_is_not_read_in_place_of_the_first(tmp_path: Path) -> None:
    """torch.save's archive of two tensors, its comment holding another torch.save archive: Python's zipfile takes
    the last end record, the hidden archive's, and moves its offsets to where that archive lies; miniz takes them as
    written and refuses the file. inspect listed the hidden archive's one tensor, exit 0, as the checkpoint's."""
    torch.save({"a": torch.arange(4.0), "b": torch.ones(2, 3)}, tmp_path / "outer.bin")
    torch.save({"hidden": torch.zeros(3)}, tmp_path / "hidden.bin")
    path = _with_comment(tmp_path / "outer.bin", (tmp_path / "hidden.bin").read_bytes(), tmp_path / "comment.bin")
    joined = tmp_path / "joined.bin"
    joined.write_bytes((tmp_path / "outer.bin").read_bytes() + (tmp_path / "hidden.bin").read_bytes())
    for crafted in (path, joined):
        with zipfile.ZipFile(crafted) as archive:
            assert any(name.startswith("hidden/") for name in archive.namelist())  # what zipfile shows
        refusal = _torch_load_refuses(crafted)
        assert "invalid header or archive is corrupted" in refusal
        line = _one_line_exit_2("inspect", crafted, "--json", expected=crafted.name)
        assert "different contents to different readers" in line and "torch.load refuses the file" in line, line
    # A comment of text, as zip tools write one, changes nothing.
    plain = _with_comment(tmp_path / "outer.bin", b"written by hand", tmp_path / "text-comment.bin")
    result = run_cli("inspect", str(plain), "--json")
    assert result.exit_code == 0, result.stderr
    assert '"num_tensors": 2' in result.stdout


class _Storage:
    """Pickled as the persistent id of a storage of `count` elements of `kind` (a torch storage type) under `key`."""

    def __init__(self, key: str, count: int, kind: type = torch.FloatStorage) -> None:
        self.key, self.count, self.kind = key, count, kind


class _Tensor:
    """Pickled as torch's `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.args = (storage, offset, size, stride, False, __import__("collections").OrderedDict())

    def __reduce__(self) -> tuple:
        return (torch._utils._rebuild_tensor_v2, self.args)


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> tuple | None:
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.count, None)
        return None


class _ZipPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> tuple | None:
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.count)
        return None


def _zip(path: Path, state: dict[str, _Tensor], records: dict[str, bytes]) -> Path:
    """A torch zip archive of `state` (the records torch.save writes around data.pkl, and `records` as data/)."""
    buffer = io.BytesIO()
    _ZipPickler(buffer, protocol=2).dump(state)
    return _rewrite(path, [("archive/data.pkl", buffer.getvalue()), ("archive/byteorder", b"little"),
                           *((f"archive/data/{key}", data) for key, data in records.items()),
                           ("archive/version", b"3\n")])


def _legacy(path: Path, tensor: _Tensor | dict[str, _Tensor], records: dict[str, bytes]) -> Path:
    """A legacy (non-zip) torch file, as torch.save(_use_new_zipfile_serialization=False) lays it out: magic number,
    protocol, system info, the data pickle, the storage keys, then each record as its element count and bytes."""
    buffer = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                 "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(value, buffer, protocol=2)
    _LegacyPickler(buffer, protocol=2).dump(tensor if isinstance(tensor, dict) else {"w": tensor})
    pickle.dump(list(records), buffer, protocol=2)
    for data in records.values():
        buffer.write(struct.pack("<q", len(data) // 4) + data)
    path.write_bytes(buffer.getvalue())
    return path


def test_a_legacy_storage_record_of_another_size_than_its_pickle_declares(tmp_path: Path) -> None:
    """A legacy file whose pickle declares a storage of 2**33 floats over a record of four: torch.load tried to
    allocate 32 GB and the line read "DefaultCPUAllocator: can't allocate memory" (a damaged file, not a small
    machine); declaring two, the line was torch's unfilled "storage has wrong byte size: expected %ld got %ld168".
    The scan compares each record with the count its pickle declares and names both."""
    values = struct.pack("<4f", 1, 2, 3, 4)
    good = _legacy(tmp_path / "good.bin", _Tensor(_Storage("0", 4), 0, (4,), (1,)), {"0": values})
    assert torch.load(good, weights_only=True)["w"].tolist() == [1, 2, 3, 4]
    result = run_cli("inspect", str(good), "--json")
    assert result.exit_code == 0 and '"format": "pytorch-legacy"' in result.stdout, result.stderr
    for declared in (2**33, 2):
        path = _legacy(tmp_path / f"declares-{declared}.bin", _Tensor(_Storage("0", declared), 0, (2,), (1,)),
                       {"0": values})
        refusal = _torch_load_refuses(path)
        assert "allocate" in refusal or "%ld" in refusal
        line = _one_line_exit_2("inspect", path, expected=path.name)
        assert f"storage '0' holds 4 elements, but the pickle declares {declared:,}" in line, line
        assert "torch.load refuses it" in line and "%ld" not in line and "allocate" not in line, line


def test_a_legacy_view_past_its_storage_is_said_in_words(tmp_path: Path) -> None:
    """A view of four elements from offset 10 of a four-element storage: torch's legacy loader grows the storage
    to fit, then finds the record too short, and its message keeps its unfilled format (`expected %ld got %ld`)."""
    path = _legacy(tmp_path / "past.bin", _Tensor(_Storage("0", 4), 10, (4,), (1,)), {"0": bytes(16)})
    line = _one_line_exit_2("inspect", path, expected=path.name)
    assert "%ld" not in line and "view reaches past the end of its storage" in line, line


def test_a_storage_referenced_again_under_another_type_is_read_as_torch_reads_it(tmp_path: Path) -> None:
    """torch.load types a storage at its first reference and gives later ones that storage as it is. A second
    reference as a DoubleStorage of two elements was read by the torch-free reader as two float64 values over the
    first's four floats (mean 257.0, where torch gives float32 [1, 2], mean 1.5); one declaring another size was
    refused as a damaged archive "torch.load refuses", which torch.load reads; the reverse order, which torch
    refuses (a float32 view of four elements over a float64 storage of two), was listed with exit 0."""
    values = struct.pack("<4f", 1, 2, 3, 4)
    first = _Tensor(_Storage("0", 4), 0, (4,), (1,))
    # The last one has its size as a list, which the torch-free reader leaves to torch.load: the record sizes were
    # then compared for every reference alike.
    for second in (_Tensor(_Storage("0", 2, torch.DoubleStorage), 0, (2,), (1,)),
                   _Tensor(_Storage("0", 2), 0, (2,), (1,)), _Tensor(_Storage("0", 2), 0, [2], [1])):  # type: ignore[arg-type]
        path = _zip(tmp_path / "shared.bin", {"a": first, "b": second}, {"0": values})
        loaded = torch.load(path, weights_only=True)
        assert loaded["b"].dtype == torch.float32 and loaded["b"].tolist() == [1.0, 2.0]
        result = run_cli("inspect", str(path), "--stats", "--json")
        assert result.exit_code == 0, result.stderr
        tensors = {t["name"]: t for t in __import__("json").loads(result.stdout)["tensors"]}
        assert (tensors["b"]["dtype"], tensors["b"]["shape"]) == ("float32", [2])
        assert (tensors["b"]["stats"]["mean"], tensors["a"]["stats"]["mean"]) == (1.5, 2.5)
    reverse = _zip(tmp_path / "reverse.bin", {"b": _Tensor(_Storage("0", 2, torch.DoubleStorage), 0, (2,), (1,)),
                                              "a": first}, {"0": values})
    refusal = _torch_load_refuses(reverse)
    assert "not resizable" in refusal
    line = _one_line_exit_2("inspect", reverse, expected=reverse.name)
    assert "not resizable" in line, line
    # The legacy format's scan walked the records at the element size of the last reference: 8 bytes each for
    # four floats ran past the end of the file, and a file torch.load reads was refused as suspicious.
    legacy = _legacy(tmp_path / "legacy.bin", {"a": first, "b": _Tensor(_Storage("0", 2, torch.DoubleStorage), 0,
                                                                         (2,), (1,))}, {"0": values})
    assert torch.load(legacy, weights_only=True)["b"].tolist() == [1.0, 2.0]
    result = run_cli("inspect", str(legacy), "--json")
    assert result.exit_code == 0, result.stderr
    assert [t["dtype"] for t in __import__("json").loads(result.stdout)["tensors"]] == ["float32", "float32"]


def test_an_index_naming_a_shard_with_a_trailing_slash(tmp_path: Path) -> None:
    """`a.safetensors/` was read as `a.safetensors` (normpath drops the slash), exit 0, where transformers joins
    the name as written and safetensors cannot open it; `./a.safetensors` beside `a.safetensors` is still one
    shard, as transformers opens the same file under both."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    save_file({"a.weight": torch.ones(2, 2), "b.weight": torch.zeros(3)}, str(tmp_path / "a.safetensors"))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {},
                                 "weight_map": {"a.weight": "./a.safetensors", "b.weight": "a.safetensors/"}}))
    try:
        safe_open(f"{tmp_path}/a.safetensors/", "pt")  # as os.path.join(folder, shard) spells it
    except OSError:
        pass
    else:
        raise AssertionError("safetensors opened a name ending in '/'")
    line = _one_line_exit_2("inspect", index, expected="model.safetensors.index.json")
    assert "'a.safetensors/'" in line and "'b.weight'" in line and "ends in '/'" in line, line
    index.write_text(json.dumps({"metadata": {},
                                 "weight_map": {"a.weight": "./a.safetensors", "b.weight": "a.safetensors"}}))
    result = run_cli("inspect", str(index), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [f["path"] for f in report["files"] if f["role"] == "weights"] == ["a.safetensors"]
    assert report["num_tensors"] == 2 and report["warnings"] == []


def _flag(path: Path, member: str, out: Path, bit: int = 0x1) -> Path:
    """`path` with flag `bit` (0x1: encrypted) set in `member`'s local header and central directory entry."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, flags_at, name_length_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        at = data.find(signature)
        while at >= 0:
            (length,) = struct.unpack_from("<H", data, at + name_length_at)
            if bytes(data[at + name_at:at + name_at + length]) == name:
                struct.pack_into("<H", data, at + flags_at, struct.unpack_from("<H", data, at + flags_at)[0] | bit)
            at = data.find(signature, at + 4)
    out.write_bytes(bytes(data))
    return out


def test_a_storage_record_flagged_as_encrypted_is_not_read_as_values(tmp_path: Path) -> None:
    """A record whose general-purpose flag says encrypted: torch.load refuses the file, mmap or not ("unsupported
    encryption"), and zipfile asks for a password; the torch-free reader, which reads records in place, took its
    bytes as the tensor's values and printed their statistics, exit 0."""
    torch.save({"a": torch.arange(4.0), "b": torch.ones(2, 3)}, tmp_path / "plain.bin")
    # Strong encryption, compressed patch data and a masked local header are refused by miniz as well.
    for bit, said in ((0x1, "unsupported encryption"), (0x40, "unsupported encryption"),
                      (0x20, "unsupported feature"), (0x2000, "unsupported encryption")):
        for member in ("plain/data/0", "plain/data.pkl"):
            path = _flag(tmp_path / "plain.bin", member, tmp_path / "flagged.bin", bit)
            for mmap in (False, True):
                refusal = _torch_load_refuses(path, mmap=mmap)
                assert said in refusal
            for command in (["inspect"], ["inspect", "--stats"]):
                line = _one_line_exit_2(*command, path, expected=path.name)
                assert said in line, (bit, member, line)


def test_a_config_size_past_64_bits_is_said_without_torchs_source_frames(tmp_path: Path) -> None:
    """`vocab_size: 10**30` in config.json (json reads any integer): building the model fails inside torch, whose
    message goes on with the C++ frame it came from; the warning ended in the middle of a source path of torch's
    build machine ("Exception raised from THPUtils_unpackLong at /__w/pytorch/pytorch/torch/csrc/utils/python_nu")."""
    import json

    from safetensors.torch import save_file

    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"transformer.wte.weight": torch.ones(100, 64)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 10**30, "n_positions": 64,
        "architectures": ["GPT2LMHeadModel"]}))
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    built = [w for w in warnings if "cannot build the model from config.json" in w]
    assert len(built) == 1 and "Overflow" in built[0], warnings
    assert "Exception raised from" not in built[0] and "/__w/" not in built[0], built[0]


def test_a_pickle_walked_from_a_file_does_not_ask_the_file_its_position_at_every_opcode(tmp_path: Path) -> None:
    """Legacy files are walked from the file (their pickles' ends are not known before): the reader asked the file
    for its position at every opcode and every read, a third of the scan; a legacy file of 200,000 storages took
    23 s to scan (14.8 s of CPU against 8.6 s now), more than torch.load itself."""
    from weightdoctor.security.opcodes import walk_pickle

    path = tmp_path / "legacy.bin"
    torch.save({f"layer.{i}": torch.zeros(1) for i in range(2000)}, path, _use_new_zipfile_serialization=False)
    asked = {"tell": 0}

    class Counting(io.BufferedReader):
        def tell(self) -> int:
            asked["tell"] += 1
            return super().tell()

    with open(path, "rb", buffering=0) as raw:
        handle = Counting(raw)
        walks = [walk_pickle(handle, path.stat().st_size) for _ in range(4)]
    assert [w.error for w in walks] == [None] * 4 and len(walks[3].persistent_ids) == 2000
    assert asked["tell"] < 100, asked


def test_a_byteorder_record_torch_does_not_know_is_not_read_as_little(tmp_path: Path) -> None:
    """torch.load compares the byteorder record with "little" and "big" as they are; "little\\n" (as `echo` writes
    it) and " little" were stripped and read as little-endian by the torch-free reader, exit 0, for a file torch.load
    refuses ("Unknown endianness type"). "little" itself still reads."""
    source = tmp_path / "plain.bin"
    torch.save({"w": torch.arange(4.0)}, source)
    records = _records(source)
    for order in (b"little\n", b" little", b"little"):
        path = _rewrite(tmp_path / "order.bin", [(n, order if n.endswith("/byteorder") else d) for n, d in records])
        if order == b"little":
            result = run_cli("inspect", str(path), "--json")
            assert result.exit_code == 0 and '"num_tensors": 1' in result.stdout, result.stderr
            continue
        refusal = _torch_load_refuses(path, ValueError)
        assert "Unknown endianness type" in refusal
        line = _one_line_exit_2("inspect", path, expected=path.name)
        assert "Unknown endianness type" in line, line


def test_a_kv_cache_of_a_config_asking_for_1e30_layers_is_refused_at_once(tmp_path: Path) -> None:
    """`num_hidden_layers: 10**30`: plan-devices plans from the tensors (the model is not built past 1,024 layers),
    but --kv-cache counted the layers one by one and never ended (killed after 25 s, its list of layers growing)."""
    import json
    import time

    from safetensors.torch import save_file

    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"model.embed_tokens.weight": torch.ones(100, 64)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 10**30, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
        "max_position_embeddings": 64}))
    # Bounded, so that a regression fails in a minute and within 3 GB instead of filling the machine's memory: 3 GB
    # of address space beyond what importing torch maps (a CUDA build of torch 2.14 maps 3.2 GB on import, the CPU
    # build 0.6 GB: under a cap of 3 GB from the start, numpy's OpenBLAS failed to allocate, exit 1).
    code = ("import resource, sys\nimport torch\nfrom weightdoctor.cli import app\n"
            "held = next(int(s.split()[1]) * 1024 for s in open('/proc/self/status') if s.startswith('VmSize:'))\n"
            "resource.setrlimit(resource.RLIMIT_AS, (held + (3 << 30), held + (3 << 30)))\n"
            "app(['plan-devices', sys.argv[1], '--gpu', '1GB', '--kv-cache', '--json'])\n")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert time.monotonic() - started < 60
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert f"asks for {10**30:,} decoder layers" in lines[0] and "config.json" in lines[0], lines
