"""Advice weightdoctor prints, fourth round: diff-keys' notes on a model's own layout named a conversion script with
placeholders (`transformers' models/whisper/convert_openai_to_hf.py --checkpoint_path A --pytorch_dump_folder_path
OUT`, `--model NAME`, `--repo_id REPO --checkpoint_file FILE`), a path inside a transformers that ships no such script
(transformers 5's wheels ship none). Each note now gives the real file and a new folder beside it: as a `python -m`
command where the installed library ships the script (run here against a transformers that does, its script
argument-checked with the flags of the script's own argparse), else naming the script's source and saying the
installed library lacks it (see test_advice_runs.py to test_advice_runs3.py for how advice is run)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT, run_json, run_subprocess
from tests.test_third_party_layouts6 import _openai_whisper
from tests.test_third_party_layouts9 import _t2i_adapters
from tests.test_third_party_layouts12 import _fairseq_checkpoint, _fairseq_speech, _openai_clip_state, tiny_clip
from tests.test_third_party_layouts14 import _rwkv4_pth, tiny_rwkv_config

# A file name a shell quotes: a space, a `$` and a letter outside ASCII.
ODD = "my $run ä"

# The flags each script's argparse takes (transformers' and diffusers' source repositories, read for this test: the
# installed transformers ships none of them, so they cannot be imported here).
_SCRIPT_FLAGS = {
    "convert_openai_to_hf.py": {"--checkpoint_path", "--pytorch_dump_folder_path", "--convert_preprocessor"},
    "convert_clip_original_pytorch_to_hf.py": {"--pytorch_dump_folder_path", "--checkpoint_path", "--config_path"},
    "convert_wav2vec2_original_pytorch_checkpoint_to_pytorch.py": {
        "--pytorch_dump_folder_path", "--checkpoint_path", "--dict_path", "--config_path", "--not_finetuned",
        "--is_seq_class"},
    "convert_hubert_original_pytorch_checkpoint_to_pytorch.py": {
        "--pytorch_dump_folder_path", "--checkpoint_path", "--dict_path", "--config_path", "--not_finetuned"},
    "convert_esm.py": {"--pytorch_dump_folder_path", "--classification_head", "--model", "--push_to_repo",
                       "--auth_token"},
    "convert_sam_to_hf.py": {"--model_name", "--checkpoint_path", "--pytorch_dump_folder_path", "--push_to_hub"},
    "convert_original_t2i_adapter.py": {"--checkpoint_path", "--output_path", "--is_adapter_light", "--in_channels"},
}
_PLACEHOLDERS = (" OUT", " NAME", " REPO", " FILE", "_path A", "OUTDIR")


def _note(notes: list[str], words: str) -> str:
    [note] = [note for note in notes if words in note]
    return note


def _given(note: str, script: str) -> list[str]:
    """The words the note gives `script` (after "given "), as a shell reads them, having checked that it says the
    installed library does not ship it (it does not: the module is not found) and names its source."""
    from weightdoctor.render.diff_keys import _end_of_command

    library = "diffusers" if script == "convert_original_t2i_adapter.py" else "transformers"
    at = note.index(f"{library}' {script}, ")
    said = note[at:]
    if library == "transformers":
        import transformers

        module = next(f"transformers.models.{folder}.{script[:-3]}" for folder in ("whisper", "clip", "wav2vec2",
                      "hubert", "esm", "sam") if f"models/{folder}/{script}" in said)
        assert importlib.util.find_spec(module) is None  # not shipped: what the note says
        assert f"which the installed transformers {transformers.__version__} does not ship" in said, said
        assert f"(src/transformers/{module[len('transformers.'):].replace('.', '/')}.py in its source repository, " \
               "github.com/huggingface/transformers)" in said, said
    else:
        assert "which no installed diffusers ships (scripts/convert_original_t2i_adapter.py in its source" in said
    start = note.index(", given ", at) + len(", given ")
    words = shlex.split(note[start:_end_of_command(note, start)])
    flags = [word for word in words if word.startswith("--")]
    assert flags and set(flags) <= _SCRIPT_FLAGS[script], (flags, note)
    assert not any(placeholder in note for placeholder in _PLACEHOLDERS), note
    assert not set(words) & {"A", "B", "OUT", "NAME", "REPO", "FILE"}, words
    return words


def _checked_paths(words: list[str], input_flag: str, output_flag: str, file: Path, cwd: Path) -> None:
    """The input flag names `file` (as typed where the user stands) and the output flag a new folder beside it."""
    values = dict(zip(words[::2], words[1::2], strict=False))
    assert (cwd / values[input_flag]).samefile(file), values
    output = cwd / values[output_flag]
    assert not output.exists() and output.parent.samefile(file.parent), values
    assert output.name.startswith(file.name.split(".")[0]) and "-hf" in output.name, values


def _whisper_pair(folder: Path, name: str) -> tuple[Path, Path]:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    dims = _openai_whisper(folder / name)
    config = WhisperConfig(vocab_size=dims["n_vocab"], num_mel_bins=dims["n_mels"], d_model=8, encoder_layers=1,
                           decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                           decoder_ffn_dim=16, max_source_positions=10, max_target_positions=12, pad_token_id=62,
                           bos_token_id=62, eos_token_id=62, decoder_start_token_id=63)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(str(folder / "whisper-hf"))
    return folder / name, folder / "whisper-hf"


# --- 1. conversion scripts: the real file and a new folder; said not shipped where it is not ---------------------


@pytest.mark.parametrize("taken", [False, True])
def test_whisper_note_gives_the_file_typed_and_a_new_folder_not_a_and_out(tmp_path: Path, taken: bool) -> None:
    """`diff-keys tiny.pt whisper-hf` said "convert_openai_to_hf.py --checkpoint_path A --pytorch_dump_folder_path
    OUT": pasted, a file named A. The note now says the installed transformers lacks the script, names its source,
    and gives it the file as typed (quoted) and a folder beside it that nothing is at (numbered where taken)."""
    a, b = _whisper_pair(tmp_path, f"{ODD}.pt")
    if taken:
        (tmp_path / f"{ODD}-hf").mkdir()
    done = run_subprocess("diff-keys", a.name, b.name, "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    note = _note(json.loads(done.stdout)["notes"], "openai-whisper's own layout")
    words = _given(note, "convert_openai_to_hf.py")
    assert words[:2] == ["--checkpoint_path", a.name] and words[2] == "--pytorch_dump_folder_path", words
    assert words[3] == f"{ODD}-hf" + "-2" * taken, words
    _checked_paths(words, "--checkpoint_path", "--pytorch_dump_folder_path", a, tmp_path)
    # The same through --model-class (from_pretrained's view: load_simulation) with A typed by its full path.
    code, data = run_json("diff-keys", str(a), "--model-class", "WhisperForConditionalGeneration", "--config", str(b))
    assert code == 1
    words = _given(_note(data["notes"], "openai-whisper's own layout"), "convert_openai_to_hf.py")
    _checked_paths(words, "--checkpoint_path", "--pytorch_dump_folder_path", a, tmp_path)


def test_a_folder_typed_gives_its_one_file(tmp_path: Path) -> None:
    """A folder holding openai-whisper's file: the script is given the file inside it, not the folder."""
    (tmp_path / "run").mkdir()
    a, b = _whisper_pair(tmp_path / "run", "tiny.pt")
    code, data = run_json("diff-keys", str(tmp_path / "run"), str(b))
    assert code == 1
    words = _given(_note(data["notes"], "openai-whisper's own layout"), "convert_openai_to_hf.py")
    assert words[1] == str(a), words
    _checked_paths(words, "--checkpoint_path", "--pytorch_dump_folder_path", a, tmp_path)


