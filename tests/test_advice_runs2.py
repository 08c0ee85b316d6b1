"""Advice weightdoctor prints, second round: the places that still printed placeholders (`PATH`, `prefix`, `B`,
`base`, a repo id as a shell path) or lost what the user gave (B's --revision), each pasted or argument-checked as
the user would run it. Names as typed, repr() for Python, shlex-quoted for shell (see test_advice_runs.py)."""

from __future__ import annotations

import ast
import json
import shlex
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import run_subprocess
from tests.test_advice_runs import _call

# A folder or file name a shell and Python both quote: a space, both quotes, a `$` and a letter outside ASCII.
ODD = "run $1 'ä\""


def _calls(text: str, name: str) -> list[ast.Call]:
    """Every call `name(...)` the text prints, parsed as Python reads it (to its closing parenthesis)."""
    found, start = [], 0
    while (at := text.find(name + "(", start)) >= 0:
        call = _call(text[at:], name)
        found.append(ast.parse(call, mode="eval").body)
        start = at + len(call)
    return found


def _literals(call: ast.Call) -> list[object]:
    """The call's positional arguments as the values Python gives them: each must be a literal (a name such as `PATH`
    or `prefix` is a NameError pasted)."""
    return [ast.literal_eval(argument) for argument in call.args]


# --- 3. the unwrap convert of B: no source said in words, B's --revision carried ---------------------------------


