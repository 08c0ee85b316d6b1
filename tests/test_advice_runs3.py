"""Advice weightdoctor prints, third round: the output folder the DeepSpeed zero_to_fp32 and `accelerate
merge-weights` commands named `OUTDIR` (pasted, a folder literally named OUTDIR where the user stood), Python advice
that called `peft.`, `transformers.`, `torch.` without importing them, and `clip_message`, which read sys.argv, so
that in-process callers had only the cwd's protection. Each printed command is run (accelerate's CLI) or
argument-checked (DeepSpeed, nanotron: not installed), each snippet exec'd as pasted in a fresh interpreter where its
packages are installed (see test_advice_runs.py and test_advice_runs2.py)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_subprocess
from tests.test_advice_runs import _refusal

# A folder or file name a shell and Python both quote: a space, both quotes, a `$` and a letter outside ASCII.
ODD = "run $1 'ä\""


def _state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return {"encoder.weight": torch.randn(4, 3, generator=generator),
            "encoder.bias": torch.randn(4, generator=generator),
            "head.weight": torch.randn(2, 4, generator=generator)}


def _dcp_save(folder: Path, state_dict: dict) -> None:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group": a single process saves as rank 0
        dcp.save(state_dict, checkpoint_id=str(folder))


def _accelerate(words: list[str], cwd: Path) -> None:
    """`accelerate WORDS` run with accelerate's own CLI where the user stands."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate is not None
    merged = subprocess.run([accelerate, *words], capture_output=True, text=True, cwd=cwd)
    assert merged.returncode == 0, (words, merged.stderr)


# --- 1. OUTDIR: a real folder beside the input, that does not exist yet -------------------------------------------


@pytest.mark.parametrize("taken", [False, True])
def test_fsdp_save_state_merge_writes_beside_the_folder_not_into_outdir(tmp_path: Path, taken: bool) -> None:
    """accelerate's save_state under FSDP: `accelerate merge-weights FOLDER/pytorch_model_fsdp_0 OUTDIR` pasted made
    a folder `OUTDIR` where the user stood. The folder printed is beside the save, new (numbered where the first name
    is taken, which is left as it was), and what accelerate writes there holds the model's tensors."""
    from safetensors.torch import load_file

    state_dict = _state_dict()
    (tmp_path / ODD).mkdir()
    _dcp_save(tmp_path / ODD / "pytorch_model_fsdp_0", {"model": state_dict})
    torch.save({"step": 1}, tmp_path / ODD / "scheduler.bin")
    if taken:
        (tmp_path / f"{ODD}.merged").mkdir()
        (tmp_path / f"{ODD}.merged" / "notes.txt").write_text("mine")
    line = _refusal(ODD, tmp_path)
    command = line.split("(FSDP's sharded state dict): ", 1)[1].split(" writes them as one model.safetensors")[0]
    words = shlex.split(command)
    assert words[:2] == ["accelerate", "merge-weights"] and (tmp_path / words[2]).samefile(
        tmp_path / ODD / "pytorch_model_fsdp_0"), words
    assert "OUTDIR" not in line and words[3] == f"{ODD}.merged" + "-2" * taken, words
    assert not (tmp_path / words[3]).exists()
    _accelerate(words[1:], tmp_path)

    assert not (tmp_path / "OUTDIR").exists()
    written = load_file(tmp_path / words[3] / "model.safetensors")
    assert sorted(written) == sorted(state_dict)
    assert all(torch.equal(written[name], tensor) for name, tensor in state_dict.items())
    if taken:
        assert sorted(os.listdir(tmp_path / f"{ODD}.merged")) == ["notes.txt"]
    report = json.loads(run_subprocess("inspect", words[3], "--json", cwd=tmp_path).stdout)
    assert report["num_tensors"] == 3  # "to read here"