def _fake_shipping_transformers(site: Path) -> None:
    """A transformers that ships convert_openai_to_hf.py: the installed one, linked file by file, with the script
    added in models/whisper/. The script's argparse takes the flags of transformers' own (its source repository);
    what it does with them is reduced to reading the checkpoint's dims and writing them as the folder's config."""
    import transformers

    real = Path(transformers.__file__).parent
    package = site / "transformers"
    package.mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name not in ("models", "__pycache__"):
            (package / entry.name).symlink_to(entry)
    (package / "models").mkdir()
    for entry in (real / "models").iterdir():
        if entry.name not in ("whisper", "__pycache__"):
            (package / "models" / entry.name).symlink_to(entry)
    (package / "models" / "whisper").mkdir()
    for entry in (real / "models" / "whisper").iterdir():
        if entry.name != "__pycache__":
            (package / "models" / "whisper" / entry.name).symlink_to(entry)
    (package / "models" / "whisper" / "convert_openai_to_hf.py").write_text(
        "import argparse, json, os\n"
        "import torch\n"
        "if __name__ == '__main__':\n"
        "    parser = argparse.ArgumentParser()\n"
        "    parser.add_argument('--checkpoint_path', type=str)\n"
        "    parser.add_argument('--pytorch_dump_folder_path', default=None, type=str)\n"
        "    parser.add_argument('--convert_preprocessor', type=bool, default=False)\n"
        "    args = parser.parse_args()\n"
        "    dims = torch.load(args.checkpoint_path, map_location='cpu', weights_only=True)['dims']\n"
        "    os.makedirs(args.pytorch_dump_folder_path)\n"
        "    with open(os.path.join(args.pytorch_dump_folder_path, 'config.json'), 'w') as f:\n"
        "        json.dump(dims, f)\n")


