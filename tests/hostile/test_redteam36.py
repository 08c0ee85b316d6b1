"""Red team 36: hostile and broken torch zip archives, pickles, configs and indexes that earlier rounds left aside.

What held (measured, not all pinned here): a data.pkl or every record deflated, a ZIP64 archive (zipfile's
force_zip64), records with data descriptors, records under a deeper or a second top folder, a central directory whose
sizes or offsets disagree with the local headers, a local header whose extra field shifts its data; data.pkl of
protocol 5 with NEXT_BUFFER / READONLY_BUFFER / BYTEARRAY8 (of 4 bytes, of 2^40 claimed), persistent ids of 4 and 6
fields, a list, a dict, text PERSID, a nested id, a key of int / bytes / '' / '../data.pkl' / 'x\\0', a location of
cuda:99 / meta / xla:0 / an int (read as torch.load(map_location='cpu') reads them), -1 and 2^62 elements, a storage
type that is a str or torch.Tensor; data.pkl nested 200,000 deep in lists and dicts, DAGs of 2^60 paths through
shared dicts and lists; a genuine TorchScript archive and a torch.export .pt2 (named .pt too); numpy arrays (float,
str, object), scalars and dtypes inside a torch.save state dict, an OrderedDict subclass (refused as unknown); legacy
(pre-1.6) files whose storage sizes are 2^40, 2, -1, cut mid-storage, whose key list names a key twice, an unknown key
or is a dict, with a dangerous pickle after the storages; a 400 MB .safetensors and a torch zip cut short during
inspect --stats by another process (refused in one line; see 2. for the files torch maps); config.json with keys given
twice, NaN / Infinity / -Infinity, 4.0 for an int, 10,000-deep lists and objects, a 5,001-digit int, a 200 MB string
(over the 100 MB limit) and a 50 MB model_type (read; --json echoes it whole, text clips it); index shards named by an
absolute path, `..`, /dev/zero, /proc/self/mem, the index itself, `.`, '', a NUL, a URL, `~`, a FIFO, a backslash path.
The seeded fuzzer (`scripts/mutation_fuzz.py --formats all --structured --seed 36`, 900 s): 569 mutants, 0 findings.

What did not, each fixed here:
1. A storage record written twice, its first copy short: torch.load refuses the file ("record size (4 bytes) does not
   match expected size (64 bytes)"), but the record-size check compared the last copy alone, and the values were read
   through torch.load(mmap=True), which reads the storage's bytes from the short copy on, past its end: inspect
   --stats gave an fp16-overflow of 3.5e33 and convert wrote those bytes as the weights, exit 0. A data.pkl written
   twice (the storage record short, once) skipped the check altogether, with the same outcome. Every copy of a name
   (in any case, as torch's reader finds it), and the storages of each copy of data.pkl, are checked now.
2. A torch zip read through torch.load(mmap=True) (one the torch-free reader leaves to torch: records listed twice,
   ...) cut short between two tensors of convert, convert --dtype, inspect --stats, check-dtype or diff-keys --values:
   its tensors view torch's map of the whole file, and the first page past the new end raised SIGBUS: exit 135, no
   message, a `.wdtmp-` output left behind. Each value is now handed out only while the file is the one mapped.
3. A storage reference pickled as a list or a dict (by LIST / DICT) was said to be a protocol-0 save whose references
   were written as text; it is said to be no tuple now.
4. A data.pkl of a list of ten million references to one dict (20 MB of BINGETs): inspect took 1.5 GB and 26 s, the
   walks for pickles kept in bytes values and for `_extra_state` tensors beside the state dict stacking a pair per
   reference. Values are marked seen when stacked now: 337 MB (the opcode scan, 10 s and most of the rest, is left).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT, one_error_line, peak_rise_mib, run_cli, torch_zip_with_data_pkl

# --- 1. a storage record written twice --------------------------------------------------------------------------


def _written_twice(tmp_path: Path, name: str, layout: str) -> Path:
    """A torch.save archive whose record data/0 is cut to its first 4 bytes and listed twice, whole and short
    ("short-copy-first" / "short-copy-last"), or listed once, short, with data.pkl listed twice ("data-pkl-twice")."""
    torch.manual_seed(36)
    source = tmp_path / f"{name}_source.bin"
    torch.save({"a.weight": torch.randn(4, 4), "b.bias": torch.randn(4)}, source)
    target = tmp_path / f"{name}.bin"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
        records = [(info.filename.replace(f"{name}_source/", f"{name}/"), archive.read(info.filename))
                   for info in archive.infolist()]
        whole = next(data for record, data in records if record.endswith("/data/0"))
        short = (f"{name}/data/0", whole[:4])
        if layout == "short-copy-first":
            records = [short] + records
        elif layout == "short-copy-last":
            records = records + [short]
        else:
            records = [short if record == short[0] else (record, data) for record, data in records] + records[:1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile's "Duplicate name": the point of the file
            for record, data in records:
                out.writestr(record, data)
    source.unlink()
    return target


@pytest.mark.parametrize("layout", ["short-copy-first", "short-copy-last", "data-pkl-twice"])
def test_a_storage_record_written_twice_with_a_short_copy_is_refused_as_torch_load_refuses_it(
        tmp_path: Path, layout: str) -> None:
    path = _written_twice(tmp_path, "twice", layout)
    with pytest.raises(RuntimeError, match="record size"):
        torch.load(path, weights_only=True)  # what the refusal stands for: torch.load reads the short copy
    for args in (["inspect", path], ["inspect", path, "--stats"], ["check-dtype", path],
                 ["convert", path, "-o", tmp_path / "out.safetensors"]):
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.stdout)
        line = one_error_line(result)
        assert line.startswith(f"error: {path}") and "storage record data/0" in line, line
        assert "holds 4 bytes" in line and "64 bytes" in line, line
        assert ("one of 2 records of that name" in line) == (layout != "data-pkl-twice"), line
        assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_storage_record_written_twice_whole_both_times_is_still_read(tmp_path: Path) -> None:
    torch.manual_seed(36)
    tensors = {"a.weight": torch.randn(4, 4), "b.bias": torch.randn(4)}
    source, path = tmp_path / "source.bin", tmp_path / "same.bin"
    torch.save(tensors, source)
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in archive.infolist():
            out.writestr(info.filename, archive.read(info.filename))
        with pytest.warns(UserWarning, match="Duplicate name"):
            out.writestr("source/data/0", archive.read("source/data/0"))
    result = run_cli("convert", path, "-o", tmp_path / "out.safetensors")
    assert result.exit_code == 0, result.stderr
    written = load_file(str(tmp_path / "out.safetensors"))
    assert sorted(written) == sorted(tensors)
    assert all(torch.equal(written[name], tensors[name]) for name in tensors)


# --- 2. a file torch.load(mmap=True) mapped, cut short between two tensors --------------------------------------

# Cuts the file named by CUT_SOURCE to 1,000 bytes just before the second value any command asks the reader for:
# after torch.load(mmap=True) mapped it whole, before the pages of that value are touched.
_CUT_BEFORE_THE_SECOND_VALUE = """
import os
from weightdoctor.checkpoint import reader
asked = [0]
def cutting(real):
    def asking(self, *args, **kwargs):
        asked[0] += 1
        if asked[0] == 2:
            os.truncate(os.environ["CUT_SOURCE"], 1000)
        return real(self, *args, **kwargs)
    return asking