def test_trainer_run_fsdp_merge_writes_the_latest_save_beside_it(tmp_path: Path) -> None:
    """A Trainer's output_dir under FSDP (checkpoint-N/pytorch_model_fsdp_0/): "accelerate merge-weights
    .../checkpoint-10/pytorch_model_fsdp_0 OUTDIR writes the latest save's". The folder printed is beside the latest
    save; run, it holds that save's tensors (not the earlier one's)."""
    from safetensors.torch import load_file

    latest, earlier = _state_dict(), {name: torch.zeros_like(t) for name, t in _state_dict().items()}
    for step, state_dict in ((10, latest), (9, earlier)):
        _dcp_save(tmp_path / ODD / f"checkpoint-{step}" / "pytorch_model_fsdp_0", {"model": state_dict})
        torch.save({"last_epoch": step}, tmp_path / ODD / f"checkpoint-{step}" / "scheduler.pt")
    line = _refusal(ODD, tmp_path)
    command = line.split("accelerate merge-weights ", 1)[1].split(" writes the latest save's", 1)[0]
    words = shlex.split(command)
    assert len(words) == 2 and words[1] == f"{ODD}/checkpoint-10.merged", words
    _accelerate(["merge-weights", *words], tmp_path)

    written = load_file(tmp_path / ODD / "checkpoint-10.merged" / "model.safetensors")
    assert all(torch.equal(written[name], tensor) for name, tensor in latest.items())