def test_where_transformers_ships_the_script_the_note_gives_a_python_m_command_that_runs(tmp_path: Path) -> None:
    """Against a transformers that ships convert_openai_to_hf.py, the note gives `python -m transformers.models.
    whisper.convert_openai_to_hf --checkpoint_path FILE --pytorch_dump_folder_path NEW`, set on a line of its own in
    the text report; pasted where the user stands, its flags are accepted and it writes the new folder."""
    _fake_shipping_transformers(tmp_path / "site")
    (tmp_path / "work").mkdir()
    a, b = _whisper_pair(tmp_path / "work", f"{ODD}.pt")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO_ROOT)]), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-m", "weightdoctor", "diff-keys", a.name, b.name],
                          capture_output=True, text=True, cwd=tmp_path / "work", env={**os.environ, **env})
    assert done.returncode == 1, done.stderr
    [command] = [line for line in done.stdout.splitlines() if line.startswith("python -m ")]
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "transformers.models.whisper.convert_openai_to_hf"], words
    assert words[3:] == ["--checkpoint_path", a.name, "--pytorch_dump_folder_path", f"{ODD}-hf"], words
    assert "does not ship" not in done.stdout and "the command below" in done.stdout
    before = a.read_bytes()
    ran = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, cwd=tmp_path / "work",
                         env={**os.environ, **env})
    assert ran.returncode == 0, ran.stderr
    written = json.loads((tmp_path / "work" / f"{ODD}-hf" / "config.json").read_text())
    assert written["n_text_state"] == 8 and a.read_bytes() == before


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_fairseq_speech_note_gives_the_file_and_a_new_folder(tmp_path: Path, family: str) -> None:
    """fairseq's wav2vec 2.0 / HuBERT: "--checkpoint_path A --pytorch_dump_folder_path OUT --config_path B's
    config.json" now gives the file and a new folder; --config_path and the rest are said after them in words."""
    from transformers import HubertConfig, HubertForCTC, Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(0)
    sizes = {"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 32,
             "conv_dim": (8, 8), "conv_stride": (5, 2), "conv_kernel": (10, 3), "num_feat_extract_layers": 2,
             "vocab_size": 12, "num_conv_pos_embeddings": 4, "num_conv_pos_embedding_groups": 2}
    if family == "hubert":
        HubertForCTC(HubertConfig(**sizes)).save_pretrained(tmp_path / "hf")
        model = _fairseq_speech("", 3, {"label_embs_concat": torch.randn(504, 8)})
    else:
        Wav2Vec2ForCTC(Wav2Vec2Config(**sizes)).save_pretrained(tmp_path / "hf")
        model = _fairseq_speech("w2v_encoder.w2v_model.", 3, {"w2v_encoder.proj.weight": torch.randn(12, 16),
                                                              "w2v_encoder.proj.bias": torch.zeros(12)})
    path = tmp_path / "checkpoint_best.pt"
    _fairseq_checkpoint(path, model, family)
    code, data = run_json("diff-keys", str(path), str(tmp_path / "hf"))
    assert code == 1
    note = _note(data["notes"], "fairseq's own")
    words = _given(note, f"convert_{family}_original_pytorch_checkpoint_to_pytorch.py")
    assert words[0] == "--checkpoint_path" and words[2] == "--pytorch_dump_folder_path", words
    _checked_paths(words, "--checkpoint_path", "--pytorch_dump_folder_path", path, tmp_path)
    assert "adding --config_path with B's config.json" in note, note


def test_openai_clip_note_gives_the_file_and_a_new_folder(tmp_path: Path) -> None:

    tiny_clip(tmp_path / "hf")
    torch.save(_openai_clip_state(), tmp_path / "ViT-B-32.pt")
    code, data = run_json("diff-keys", str(tmp_path / "ViT-B-32.pt"), str(tmp_path / "hf"))
    assert code == 1
    words = _given(_note(data["notes"], "OpenAI CLIP's own layout"), "convert_clip_original_pytorch_to_hf.py")
    _checked_paths(words, "--checkpoint_path", "--pytorch_dump_folder_path", tmp_path / "ViT-B-32.pt", tmp_path)