reader.Checkpoint.load_tensor = cutting(reader.Checkpoint.load_tensor)
reader.Checkpoint.pickled_tensor = cutting(reader.Checkpoint.pickled_tensor)
# A convert that casts nothing copies the bytes of each tensor (their places in the file are known since red team 40).
from weightdoctor.writers import byte_copy
byte_copy.copy_range = cutting(byte_copy.copy_range)
import sys
from weightdoctor.entry import main
sys.argv[0] = "weightdoctor"
main()
"""


def _read_by_torch(path: Path, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """`tensors` (six 64 KiB ones unless given) in a torch zip at `path` that the torch-free reader leaves to
    torch.load(mmap=True): two more records whose names differ in case alone (torch's reader finds a name in any
    case)."""
    source = path.with_name("source.bin")
    torch.save(tensors if tensors is not None else {
        f"layer.{i}.weight": torch.full((128, 128), float(i + 1)) for i in range(6)}, source)
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in archive.infolist():
            out.writestr(info.filename, archive.read(info.filename))
        out.writestr("source/notes", b"x")
        out.writestr("source/NOTES", b"y")
    source.unlink()
    return path


@pytest.mark.parametrize("args", [
    ["convert", "{src}", "-o", "out.safetensors"],
    ["convert", "{src}", "-o", "out.safetensors", "--dtype", "fp16"],
    ["convert", "{src}", "-o", "out.bin", "--to", "bin"],
    ["inspect", "{src}", "--stats"],
    ["check-dtype", "{src}"],
    ["diff-keys", "{src}", "{src}", "--values"],
], ids=["convert", "convert-fp16", "convert-to-bin", "inspect-stats", "check-dtype", "diff-keys-values"])
def test_a_file_torch_mapped_cut_short_between_two_tensors_is_said_not_a_bus_error(
        tmp_path: Path, args: list[str]) -> None:
    path = _read_by_torch(tmp_path / "src.bin")
    first = run_cli("inspect", path, "--json")
    assert first.exit_code == 0 and '"layer.5.weight"' in first.stdout, first.stderr  # read whole before the cut
    argv = [arg.format(src=path) for arg in args]
    done = subprocess.run([sys.executable, "-c", _CUT_BEFORE_THE_SECOND_VALUE, *argv], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "CUT_SOURCE": str(path)})
    assert os.path.getsize(path) == 1000  # the cut happened
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), done.stderr
    assert "truncated or changed while" in lines[0] and "1,000" in lines[0], lines[0]  # reading, or copying
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.bin"]  # no output, no temporary


def test_a_file_torch_mapped_and_left_alone_is_still_converted_whole(tmp_path: Path) -> None:
    path = _read_by_torch(tmp_path / "src.bin")
    result = run_cli("convert", path, "-o", tmp_path / "out.safetensors", "--dtype", "fp16")
    assert result.exit_code == 0, result.stderr
    written = load_file(str(tmp_path / "out.safetensors"))
    assert sorted(written) == [f"layer.{i}.weight" for i in range(6)]
    assert all(written[f"layer.{i}.weight"].dtype == torch.float16
               and torch.equal(written[f"layer.{i}.weight"], torch.full((128, 128), float(i + 1), dtype=torch.float16))
               for i in range(6))


# --- 3. a storage reference that is a list or a dict -------------------------------------------------------------

_GENUINE_REFERENCE = (b"(X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05"
                      b"X\x03\x00\x00\x00cpuq\x06K\x06tq\x07Q")


@pytest.mark.parametrize("container, opcode", [("list", b"l"), ("dict", b"d")])
def test_a_storage_reference_pickled_as_a_list_or_dict_is_not_called_a_protocol_0_file(
        tmp_path: Path, container: str, opcode: bytes) -> None:
    """A persistent id built by LIST or DICT (opcodes of protocol 0 and 1, which torch's weights_only loader does not
    implement) was said to be "a torch.save file pickled with protocol 0 ... its storage references were written as
    text": no protocol writes a storage reference as a list or a dict, and the stream said protocol 2."""
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, buffer)
    with zipfile.ZipFile(buffer) as archive:
        genuine = archive.read("archive/data.pkl")
        storage = archive.read("archive/data/0")
    assert _GENUINE_REFERENCE in genuine
    # Its fields without TUPLE / BINPERSID: all five in a list, the first four (two pairs) in a dict.
    fields = _GENUINE_REFERENCE[1:-len(b"K\x06tq\x07Q")] + (b"K\x06" if container == "list" else b"")
    crafted = genuine.replace(_GENUINE_REFERENCE, b"(" + fields + opcode + b"Q")
    path = torch_zip_with_data_pkl(tmp_path, "crafted", crafted)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("crafted/data/0", storage)
    with pytest.raises(AssertionError, match=f"saved_id must be a tuple, got {container}"):
        torch.load(path, weights_only=False)  # what torch says of it, trusted or not
    result = run_cli("inspect", path)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert line.startswith(f"error: {path}") and f"a storage reference in data.pkl is a {container}" in line, line
    assert "protocol 0" not in line, line