def _zero3_run(run: Path, script: bool) -> Path:
    step = run / "global_step5"
    step.mkdir(parents=True)
    for rank in (0, 1):
        torch.save({"module": {f"layer.{i}.dense.weight": torch.empty(0) for i in range(3)}},
                   step / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
        torch.save({"optimizer_state_dict": {}}, step / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    (run / "latest").write_text("global_step5")
    if script:
        (run / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    return step


@pytest.mark.parametrize(("source", "script"), [("step", True), ("step", False), ("model-states", True),
                                                ("run", True), ("inside-step", False)])
def test_zero_to_fp32_output_is_a_new_folder_beside_the_run(tmp_path: Path, source: str, script: bool) -> None:
    """zero_to_fp32.py RUN OUTDIR: pasted, DeepSpeed wrote the gathered weights into a folder `OUTDIR` where the user
    stood. DeepSpeed is not installed here, so its arguments are checked as its argparse reads them (checkpoint_dir,
    output_dir, --tag): the output folder is new, beside the run, and not inside the checkpoint it reads."""
    run = tmp_path / ODD
    step = _zero3_run(run, script)
    cwd, named = {"step": (tmp_path, f"{ODD}/global_step5"), "run": (tmp_path, ODD),
                  "model-states": (tmp_path, f"{ODD}/global_step5/zero_pp_rank_0_mp_rank_00_model_states.pt"),
                  "inside-step": (step, ".")}[source]
    done = run_subprocess("inspect", named, cwd=cwd, env={"COLUMNS": "80"})
    assert done.returncode == 2, done.stderr
    line = done.stderr
    assert "OUTDIR" not in line, line
    start = line.index("python ")
    words = shlex.split(line[start:].split(" --safe_serialization", 1)[0])
    words = words[2:] if words[1] != "-m" else words[3:]
    positional = [word for word in words if not word.startswith("--") and words[words.index(word) - 1] != "--tag"]
    checkpoint_dir, output_dir = positional
    assert (cwd / checkpoint_dir).samefile(run), words
    assert not (cwd / output_dir).exists() and (cwd / output_dir).parent.resolve() == tmp_path.resolve(), output_dir
    assert (cwd / output_dir).name == f"{ODD}.fp32", output_dir


def test_nanotron_converter_writes_beside_the_checkpoint_with_no_placeholder(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """nanotron's convert_nanotron_to_hf: `--save_path=OUTDIR --tokenizer_name=TOKENIZER`, run in a clone of
    nanotron, made a folder OUTDIR in that clone and asked the Hub for a tokenizer named TOKENIZER. nanotron is not
    installed: the words are checked from inside the clone: --save_path is a new folder beside the checkpoint, and no
    --tokenizer_name is given a placeholder."""
    from tests.test_third_party_layouts27 import _nanotron_run

    step = _nanotron_run(tmp_path / "my run")
    clone = tmp_path / "nanotron"
    (clone / "examples" / "llama").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    result = run_cli("inspect", "my run")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert "OUTDIR" not in line and "TOKENIZER" not in line, line
    command = line.split("on a GPU: ", 1)[1].split(";", 1)[0]
    words = shlex.split(command)
    assert words[:4] == ["torchrun", "--nproc_per_node=1", "-m", "examples.llama.convert_nanotron_to_hf"], words
    options = dict(word.split("=", 1) for word in words[4:])
    assert sorted(options) == ["--checkpoint_path", "--save_path"], words
    monkeypatch.chdir(clone)
    assert os.path.samefile(options["--checkpoint_path"], step)
    saved = Path(options["--save_path"])
    assert saved.is_absolute() and not saved.exists() and saved.parent == step.parent, saved
    assert saved.name == f"{step.name}.hf"


# --- 3. clip_message: the words typed come from the CLI run, not from sys.argv ---------------------------------------


def _deep_npz(root: Path) -> tuple[Path, dict]:
    """A .npz under folders 3,400 characters deep (PATH_MAX is 4,096): its refusal names the path three times."""
    import numpy as np

    deep = root.joinpath(*[f"d{level:02d}_" + "x" * 240 for level in range(14)])
    deep.mkdir(parents=True)
    arrays = {"layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "layer.bias": np.ones(2, np.float16)}
    np.savez(deep / "weights.npz", **arrays)
    return deep / "weights.npz", arrays


def test_an_in_process_run_keeps_the_snippet_of_a_long_path_whole(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """CliRunner (a caller's own process: here pytest's sys.argv) inspecting a .npz 3,400 characters deep, from a
    folder that is not above it: clip_message measured the line against sys.argv, which holds no such path, and cut
    the snippet's middle out ("... characters left out ..."). The words are the run's own now: the line is whole, and
    its snippet, pasted, writes the arrays."""
    import ast

    import numpy as np
    from safetensors.numpy import load_file

    from tests.test_advice_runs2 import _calls

    source, arrays = _deep_npz(tmp_path / "deep")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert str(source) not in sys.argv
    result = run_cli("inspect", str(source))
    assert result.exit_code == 2 and result.stdout == ""
    line = result.stderr.replace("\n", "")
    assert "characters left out" not in line and line.count(str(source)) >= 3, len(line)
    [call] = _calls(line, "safetensors.numpy.save_file")
    done = subprocess.run([sys.executable, "-c", f"import numpy, safetensors.numpy\n{ast.unparse(call)}"],
                          capture_output=True, text=True, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    written = load_file(source.with_suffix(".safetensors"))  # beside the .npz, under its name
    assert sorted(written) == sorted(arrays) and all(np.array_equal(written[k], v) for k, v in arrays.items())


def test_clip_message_reads_no_process_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Called from Python, clip_message left whole whatever path the host process's sys.argv happened to hold: the
    same line was cut or not depending on the program around it. Only the words passed (and the working folder)
    count now; the CLI passes its run's (typed_words)."""
    from weightdoctor.errors import MAX_MESSAGE_CHARS, clip_message

    typed = "/".join(["folder" + "y" * 200] * 12) + "/model.pt"
    line = f"{typed}: torch.load({typed!r}); torch.load({typed!r})"
    monkeypatch.setattr(sys, "argv", ["weightdoctor", "inspect", typed])
    assert "characters left out" in clip_message(line) and len(clip_message(line)) < MAX_MESSAGE_CHARS + 100
    assert clip_message(line, typed=[typed]) == line

    from weightdoctor.errors import current_typed_words, typed_words

    assert current_typed_words() == ()
    with typed_words(["inspect", typed]):
        assert current_typed_words() == ("inspect", typed)
    assert current_typed_words() == ()


# --- 2. Python advice as pasted into a fresh interpreter: its imports printed with it --------------------------------


def _statements(text: str, opening: str) -> list[str]:
    """Every piece of Python the text prints that starts with `opening` (its import line), to its end: the longest
    text from there that parses as Python (the prose after it does not)."""
    import ast

    found, start = [], 0
    while (at := text.find(opening, start)) >= 0:
        ends = [end for end in range(len(text), at, -1) if text[end - 1] in ")}"]
        for end in ends:
            try:
                ast.parse(text[at:end])
            except SyntaxError:
                continue
            found.append(text[at:end])
            break
        else:
            raise AssertionError(f"no Python from {opening!r} in {text!r}")
        start = at + len(opening)
    return found


def _unbound(code: str) -> set[str]:
    """The names `code` reads that nothing in it binds (an import, an assignment, a comprehension's variable) and
    that are no builtins: each a NameError, pasted into a fresh interpreter."""
    import ast
    import builtins

    tree = ast.parse(code)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            bound |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
            and node.id not in bound}


def _strings(code: str) -> list[str]:
    """The string literals of `code`, in the order it writes them."""
    import ast

    found = [node for node in ast.walk(ast.parse(code))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    return [node.value for node in sorted(found, key=lambda node: (node.lineno, node.col_offset))]


def _run_pasted(code: str, cwd: Path) -> str:
    """`code` run as pasted into a fresh `python` (nothing imported for it), in `cwd`; what it printed."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, (code, done.stderr)
    return done.stdout


def test_npz_and_npy_snippets_run_pasted_with_their_imports(tmp_path: Path) -> None:
    """`numpy.load('w.npz')` and `safetensors.numpy.save_file(dict(numpy.load(...)), ...)` were printed without
    `import numpy, safetensors.numpy`: pasted into a fresh interpreter, NameError: name 'numpy' is not defined. Each
    now runs as printed, and what it writes is the arrays saved."""
    import numpy as np
    from safetensors.numpy import load_file

    (tmp_path / ODD).mkdir()
    arrays = {"layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "layer.bias": np.ones(3, np.float16)}
    np.savez(tmp_path / ODD / "weights.npz", **arrays)
    line = _refusal(f"{ODD}/weights.npz", tmp_path)
    load, save = _statements(line, "import numpy")
    assert load.startswith("import numpy; numpy.load(") and save.startswith("import numpy, safetensors.numpy; ")
    # Pasted where a model.safetensors of the user's lies (a 'model.safetensors' of the snippet was written over it):
    # the arrays go beside the .npz, under its name.
    (tmp_path / "model.safetensors").write_bytes(b"the user's own file")
    for code in (load, save):
        assert not _unbound(code), code
        _run_pasted(code, tmp_path)
    written = load_file(tmp_path / ODD / "weights.safetensors")
    assert sorted(written) == sorted(arrays) and all(np.array_equal(written[k], v) for k, v in arrays.items())
    assert (tmp_path / "model.safetensors").read_bytes() == b"the user's own file"
    # A second refusal, now that weights.safetensors exists, names a fresh file, never the one written.
    [_, save] = _statements(_refusal(f"{ODD}/weights.npz", tmp_path), "import numpy")
    _run_pasted(save, tmp_path)
    assert sorted(load_file(tmp_path / ODD / "weights-2.safetensors")) == sorted(arrays)

    np.save(tmp_path / ODD / "array.npy", arrays["layer.weight"])
    [load] = _statements(_refusal(f"{ODD}/array.npy", tmp_path), "import numpy")
    printed = _run_pasted(f"{load}\nprint(numpy.load({f'{ODD}/array.npy'!r}).sum())", tmp_path)
    assert float(printed) == float(arrays["layer.weight"].sum())


def test_torch_resave_snippets_run_pasted(tmp_path: Path) -> None:
    """A re-zipped torch.save file, a protocol-1 legacy file and a TorchScript archive: each refusal printed
    `torch.save(torch.load(...), ...)` / `torch.save(torch.jit.load(...).state_dict(), ...)` without `import torch`.
    Pasted as printed now, each writes the file weightdoctor then reads, with the tensors saved."""
    import zipfile

    state_dict = _state_dict()
    (tmp_path / ODD).mkdir()
    torch.save(state_dict, tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, \
            zipfile.ZipFile(tmp_path / ODD / "zipped.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    torch.save(state_dict, tmp_path / ODD / "old.pt", pickle_protocol=1, _use_new_zipfile_serialization=False)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    torch.jit.save(torch.jit.script(module), str(tmp_path / ODD / "scripted.pt"))
    for name, written, expected in (("zipped.pt", "zipped-resaved.pt", state_dict),
                                    ("old.pt", "old-resaved.pt", state_dict),
                                    ("scripted.pt", "scripted-state-dict.pt", module.state_dict())):
        line = _refusal(f"{ODD}/{name}", tmp_path)
        [code] = _statements(line, "import torch; ")
        assert not _unbound(code), code
        _run_pasted(code, tmp_path)
        saved = torch.load(tmp_path / ODD / written, weights_only=True)
        assert sorted(saved) == sorted(expected) and all(torch.equal(saved[k], v) for k, v in expected.items())
        assert json.loads(run_subprocess("inspect", f"{ODD}/{written}", "--json", cwd=tmp_path).stdout)[
            "num_tensors"] == len(expected)


def test_dcp_and_universal_snippets_run_pasted(tmp_path: Path) -> None:
    """dcp_to_torch_save and the gather of a DeepSpeed universal checkpoint's zero/ folder were printed without
    their imports (`torch.distributed.checkpoint.format_utils`, `torch` and `Path`): NameErrors pasted. Run as
    printed now, each writes a new file beside its folder with the tensors saved (never the user's model.pt)."""
    from tests.test_third_party_layouts5 import _UNIVERSAL_PARAMETERS, _universal_checkpoint

    state_dict = _state_dict()
    _dcp_save(tmp_path / ODD, state_dict)
    [code] = _statements(_refusal(ODD, tmp_path), "import torch.distributed.checkpoint.format_utils; ")
    assert not _unbound(code), code
    (tmp_path / "model.pt").write_bytes(b"the user's own file")  # a 'model.pt' of the snippet was written over it
    _run_pasted(code, tmp_path)
    written = torch.load(tmp_path / f"{ODD}.state_dict.pt", weights_only=True)
    assert sorted(written) == sorted(state_dict) and all(torch.equal(written[k], v) for k, v in state_dict.items())

    step = _universal_checkpoint(tmp_path / "universal", zero3=True)
    [code] = _statements(_refusal(str(step.relative_to(tmp_path)), tmp_path), "import pathlib, torch; ")
    assert not _unbound(code), code
    _run_pasted(code, tmp_path)
    written = torch.load(step.with_name(f"{step.name}.state_dict.pt"), weights_only=True)
    assert sorted(written) == sorted(_UNIVERSAL_PARAMETERS)
    assert (tmp_path / "model.pt").read_bytes() == b"the user's own file"


def test_hf_storage_writer_consolidate_snippet_runs_pasted(tmp_path: Path) -> None:
    """A HuggingFaceStorageWriter(save_distributed=True) folder: "consolidate_safetensors_files(input_dir,
    output_dir, fqn_to_index_mapping)", three undefined names (and None for the mapping fails inside torch). Pasted
    now, it writes the whole tensors into a new folder beside the save, which weightdoctor reads."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    generator = torch.Generator().manual_seed(5)
    state = {"model.embed_tokens.weight": torch.randn(16, 8, generator=generator),
             "lm_head.weight": torch.randn(16, 8, generator=generator)}
    folder = tmp_path / ODD
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save(state, storage_writer=HuggingFaceStorageWriter(
            str(folder), fqn_to_index_mapping={"model.embed_tokens.weight": 1, "lm_head.weight": 2},
            save_distributed=True), no_dist=True)
    line = _refusal(ODD, tmp_path)
    [code] = _statements(line, "import glob, os, safetensors, ")
    assert "input_dir" not in line and not _unbound(code), code
    _run_pasted(code, tmp_path)
    out = tmp_path / f"{ODD}.consolidated"
    [shard] = sorted(out.glob("model-*.safetensors"))
    written = load_file(shard)
    assert sorted(written) == sorted(state) and all(torch.equal(written[k], v) for k, v in state.items())
    report = json.loads(run_subprocess("inspect", f"{ODD}.consolidated", "--json", cwd=tmp_path).stdout)
    assert report["num_tensors"] == 2


_CHECK_LOADED = """
from safetensors.torch import load_file
saved, loaded = load_file({saved!r}), peft.get_peft_model_state_dict(model)
same = all((loaded[k] == v).all().item() for k, v in saved.items())
print(type(model).__name__, sorted(saved) == sorted(loaded), same)
"""


def test_peft_load_lines_run_pasted_with_their_imports(tmp_path: Path) -> None:
    """inspect of an adapter printed `peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM...)` on a
    line of its own, and diff-keys' note the same call: pasted into a fresh interpreter, NameError: name 'peft' is not
    defined. Both print `import peft, transformers; model = ...` now; run as printed, the model holds A's factors."""
    from tests.test_advice_runs2 import _odd_adapter

    adapter, base = _odd_adapter(tmp_path)
    saved = f"{adapter}/adapter_model.safetensors"
    shown = run_subprocess("inspect", adapter, cwd=tmp_path, env={"COLUMNS": "80"})
    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if "PeftModel.from_pretrained(" in line]
    assert line.startswith("import peft, transformers; model = peft.PeftModel.from_pretrained("), line
    assert not _unbound(line), line
    assert _run_pasted(line + _CHECK_LOADED.format(saved=saved), tmp_path).split() == ["PeftModel", "True", "True"]

    noted = run_subprocess("diff-keys", adapter, base, cwd=tmp_path, env={"COLUMNS": "100"})
    assert noted.returncode in (0, 1), noted.stderr
    [line] = [line for line in noted.stdout.splitlines() if "PeftModel.from_pretrained(" in line]
    assert line.startswith("import peft, transformers; model = "), noted.stdout  # set whole on a line of its own
    assert _run_pasted(line + _CHECK_LOADED.format(saved=saved), tmp_path).split() == ["PeftModel", "True", "True"]
    note = json.loads(run_subprocess("diff-keys", adapter, base, "--json", cwd=tmp_path).stdout)["notes"][0]
    assert _statements(note, "import peft, transformers; ") == [line], note


@pytest.mark.parametrize(("name", "data", "opening"), [
    ("model.keras", None, "import keras; "),
    ("tf_model.h5", b"\x89HDF\r\n\x1a\n" + bytes(64), "import h5py; "),
    ("model.onnx", b"\x08\x07\x12\x07pytorch", "import onnx, onnx.numpy_helper; "),
    ("model.ort", b"\x10\x00\x00\x00ORTM" + b"\0" * 24, "import onnxruntime; "),
    ("64-8bits.tflite", b"\x1c\x00\x00\x00TFL3" + b"\0" * 56, "import tensorflow as tf; "),
    ("model.bin", b"\xba\x16\x4f\x2f\x0c\x00\x00\x00" + bytes(range(256)) * 8, "import fasttext; "),
    ("bert_model.ckpt.index", None, "import tensorflow as tf; "),
    ("model.Q4_K_M.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 0), "import transformers; "),
])
def test_foreign_format_snippets_import_what_they_call(tmp_path: Path, name: str, data: bytes | None,
                                                       opening: str) -> None:
    """keras.saving.load_model(...), h5py.File(...), onnx.load(...), tf.lite.Interpreter(...), fasttext.load_model
    (...), tf.train.load_checkpoint(...), from_pretrained(..., gguf_file=...) were printed without their imports (the
    last without any object to call it on): pasted, NameErrors. Their packages are not installed here, so what is
    checked is that each snippet, as printed, binds every name it reads and gives the refused file as typed."""
    import zipfile

    folder = tmp_path / ODD
    folder.mkdir()
    if name == "model.keras":
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
            archive.writestr("config.json", json.dumps({"module": "keras", "class_name": "Sequential"}))
            archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(504))
    elif name.endswith(".index"):
        (folder / name).write_bytes(bytes(48) + bytes.fromhex("57fb808b247547db"))  # a TensorFlow table's footer
        (folder / "bert_model.ckpt.data-00000-of-00001").write_bytes(bytes(16))
    else:
        (folder / name).write_bytes(data or b"")
    # A GGUF file is read by inspect: convert, which does not take one, says what reads it.
    line = _refusal(f"{ODD}/{name}", tmp_path, ("convert", "-o", "out.safetensors") if name.endswith(".gguf")
                    else ("inspect",))
    snippets = _statements(line, opening)
    assert snippets, line
    for code in snippets:
        assert not _unbound(code), code
        literals = [value for value in _strings(code) if value.startswith(ODD)]
        assert literals, code
        named = literals[0] if name != "bert_model.ckpt.index" else literals[0] + ".index"
        if name.endswith(".gguf"):
            named = os.path.join(literals[0], name)
        assert (tmp_path / named).samefile(folder / name), code


def test_spacy_transformer_export_names_the_pipeline_and_a_new_folder(tmp_path: Path) -> None:
    """A spacy-transformers pipeline: "nlp.get_pipe('transformer').model.transformer.save_pretrained(OUT)", `nlp`
    never defined and a folder named OUT. spaCy is not installed: the snippet printed binds every name it reads,
    loads the pipeline as typed and writes a folder beside it that does not exist yet."""

    from tests.test_third_party_layouts15 import _spacy_pipeline

    _spacy_pipeline(tmp_path / ODD, transformer=True)
    line = _refusal(ODD, tmp_path)
    assert "OUT)" not in line and "nlp." not in line, line
    snippets = [code for code in _statements(line, "import spacy; ") if "save_pretrained" in code]
    assert len(snippets) == 1, line
    [code] = snippets
    assert not _unbound(code), code
    strings = _strings(code)
    assert strings[0] == ODD and "transformer" in strings, code
    assert not (tmp_path / strings[-1]).exists() and (tmp_path / strings[-1]).parent == tmp_path, code


def test_nemo2_export_names_the_checkpoint_and_a_new_folder(tmp_path: Path) -> None:
    """A NeMo 2.0 checkpoint: "NeMo's llm.export_ckpt(path=..., target='hf')": `llm` never imported, `...` for the
    checkpoint, no output. NeMo is not installed: the snippet binds what it reads, names the folder as typed and a
    new folder beside it to write."""
    import ast

    root = tmp_path / ODD
    (root / "context").mkdir(parents=True)
    (root / "context" / "model.yaml").write_text("_target_: nemo.collections.llm.gpt.model.llama.LlamaModel\n")
    _dcp_save(root / "weights", {"module.decoder.weight": torch.ones(2, 4)})
    torch.save({"optimizer": {}}, root / "weights" / "common.pt")
    (root / "weights" / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist"}))
    line = _refusal(ODD, tmp_path)
    [code] = _statements(line, "import pathlib; from nemo.collections import llm; ")
    assert not _unbound(code), code
    call = ast.parse(code).body[-1].value
    given = {keyword.arg: keyword.value for keyword in call.keywords}
    assert ast.literal_eval(given["target"]) == "hf"
    path, output = (ast.literal_eval(given[key].args[0]) for key in ("path", "output_path"))
    assert (tmp_path / path).samefile(root) and output == f"{ODD}.hf" and not (tmp_path / output).exists(), code


def test_coqui_tts_command_names_the_checkpoint_and_its_config(tmp_path: Path) -> None:
    """A Coqui TTS folder: "tts --model_path FILE --config_path config.json": FILE a placeholder, config.json only
    where the user stood inside the folder, no text to say. TTS is not installed: the words are checked."""
    folder = tmp_path / ODD
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "vits", "run_name": "ljspeech",
                                                    "audio": {"sample_rate": 22050}}))
    for name in ("best_model.pth", "checkpoint_5000.pth"):
        torch.save({"model": {"enc.weight": torch.ones(4, 4)}, "step": 5000}, folder / name)
    line = _refusal(ODD, tmp_path)
    assert "FILE" not in line, line
    words = shlex.split(line.split("checkpoint with that config (", 1)[1].split(", or the model class's", 1)[0])
    assert words[0] == "tts", words
    options = dict(zip(words[1::2], words[2::2], strict=True))
    assert sorted(options) == ["--config_path", "--model_path", "--out_path", "--text"], words
    assert (tmp_path / options["--model_path"]).samefile(folder / "best_model.pth")
    assert (tmp_path / options["--config_path"]).samefile(folder / "config.json")
    assert not (tmp_path / options["--out_path"]).exists()


def test_composer_strip_command_without_a_file_is_said_in_words() -> None:
    """Without the checkpoint's path (called from Python), the Composer note gave `weightdoctor convert CHECKPOINT
    --strip-prefix model. -o OUTPUT`: pasted, it read a file named CHECKPOINT. Said in words now, and nothing of
    it is set on a line of its own as a command to paste."""
    from weightdoctor.checkpoint.pytorch_format import _stripped_command
    from weightdoctor.render.diff_keys import _commands_out

    said = _stripped_command(None)
    assert "CHECKPOINT" not in said and "OUTPUT" not in said and "--strip-prefix model." in said, said
    assert _commands_out(f"note: {said}")[1] == [], said


def test_a_broken_link_outside_a_repo_folder_names_no_placeholder(tmp_path: Path) -> None:
    """A snapshot's link to a blob that is gone, in a folder not named models--org--name: "download it again with
    `hf download <repo id>`" (pasted, bash reads `<repo` as a file to read from). Said in words there now."""
    snapshot = tmp_path / "cache" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (snapshot / "model.safetensors").symlink_to(tmp_path / "cache" / "blobs" / "gone")
    done = run_subprocess("inspect", str(snapshot), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "<repo id>" not in done.stderr and "download it again with hf download, given the repo id," in \
        done.stderr, done.stderr


@pytest.mark.parametrize("version3", [False, True])
def test_inc_loader_is_said_without_placeholders(tmp_path: Path, version3: bool) -> None:
    """An Intel Neural Compressor weight-only save: "neural_compressor...load(FOLDER, MODEL, ...)", FOLDER and MODEL
    NameErrors pasted (the folder is not known where the warning is made, the model is the user's own object). Said
    in words now, naming what the loader is given."""
    from tests.test_third_party_layouts15 import _inc_weight_only

    _inc_weight_only(tmp_path / "inc", version3=version3)
    source = tmp_path / "inc" if version3 else tmp_path / "inc" / "best_model.pt"
    done = run_subprocess("inspect", str(source), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [said] = [w for w in json.loads(done.stdout)["warnings"] if "neural_compressor" in w]
    assert "FOLDER" not in said and "MODEL" not in said and "load(" not in said, said
    assert "given the save's folder" in said and "the floating-point model it was made from" in said, said