def test_t2i_adapter_note_gives_the_file_and_a_new_folder(tmp_path: Path) -> None:
    """diffusers' scripts/ folder is in no wheel: the note says so, names the script's source, and gives it the
    original adapter's file and a new folder (was `--checkpoint_path A --output_path OUT`)."""
    original, diffusers = _t2i_adapters(tmp_path)
    code, data = run_json("diff-keys", str(original), str(diffusers))
    assert code == 1
    note = _note(data["notes"], "T2I-Adapter")
    words = _given(note, "convert_original_t2i_adapter.py")
    _checked_paths(words, "--checkpoint_path", "--output_path", original, tmp_path)
    assert "--in_channels" in note and "divided by 64" in note, note


def _esm_pair(folder: Path, name: str) -> Path:
    from transformers import EsmConfig, EsmForMaskedLM

    torch.manual_seed(0)
    config = EsmConfig(vocab_size=33, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                       position_embedding_type="rotary", pad_token_id=1, mask_token_id=32, token_dropout=True,
                       emb_layer_norm_before=False)
    EsmForMaskedLM(config).save_pretrained(folder / "esm_hf")
    prefix = "encoder.sentence_encoder."
    model = {prefix + "embed_tokens.weight": torch.randn(33, 8)}
    for layer_name, shape in (("self_attn.q_proj", (8, 8)), ("self_attn.k_proj", (8, 8)),
                              ("self_attn.v_proj", (8, 8)), ("self_attn.out_proj", (8, 8)), ("fc1", (16, 8)),
                              ("fc2", (8, 16))):
        model[f"{prefix}layers.0.{layer_name}.weight"] = torch.randn(*shape)
        model[f"{prefix}layers.0.{layer_name}.bias"] = torch.zeros(shape[0])
    for norm in ("layers.0.self_attn_layer_norm", "layers.0.final_layer_norm", "emb_layer_norm_after"):
        model[f"{prefix}{norm}.weight"], model[f"{prefix}{norm}.bias"] = torch.ones(8), torch.zeros(8)
    torch.save({"model": model, "cfg": {"model": {"_name": "ESM2"}}}, folder / name)
    return folder / name


@pytest.mark.parametrize("release", [True, False])
def test_esm_note_names_the_release_a_is_or_says_the_script_takes_names_only(tmp_path: Path, release: bool) -> None:
    """convert_esm.py takes fair-esm's pretrained models by name (`--model NAME`, which it loads through the esm
    package), not a file. A named as a release gets that name and a new folder; any other A is told in words that
    the script converts releases only (no `NAME` to paste)."""
    name = "esm2_t6_8M_UR50D.pt" if release else "finetuned.pt"
    a = _esm_pair(tmp_path, name)
    code, data = run_json("diff-keys", str(a), str(tmp_path / "esm_hf"))
    assert code == 1
    note = _note(data["notes"], "fair-esm's own layout")
    if release:
        words = _given(note, "convert_esm.py")
        assert words[:2] == ["--model", "esm2_t6_8M_UR50D"] and words[2] == "--pytorch_dump_folder_path", words
        assert not (tmp_path / words[3]).exists() and words[3] == str(tmp_path / "esm2_t6_8M_UR50D-hf"), words
    else:
        assert "A's name (finetuned.pt) is none of them" in note and ", given --model, converts" in note, note
        assert not any(placeholder in note for placeholder in _PLACEHOLDERS), note


def test_sam_note_names_the_release_a_is(tmp_path: Path) -> None:
    """Segment Anything: `--model_name sam_vit_b_01ec64 ... --pytorch_dump_folder_path OUT` gives a new folder."""

    from tests.test_third_party_layouts10 import _segment_anything_state, tiny_sam_config

    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(_segment_anything_state(), path)
    tiny_sam_config(tmp_path / "sam-hf")
    code, data = run_json("diff-keys", str(path), "--model-class", "SamModel", "--config", str(tmp_path / "sam-hf"))
    assert code == 1
    words = _given(_note(data["notes"], "Segment Anything's own layout"), "convert_sam_to_hf.py")
    assert words == ["--model_name", "sam_vit_b_01ec64", "--pytorch_dump_folder_path",
                     str(tmp_path / "sam_vit_b_01ec64-hf")], words