def _ddp_adapter_pair(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    from fixtures.diff_pairs import build_peft_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft: save_embedding_layers set for embed_tokens
        folders = build_peft_adapter(tmp_path / "made")
    return folders["adapter"], load_file(folders["base"] / "model.safetensors")


def test_unwrap_of_b_without_a_source_is_said_in_words(tmp_path: Path) -> None:
    """diff_specs called from Python (no source for B): the note printed `weightdoctor convert B --rename ... -o
    ...`, which the renderer sets on a line of its own as a command; pasted, it read a file named B."""
    from safetensors.torch import load_file

    from weightdoctor.diff_keys import KeySpec, diff_specs
    from weightdoctor.render.diff_keys import _commands_out

    adapter, base = _ddp_adapter_pair(tmp_path)
    specs_a = {name: KeySpec(name, tuple(t.shape), "float32")
               for name, t in load_file(adapter / "adapter_model.safetensors").items()}
    specs_b = {f"module.{name}": KeySpec(f"module.{name}", tuple(t.shape), "float32") for name, t in base.items()}
    report = diff_specs(specs_a, specs_b)
    note = next(note for note in report.notes if "training wrapper" in note)
    assert "convert B's checkpoint with --rename '^module\\.=' and -o naming the file to write" in note, note
    assert "weightdoctor convert B" not in note and " -o ..." not in note, note
    assert _commands_out(note)[1] == [], note  # nothing set on a line of its own as a command to paste


def test_unwrap_of_a_repo_id_b_reads_the_revision_compared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B a repo id read at --revision-b v2 (its DDP save; main holds other values): the convert printed dropped the
    revision and, pasted, wrote main's weights. It now carries --revision v2 and writes v2's, which the adapter
    fits."""
    from safetensors.torch import load_file, save

    from fixtures.hub_cache import commit_of, write_snapshot

    adapter, base = _ddp_adapter_pair(tmp_path)
    cache = tmp_path / "hub"
    wrapped = {f"module.{name}": tensor for name, tensor in base.items()}
    write_snapshot(cache, "org/ddp-base", commit_of("v2"), {"model.safetensors": save(wrapped)}, refs=("v2",))
    other = {f"module.{name}": torch.zeros_like(tensor) for name, tensor in base.items()}
    write_snapshot(cache, "org/ddp-base", commit_of("main"), {"model.safetensors": save(other)})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "COLUMNS": "100"}
    monkeypatch.chdir(tmp_path)

    done = run_subprocess("diff-keys", str(adapter), "org/ddp-base", "--revision-b", "v2", cwd=tmp_path, env=env)
    assert done.returncode in (0, 1), done.stderr
    printed = [line for line in done.stdout.splitlines() if line.startswith("weightdoctor convert ")]
    assert len(printed) == 1, done.stdout
    words = shlex.split(printed[0])
    assert words[words.index("--revision") + 1] == "v2", printed
    converted = run_subprocess(*words[1:], cwd=tmp_path, env=env)
    assert converted.returncode == 0, converted.stderr

    written = load_file(tmp_path / "ddp-base.unwrapped" / "model.safetensors")
    assert sorted(written) == sorted(base) and all(torch.equal(written[k], v) for k, v in base.items())
    again = json.loads(run_subprocess("diff-keys", str(adapter), "ddp-base.unwrapped", "--json", cwd=tmp_path,
                                      env=env).stdout)
    assert "of them in B with shapes that fit" in again["notes"][0], again["notes"]


# --- 2. PeftModel.from_pretrained(base, adapter): the sources where known, words where not ----------------------


def _exec_python(code: str, cwd: Path) -> str:
    """`code` run as pasted into `python` after `import peft, transformers`, in `cwd`; what it printed."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"import peft, transformers\n{code}"], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert done.returncode == 0, (code, done.stderr)
    return done.stdout


def _odd_adapter(tmp_path: Path) -> tuple[str, str]:
    """A PEFT LoRA and its base under ODD (as typed, relative to tmp_path), its adapter_config.json naming that
    base, as peft writes it when the base was loaded from that folder."""
    from fixtures.diff_pairs import build_peft_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft: save_embedding_layers set for embed_tokens
        build_peft_adapter(tmp_path / ODD)
    adapter, base = f"{ODD}/adapter", f"{ODD}/base"
    config = tmp_path / adapter / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": base}))
    return adapter, base


_CHECK_LOADED = """
from safetensors.torch import load_file
saved, loaded = load_file({saved!r}), peft.get_peft_model_state_dict(model)
same = all((loaded[k] == v).all().item() for k, v in saved.items())
print(type(model).__name__, sorted(saved) == sorted(loaded), same, sum("lora_" in name for name in model.state_dict()))
"""


def test_diff_keys_note_loads_the_adapter_onto_b_as_pasted(tmp_path: Path) -> None:
    """diff-keys ADAPTER BASE: "load it with PeftModel.from_pretrained(base, adapter)", a NameError pasted. It now
    names B and the adapter as typed, in the class peft recorded, and the call loads A's LoRA factors onto B."""
    adapter, base = _odd_adapter(tmp_path)
    done = run_subprocess("diff-keys", adapter, base, "--json", cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr
    note = json.loads(done.stdout)["notes"][0]
    assert "from_pretrained(base, adapter)" not in note, note
    [call] = _calls(note, "peft.PeftModel.from_pretrained")
    shown = run_subprocess("diff-keys", adapter, base, cwd=tmp_path, env={"COLUMNS": "100"}).stdout
    assert "from_pretrained(base" not in shown, shown  # the reasons legend too
    printed = _exec_python(f"model = {ast.unparse(call)}" + _CHECK_LOADED.format(
        saved=f"{adapter}/adapter_model.safetensors"), tmp_path)
    assert printed.split() == ["PeftModel", "True", "True", "10"], printed  # A's 10 LoRA factors, loaded


def test_diff_specs_without_sources_names_no_undefined_base(tmp_path: Path) -> None:
    """From Python (no sources): the note still printed `PeftModel.from_pretrained(base, adapter)`, a line of
    undefined names; it now says what the call is given in words."""
    from safetensors.torch import load_file

    from weightdoctor.diff_keys import KeySpec, diff_specs

    adapter, base = _odd_adapter(tmp_path)
    specs = [{name: KeySpec(name, tuple(t.shape), "float32") for name, t in load_file(tmp_path / file).items()}
             for file in (f"{adapter}/adapter_model.safetensors", f"{base}/model.safetensors")]
    note = diff_specs(*specs).notes[0]
    assert "PeftModel.from_pretrained(" not in note, note
    assert ("load it with peft's PeftModel.from_pretrained, given the base model it was made for and the adapter's "
            "folder") in note, note


def test_inspect_of_an_adapter_prints_its_load_and_fit_check_whole(tmp_path: Path) -> None:
    """inspect on an adapter whose config names its base: "load it onto its base with PeftModel.from_pretrained;
    diff-keys ADAPTER BASE checks the fit", a command of placeholders. Both are printed now, each whole on a line,
    and both run pasted."""
    adapter, base = _odd_adapter(tmp_path)
    done = run_subprocess("inspect", adapter, cwd=tmp_path, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert "ADAPTER BASE" not in done.stdout, done.stdout
    lines = done.stdout.splitlines()
    python = next(line for line in lines if line.startswith("import peft, transformers; model = peft.PeftModel."))
    call = _calls(python, "peft.PeftModel.from_pretrained")[0]
    assert ast.literal_eval(call.args[1]) == adapter and _literals(call.args[0]) == [base], python
    printed = _exec_python(python + _CHECK_LOADED.format(saved=f"{adapter}/adapter_model.safetensors"), tmp_path)
    assert printed.split() == ["PeftModel", "True", "True", "10"], printed
    command = next(line for line in lines if line.startswith("weightdoctor diff-keys "))
    assert shlex.split(command)[2:] == [adapter, base], command
    checked = run_subprocess(*shlex.split(command)[1:], "--json", cwd=tmp_path)
    assert checked.returncode in (0, 1), checked.stderr
    assert "5 of them in B with shapes that fit" in json.loads(checked.stdout)["notes"][0]


# --- 1. the file as typed where `PATH`, `prefix`, `CHECKPOINT_DIR OUTPUT` were printed ----------------------------


def _error_line(source: str, cwd: Path) -> str:
    """The one error line `weightdoctor inspect SOURCE` prints (exit 2, stdout empty)."""
    done = run_subprocess("inspect", source, cwd=cwd, env={"COLUMNS": "80"})
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr.rstrip("\n")


@pytest.mark.parametrize("name", ["bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001", "saved_model.pb"])
def test_tensorflow_refusal_names_the_checkpoint_prefix(tmp_path: Path, name: str) -> None:
    """A TensorFlow checkpoint's index or data shard, a SavedModel's graph: "tf.train.load_checkpoint(prefix)", a
    NameError pasted. TensorFlow is not installed here: what is checked is what the call is given, the prefix as
    typed, whose .index is the checkpoint's (a SavedModel's under variables/)."""
    folder = tmp_path / ODD
    (folder / "variables").mkdir(parents=True)
    for index in (folder / "bert_model.ckpt.index", folder / "variables" / "variables.index"):
        index.write_bytes(b"\x00" * 16)  # a TF table (SSTable) of keys: named by its suffix
        index.with_name(index.name.replace(".index", ".data-00000-of-00001")).write_bytes(b"\x00" * 32)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01\x12\x00")
    line = _error_line(f"{ODD}/{name}", tmp_path)
    [call] = _calls(line, "tf.train.load_checkpoint")
    [prefix] = _literals(call)
    assert isinstance(prefix, str) and not Path(prefix).is_absolute(), prefix  # as typed, relative
    expected = folder / ("variables/variables" if name == "saved_model.pb" else "bert_model.ckpt")
    assert (tmp_path / f"{prefix}.index").samefile(f"{expected}.index"), prefix


def test_composer_note_names_the_checkpoint_and_a_folder_beside_it(tmp_path: Path) -> None:
    """A Composer checkpoint of a transformers model: "write_huggingface_pretrained_from_composer_checkpoint(PATH,
    OUT) ... for from_pretrained(OUT)", and of its own ComposerModel "Trainer(model=..., load_path=PATH)". Composer
    is not installed: the export is given the file as typed and a folder beside it that does not exist yet, which
    from_pretrained then reads; the Trainer is said in words around the real load_path."""
    from tests.test_third_party_layouts15 import _composer_hf_checkpoint

    (tmp_path / ODD).mkdir()
    source = f"{ODD}/ep1-ba3-rank0.pt"
    _composer_hf_checkpoint(tmp_path / source)
    warnings_said = json.loads(run_subprocess("inspect", source, "--json", cwd=tmp_path).stdout)["warnings"]
    note = next(w for w in warnings_said if "MosaicML Composer checkpoint" in w)
    assert "PATH" not in note and "OUT)" not in note, note
    [export] = _calls(note, "composer.models.write_huggingface_pretrained_from_composer_checkpoint")
    checkpoint, out = _literals(export)
    assert checkpoint == source and (tmp_path / out).parent.samefile(tmp_path / ODD), (checkpoint, out)
    assert not (tmp_path / out).exists() and _literals(_calls(note, "from_pretrained")[-1]) == [out], note

    torch.save({"state": {"model": {"module.fc.weight": torch.zeros(2, 2)}, "timestamp": {}, "rank_zero_seed": 1},
                "rng": []}, tmp_path / ODD / "plain.pt")
    warnings_said = json.loads(run_subprocess("inspect", f"{ODD}/plain.pt", "--json", cwd=tmp_path).stdout)
    note = next(w for w in warnings_said["warnings"] if "MosaicML Composer checkpoint" in w)
    assert "model=...," not in note and "PATH" not in note, note
    assert f"given its ComposerModel and load_path={f'{ODD}/plain.pt'!r}, loads it back" in note, note


def test_pyannote_note_names_the_file_model_from_pretrained_reads(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """"Model.from_pretrained(PATH)": pyannote.audio (not installed here) is given the checkpoint file as typed."""
    from tests.test_third_party_layouts14 import _pyannote_checkpoint

    (tmp_path / ODD).mkdir()
    _pyannote_checkpoint(tmp_path / ODD / "pytorch_model.bin", monkeypatch)
    said = json.loads(run_subprocess("inspect", ODD, "--json", cwd=tmp_path).stdout)["warnings"]
    note = next(w for w in said if "pyannote.audio checkpoint" in w)
    [call] = _calls(note, "Model.from_pretrained")
    [given] = _literals(call)
    assert isinstance(given, str) and (tmp_path / given).samefile(tmp_path / ODD / "pytorch_model.bin"), note


@pytest.mark.parametrize("inside", [False, True])
def test_zero3_step_folder_names_the_zero_to_fp32_run_of_this_step(tmp_path: Path, inside: bool) -> None:
    """A global_stepN/ folder of ZeRO-3 model states (two ranks): "(python zero_to_fp32.py CHECKPOINT_DIR OUTPUT)",
    placeholders, where its file's refusal named the run. Read from inside the step (`.`), the run and --tag are
    named by the step's own name (`. --tag ''` named no step). DeepSpeed is not installed: the words are checked."""
    run = tmp_path / ODD
    step = run / "global_step5"
    step.mkdir(parents=True)
    for rank in (0, 1):
        torch.save({"module": {f"layer.{i}.dense.weight": torch.empty(0) for i in range(3)}},
                   step / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
        torch.save({"optimizer_state_dict": {}}, step / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    cwd, source = (step, ".") if inside else (tmp_path, f"{ODD}/global_step5")
    line = _error_line(source, cwd)
    words = shlex.split(line.split("beside the global_step folders (", 1)[1].split("), then read that", 1)[0])
    assert words[:3] == ["python", "-m", "deepspeed.utils.zero_to_fp32"], words
    assert (cwd / words[3]).samefile(run) and words[5:] == ["--tag", "global_step5", "--safe_serialization"], words
    assert (cwd / words[4]).resolve() == run.with_name(f"{ODD}.fp32"), words  # a new folder beside the run


# --- 4. a split GGUF in the Hub cache: merged from its cached parts, where the user stands --------------------------


@pytest.mark.parametrize("source", ["org/split-gguf", "hf://org/split-gguf/m-00001-of-00002.gguf"])
def test_split_gguf_of_a_repo_merges_from_the_cached_parts(tmp_path: Path, source: str) -> None:
    """A repo id (or its file's hf:// address) of a split GGUF: `llama-gguf-split --merge
    org/split-gguf/m-00001-of-00002.gguf org/split-gguf/m.gguf`, the repo id as a folder where the user stands (none
    there), or the merged file written into the Hub cache's snapshot. llama.cpp is not installed: the words are
    checked: the first part is the cached file, the merged one is written here, and from_pretrained reads that."""
    import os

    from fixtures.gguf_files import split_gguf
    from fixtures.hub_cache import commit_of, write_snapshot

    parts = split_gguf(tmp_path, "m", {}, [], 2)  # as gguf-split writes them (split.no, split.count, ...)
    cache = tmp_path / "hub"
    snapshot = write_snapshot(cache, "org/split-gguf", commit_of("main"),
                              {"m-00001-of-00002.gguf": parts[0].read_bytes(),
                               "m-00002-of-00002.gguf": parts[1].read_bytes(), "config.json": b"{}"})
    here = tmp_path / "here"
    here.mkdir()
    # A GGUF file is read by inspect (a part of a split one said to be a part): convert, which does not take one,
    # says what reads it; a repo of one split set's parts is read as the set (gguf6), its note saying the same.
    command = ["inspect", "--json"] if source.startswith("org/") else ["convert", "-o", str(here / "out.safetensors")]
    done = run_subprocess(command[0], source, *command[1:], cwd=here,
                          env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "COLUMNS": "80"})
    if source.startswith("org/"):
        assert done.returncode == 0, done.stderr
        [line] = [w for w in json.loads(done.stdout)["warnings"] if "llama-gguf-split" in w]
    else:
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
        line = done.stderr
    merge = shlex.split(line.split("llama-gguf-split ", 1)[1].split(" joins them into one file", 1)[0])
    assert merge[0] == "--merge" and (here / merge[1]).samefile(snapshot / "m-00001-of-00002.gguf"), merge
    written = here / merge[2]
    assert not written.resolve().is_relative_to(cache.resolve()), merge  # not into the cache
    call = _calls(line, "from_pretrained")[-1]
    given = os.path.join(ast.literal_eval(call.args[0]), ast.literal_eval(call.keywords[0].value))
    assert (here / given).resolve() == written.resolve(), (given, merge)


# --- 5. a long path: the error line's snippet is not cut in its middle ----------------------------------------------


def test_a_long_path_keeps_the_refusal_snippet_whole(tmp_path: Path) -> None:
    """A .npz under folders 3,400 characters deep (PATH_MAX is 4,096): its refusal names the path three times, and
    the 4,000-character limit of an error line cut its middle out, snippet and all ("... (6,555 characters left out)
    ..."). The path typed does not count toward the limit now: the line is whole, and its snippet, pasted, writes the
    arrays."""
    import os
    import subprocess
    import sys

    import numpy as np
    from safetensors.numpy import load_file

    from tests.helpers import REPO_ROOT

    deep = os.path.join(*[f"d{level:02d}_" + "x" * 240 for level in range(14)])
    (tmp_path / deep).mkdir(parents=True)
    source = os.path.join(deep, "weights.npz")
    arrays = {"layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "layer.bias": np.ones(2, np.float16)}
    np.savez(tmp_path / source, **arrays)
    line = _error_line(source, tmp_path)
    assert "characters left out" not in line and len(line) > 3 * len(source), len(line)
    [call] = _calls(line, "safetensors.numpy.save_file")
    done = subprocess.run([sys.executable, "-c", f"import numpy, safetensors.numpy\n{ast.unparse(call)}"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    written = load_file(tmp_path / deep / "weights.safetensors")  # beside the .npz, under its name
    assert sorted(written) == sorted(arrays) and all(np.array_equal(written[k], v) for k, v in arrays.items())


def test_a_line_long_from_a_files_text_is_still_cut() -> None:
    """What the limit is for: a line long because of text from a file (a name of 100,000 characters) is cut in its
    middle as before, though it names a long path typed too."""
    from weightdoctor.errors import MAX_MESSAGE_CHARS, clip_message

    typed = "/".join(["folder" + "y" * 200] * 12) + "/model.pt"
    line = f"{typed}: tensor {'n' * 100_000} is bad; torch.load({typed!r})"
    clipped = clip_message(line, typed=[typed])
    assert "characters left out" in clipped and len(clipped) < MAX_MESSAGE_CHARS + 100, len(clipped)
    assert clip_message(f"{typed}: torch.load({typed!r}); torch.load({typed!r})", typed=[typed]).count(typed) == 3


def test_an_hf_address_is_given_to_no_from_pretrained_nor_a_second_revision() -> None:
    """An hf:// source: from_pretrained reads no such address (the load is said in words), and its convert carries
    the address's own @revision (a --revision beside it named the revision twice)."""
    from weightdoctor.diff_keys import _unwrap_command, peft_loading

    said = peft_loading("hf://org/lora", "org/base", {"task_type": "CAUSAL_LM"})
    assert "peft.PeftModel.from_pretrained(" not in said and "hf://" not in said, said
    assert peft_loading("org/lora", "org/base", {"task_type": "CAUSAL_LM"}).startswith(
        "import peft, transformers; model = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM."
        "from_pretrained('org/base'), 'org/lora'")
    assert "--revision" not in shlex.split(_unwrap_command("hf://org/m@v2", "module.", "v2"))
    assert shlex.split(_unwrap_command("org/m", "module.", "v2"))[2:6] == ["org/m", "--revision", "v2", "--rename"]