def test_a_genuine_protocol_0_save_is_still_said_to_be_one(tmp_path: Path) -> None:
    path = tmp_path / "p0.pt"
    torch.save({"w": torch.ones(2)}, path, pickle_protocol=0)
    result = run_cli("inspect", path)
    assert result.exit_code == 2
    assert "pickled with protocol 0" in one_error_line(result)


# --- 4. a list of millions of references to one value -------------------------------------------------------------

def test_a_list_of_millions_of_references_to_one_dict_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """{'w': tensor, 'junk': [the top dict] * 2,000,000}, a 4 MB data.pkl of BINGETs: the walks for pickles kept in
    bytes values and for `_extra_state` tensors beside the state dict stacked a (value, place) pair for every
    reference before they popped the first, to skip all but one (10 million references, a 20 MB file: 1.5 GB and 26 s
    for inspect)."""
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, buffer)
    with zipfile.ZipFile(buffer) as archive:
        genuine = archive.read("archive/data.pkl")
        storage = archive.read("archive/data/0")
    references = 2_000_000
    # The genuine dict left on the stack unfinished (no STOP), 'junk' and a list of BINGET 1 (the memo's first
    # entry after the top dict's key: the key string 'w'... any memoized value shared that often does the same).
    bomb = genuine[:-1] + b"X\x04\x00\x00\x00junk](" + b"h\x00" * references + b"es."
    path = torch_zip_with_data_pkl(tmp_path, "bomb", bomb)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("bomb/data/0", storage)
    rise, stdout = peak_rise_mib("inspect", path, "--json")
    report = json.loads(stdout)
    assert [tensor["name"] for tensor in report["tensors"]] == ["w"]
    assert rise < 300, rise  # 557 MiB before, 189 after (the opcode scan's share stays)