def test_rwkv_note_names_the_file_not_repo_and_file(tmp_path: Path) -> None:
    """convert_rwkv_checkpoint_to_hf.py downloads its input (--repo_id, --checkpoint_file): `--repo_id REPO
    --checkpoint_file FILE --output_dir OUT` is now said in words, with A's file name and a new folder."""
    _rwkv4_pth(tmp_path / "RWKV-4-Pile-tiny.pth")
    config = tiny_rwkv_config(tmp_path / "rwkv")
    code, data = run_json("diff-keys", str(tmp_path / "RWKV-4-Pile-tiny.pth"), "--model-class", "RwkvForCausalLM",
                          "--config", str(config))
    assert code == 1
    note = _note(data["notes"], "RWKV-4 layout")
    assert "(A's: RWKV-4-Pile-tiny.pth)" in note and f"(such as {tmp_path / 'RWKV-4-Pile-tiny-hf'})" in note, note
    assert "does not ship" in note and not any(placeholder in note for placeholder in _PLACEHOLDERS), note


# --- 2. torch.load(path, ...) in refusals: the file as typed, and a state dict written beside it --------------------


def _snippet(line: str, start: str) -> str:
    """The Python a refusal gives from `start` through the torch.save(...) call after it, as pasted."""
    from tests.test_advice_runs import _call

    at = line.index(start)
    save = line.index("torch.save(", at)
    return line[at:save] + _call(line[save:], "torch.save")


def _pasted(code: str, cwd: Path) -> None:
    """`code` run as pasted into `python` where the user stands (the folder importable, as code of theirs is)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(cwd)})
    assert done.returncode == 0, (code, done.stderr)


_NET = ("import torch\n\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 2)\n")


@pytest.mark.parametrize("in_a_dict", [False, True])
def test_a_whole_pickled_model_gives_a_load_and_save_that_run(tmp_path: Path, in_a_dict: bool) -> None:
    """torch.save(model): "torch.load(path, weights_only=False) rebuilds the model (...), and
    torch.save(model.state_dict(), 'weights.pt')" pasted was a NameError on `path`, then on `model`, and wrote
    weights.pt where the user stood. It now loads the file as typed, takes the model (from its dict's entry), and
    writes its state dict beside the file, which weightdoctor then reads: the model's own tensors."""
    (tmp_path / "mynet.py").write_text(_NET)
    made = subprocess.run([sys.executable, "-c", (
        "import torch, mynet; torch.manual_seed(0); net = mynet.Net(); "
        f"torch.save({{'epoch': 3, 'model': net}} if {in_a_dict} else net, {ODD + '.pt'!r}); "
        "torch.save(net.state_dict(), 'reference.pt')")], cwd=tmp_path, env={**os.environ, "PYTHONPATH": "."},
        capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    from tests.test_advice_runs import _refusal

    line = _refusal(f"{ODD}.pt", tmp_path)
    code = _snippet(line, "import torch; obj = ")
    assert "'weights.pt'" not in line and "torch.load(path" not in line, line
    _pasted(code, tmp_path)
    written = tmp_path / f"{ODD}.state_dict.pt"
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    saved = torch.load(written, weights_only=True)
    assert sorted(saved) == ["fc.bias", "fc.weight"] and all(torch.equal(saved[k], reference[k]) for k in saved)
    report = json.loads(run_subprocess("inspect", written.name, "--json", cwd=tmp_path).stdout)
    assert report["num_tensors"] == 2


def test_a_yolov5_checkpoint_gives_a_load_that_runs_in_a_clone(tmp_path: Path) -> None:
    """YOLOv5: "torch.load(path, weights_only=False)['model'].float().state_dict(), and save that state dict" now
    runs pasted in a clone of ultralytics/yolov5 (here: its models.yolo module where the user stands) and writes the
    state dict beside the file; a second paste writes a second file, not over the first."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "yolo.py").write_text(
        "import torch\n\n\nclass Model(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))\n")
    made = subprocess.run([sys.executable, "-c", (
        "import torch; from models.yolo import Model; torch.manual_seed(0); m = Model().half(); "
        "torch.save({'epoch': -1, 'model': m, 'ema': None, 'optimizer': None, 'opt': {}}, 'yolov5s.pt'); "
        "torch.save(m.float().state_dict(), 'reference.pt')")], cwd=tmp_path, env={**os.environ, "PYTHONPATH": "."},
        capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    from tests.test_advice_runs import _refusal

    line = _refusal("yolov5s.pt", tmp_path)
    code = _snippet(line, "import torch; torch.save(")
    _pasted(code, tmp_path)
    saved = torch.load(tmp_path / "yolov5s.state_dict.pt", weights_only=True)
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    assert sorted(saved) == sorted(reference) and all(torch.equal(saved[k], reference[k]) for k in saved)
    again = _snippet(_refusal("yolov5s.pt", tmp_path), "import torch; torch.save(")
    assert "'yolov5s.state_dict-2.pt'" in again, again


def test_a_demucs_package_gives_a_load_that_runs(tmp_path: Path) -> None:
    """Demucs: "torch.load(path, weights_only=False)['state'] is the state dict: save it with safetensors" now is a
    load and save that run pasted (demucs importable), writing 'state' beside the file."""
    (tmp_path / "demucs").mkdir()
    (tmp_path / "demucs" / "__init__.py").write_text("")
    (tmp_path / "demucs" / "htdemucs.py").write_text("import torch\n\n\nclass HTDemucs(torch.nn.Module):\n    pass\n")
    made = subprocess.run([sys.executable, "-c", (
        "import torch; from demucs.htdemucs import HTDemucs; torch.manual_seed(0); "
        "state = {'encoder.0.conv.weight': torch.randn(48, 4, 8).half()}; "
        "torch.save({'klass': HTDemucs, 'args': (), 'kwargs': {}, 'state': state}, '955717e8-8726e21a.th'); "
        "torch.save(state, 'reference.pt')")], cwd=tmp_path, env={**os.environ, "PYTHONPATH": "."},
        capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    from tests.test_advice_runs import _refusal

    line = _refusal("955717e8-8726e21a.th", tmp_path)
    _pasted(_snippet(line, "import torch; torch.save("), tmp_path)
    saved = torch.load(tmp_path / "955717e8-8726e21a.state_dict.pt", weights_only=True)
    assert torch.equal(saved["encoder.0.conv.weight"],
                       torch.load(tmp_path / "reference.pt", weights_only=True)["encoder.0.conv.weight"])


def test_the_oldest_torch_format_gives_a_resave_that_runs(tmp_path: Path) -> None:
    """A tar of storages, tensors and pickle (PyTorch 0.1): "torch.load(path, weights_only=False) still reads it
    ...; torch.save what it returns" is now the re-save, run pasted; weightdoctor reads what it wrote."""
    import numpy as np

    from tests.test_advice_runs import _refusal
    from tests.test_third_party_layouts7 import _torch_tar

    _torch_tar(tmp_path / f"{ODD}.pth", {"fc.weight": np.ones((3, 4), np.float32), "fc.bias": np.zeros(3, np.float32)})
    line = _refusal(f"{ODD}.pth", tmp_path)
    _pasted(_snippet(line, "import torch; torch.save("), tmp_path)
    report = json.loads(run_subprocess("inspect", f"{ODD}-resaved.pth", "--json", cwd=tmp_path).stdout)
    assert sorted(t["name"] for t in report["tensors"]) == ["fc.bias", "fc.weight"], report


def test_the_safe_verdict_names_the_file_in_its_torch_load(tmp_path: Path) -> None:
    """A safe file holding no weights (XTTS' mel_stats.pth, a bare tensor): "torch.load(path, weights_only=True)
    reads it" named no file; the call now names it as typed, and runs."""
    from tests.test_advice_runs import _call, _refusal

    torch.save(torch.arange(80.0), tmp_path / f"{ODD}.pth")
    line = _refusal(f"{ODD}.pth", tmp_path)
    call = _call(line, "torch.load")
    assert call == f"torch.load({ODD + '.pth'!r}, weights_only=True)" and line.endswith(f"{call} reads it"), line
    _pasted(f"import torch; assert torch.equal({call}, torch.arange(80.0))", tmp_path)


# --- 3. snippets that need the user's own objects: built from the checkpoint's config, or the user's name marked ----


def test_the_xtts_load_builds_its_config_from_the_folders_own_and_runs(tmp_path: Path) -> None:
    """XTTS: "TTS's Xtts.load_checkpoint(config, checkpoint_dir=...)" named a `config` and an unbound method.
    The snippet now builds the config from the folder's config.json and the model from it, then loads. TTS is not
    installed here: it is run against stand-ins of the two TTS classes that record what they are given."""
    from tests.test_advice_runs import _refusal
    from tests.test_third_party_layouts17 import _xtts_folder

    folder = _xtts_folder(tmp_path / "XTTS v2")
    line = _refusal(folder.name, tmp_path)
    start = line.index("from TTS.tts.configs.xtts_config import XttsConfig")
    end = line.index("model.load_checkpoint(config, checkpoint_dir=", start)
    from tests.test_advice_runs import _call

    code = line[start:end] + _call(line[end:], "model.load_checkpoint")
    fake = tmp_path / "fake"
    (fake / "TTS" / "tts" / "configs").mkdir(parents=True)
    (fake / "TTS" / "tts" / "models").mkdir(parents=True)
    for package in ("TTS", "TTS/tts", "TTS/tts/configs", "TTS/tts/models"):
        (fake / package / "__init__.py").write_text("")
    (fake / "TTS" / "tts" / "configs" / "xtts_config.py").write_text(
        "import json\n\n\nclass XttsConfig:\n    def load_json(self, path):\n"
        "        self.loaded = json.load(open(path))\n")
    (fake / "TTS" / "tts" / "models" / "xtts.py").write_text(
        "import os, torch\n\n\nclass Xtts:\n    @classmethod\n    def init_from_config(cls, config):\n"
        "        model = cls()\n        model.config = config\n        return model\n\n"
        "    def load_checkpoint(self, config, checkpoint_dir):\n        assert config is self.config\n"
        "        state = torch.load(os.path.join(checkpoint_dir, 'model.pth'), weights_only=True)['model']\n"
        "        print(config.loaded['model'], sorted(state)[0])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(fake)})
    assert done.returncode == 0, (code, done.stderr)
    assert done.stdout.split() == ["xtts", "gpt.gpt.h.0.attn.c_attn.weight"], done.stdout


_FSDP_MODEL = (
    "import torch, torch.distributed as dist\n"
    "from torch.distributed.fsdp import FullyShardedDataParallel as FSDP\n"
    "dist.init_process_group('gloo', init_method='file://' + {rendezvous!r}, rank=0, world_size=1)\n"
    "torch.manual_seed(0)\n"
    "net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))\n"
    "torch.save(net.state_dict(), 'reference.pt')\n"
    "fsdp_model = FSDP(net, device_id=torch.device('cpu'), use_orig_params=False)\n")


def test_the_fsdp_full_state_dict_save_runs_in_a_training_script(tmp_path: Path) -> None:
    """FSDP flat parameters: "get_model_state_dict(model, options=StateDictOptions(...))" used a `model` the line
    never named as the user's and a StateDictOptions it never imported. The save now imports what it uses and names
    `fsdp_model` as the one name that is the user's: pasted after the lines that wrap the model (one gloo rank), its
    state dict and the save on rank 0 write the model's whole weights, which weightdoctor reads."""
    saved = subprocess.run([sys.executable, "-c", _FSDP_MODEL.format(rendezvous=str(tmp_path / "r1")) + (
        "torch.save({n: p.detach().clone() for n, p in fsdp_model.named_parameters()}, 'named_params.pt')\n"
        "dist.destroy_process_group()\n")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert saved.returncode == 0, saved.stderr[-2000:]
    [warning] = [w for w in json.loads(run_subprocess("inspect", "named_params.pt", "--json", cwd=tmp_path).stdout)[
        "warnings"] if "FSDP flat parameter" in w]
    assert "fsdp_model (the one name here that is yours)" in warning, warning
    start = warning.index("import torch; from torch.distributed.checkpoint.state_dict import")
    end = warning.index("; then on rank 0 alone", start)
    save = warning.index("torch.save(", end)
    from tests.test_advice_runs import _call

    pasted = warning[start:end] + "\n" + _call(warning[save:], "torch.save")
    ran = subprocess.run([sys.executable, "-c", _FSDP_MODEL.format(rendezvous=str(tmp_path / "r2")) + pasted
                          + "\ndist.destroy_process_group()\n"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert ran.returncode == 0, (pasted, ran.stderr[-2000:])
    full = torch.load(tmp_path / "full_state_dict.pt", weights_only=True)
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    assert sorted(full) == sorted(reference) and all(torch.equal(full[k], reference[k]) for k in full)
    report = json.loads(run_subprocess("inspect", "full_state_dict.pt", "--json", cwd=tmp_path).stdout)
    assert report["num_tensors"] == 4 and not any("FSDP" in w for w in report["warnings"])


def test_the_keras_weights_load_names_the_users_model_plainly(tmp_path: Path) -> None:
    """A Keras 3 .weights.h5: "model.load_weights(path) into the model built in Keras" read as if `model` were
    defined. The name is now plainly the user's (your_model, said to be the Keras model they build); its argument
    is the file as typed. Keras is not installed here: the call is argument-checked."""
    import ast

    from tests.test_advice_runs import _call, _refusal

    (tmp_path / f"{ODD}.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(504))
    line = _refusal(f"{ODD}.weights.h5", tmp_path)
    call = ast.parse(_call(line, "your_model.load_weights"), mode="eval").body
    assert isinstance(call, ast.Call) and [ast.literal_eval(arg) for arg in call.args] == [f"{ODD}.weights.h5"]
    assert "your_model being the Keras model you build with the same layers" in line, line
    assert " model.load_weights(" not in line, line


def test_litgpt_note_gives_the_checkpoint_folder_and_a_new_one(tmp_path: Path) -> None:
    """LitGPT: "`litgpt convert_from_litgpt CHECKPOINT_DIR OUT_DIR` ... from_pretrained(config folder,
    state_dict=torch.load(that file))" named no folder. The command now gives A's folder (lit_model.pth typed bare:
    the folder it is in, by its own name) and a new folder beside it, and the load names the file it writes
    (litgpt is not installed here: the words are argument-checked, as litgpt's CLI reads them, two positionals)."""
    from tests.test_third_party_layouts11 import _litgpt_state, _tiny_llama

    run = tmp_path / f"{ODD} final"
    run.mkdir()
    torch.save(_litgpt_state(_tiny_llama(tmp_path / "hf"), False), run / "lit_model.pth")
    (run / "model_config.yaml").write_text("name: tiny-llama\nn_layer: 2\nn_embd: 32\nn_head: 4\n")
    done = run_subprocess("diff-keys", "lit_model.pth", str(tmp_path / "hf"), "--json", cwd=run)
    assert done.returncode == 1, done.stderr
    note = _note(json.loads(done.stdout)["notes"], "LitGPT's own layout")
    start = note.index("litgpt convert_from_litgpt ")
    from weightdoctor.render.diff_keys import _end_of_command

    words = shlex.split(note[start:_end_of_command(note, start + len("litgpt convert_from_litgpt "))].split(
        " (the folder of", 1)[0])
    assert words[:2] == ["litgpt", "convert_from_litgpt"] and len(words) == 4, words
    assert (run / words[2]).samefile(run) and not (run / words[3]).exists(), words
    assert (run / words[3]).parent.samefile(tmp_path) and words[3] == f"../{ODD} final-hf", words
    assert f"state_dict=torch.load({os.path.join(words[3], 'model.pth')!r}, weights_only=True)" in note, note
    assert "CHECKPOINT_DIR" not in note and "OUT_DIR" not in note and "that file" not in note, note


def test_a_flair_model_gives_a_load_and_save_that_run(tmp_path: Path) -> None:
    """flair: "torch.load(path, weights_only=False)['state_dict'] is the state dict ...: save it with safetensors"
    named no file. The load and save run pasted (flair's classes importable: here a stand-in of flair.data's
    Dictionary where the user stands), writing the state dict beside the file."""
    (tmp_path / "flair").mkdir()
    (tmp_path / "flair" / "__init__.py").write_text("")
    (tmp_path / "flair" / "data.py").write_text("class Dictionary:\n    pass\n")
    made = subprocess.run([sys.executable, "-c", (
        "import torch; from flair.data import Dictionary; torch.manual_seed(0); "
        "state = {'linear.weight': torch.randn(2, 8), 'linear.bias': torch.zeros(2)}; "
        "torch.save({'state_dict': state, '__cls__': 'SequenceTagger', 'tag_dictionary': Dictionary()}, "
        f"{ODD + '.pt'!r}); torch.save(state, 'reference.pt')")], cwd=tmp_path, env={**os.environ, "PYTHONPATH": "."},
        capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    from tests.test_advice_runs import _refusal

    line = _refusal(f"{ODD}.pt", tmp_path)
    assert "this is a flair model" in line, line
    _pasted(_snippet(line, "import torch; torch.save("), tmp_path)
    saved = torch.load(tmp_path / f"{ODD}.state_dict.pt", weights_only=True)
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    assert sorted(saved) == sorted(reference) and all(torch.equal(saved[k], reference[k]) for k in saved)
