"""Advice weightdoctor prints, pasted and run: the Python a refusal gives, taken from the error line as a user at a
terminal of 80 columns reads it, run in a fresh interpreter where they stand, and what it wrote read back.

A snippet that names a variable it never defines (`numpy.load(path)`, `dcp_to_torch_save(folder, ...)`,
`torch.save(torch.load(path, ...), new_path)`) failed pasted with a NameError; each now names the file as typed.
"""

from __future__ import annotations

import json
import os
import shlex
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REPO_ROOT, run_cli, run_subprocess

# A folder or file name a shell and Python both quote: a space, both quotes, a `$` and a letter outside ASCII.
ODD = "run $1 'ä\""


def _refusal(source: str, cwd: Path, command: tuple[str, ...] = ("inspect",)) -> str:
    """The one error line `weightdoctor inspect SOURCE` (or `command`'s first word, SOURCE, then its other words)
    prints at an 80-column terminal (exit 2, stdout empty, the same line with --json)."""
    lines = []
    for extra in ((), ("--json",)):
        done = run_subprocess(command[0], source, *command[1:], *extra, cwd=cwd, env={"COLUMNS": "80"})
        assert done.returncode == 2 and done.stdout == "", (done.stdout, done.stderr)
        assert len(done.stderr.splitlines()) == 1, done.stderr  # one line: not wrapped, so the snippet is whole
        lines.append(done.stderr)
    assert lines[0] == lines[1]
    return lines[0].rstrip("\n")


def _call(line: str, name: str) -> str:
    """The Python call `name(...)` as the line prints it: to its closing parenthesis, quotes and escapes followed as
    Python reads them (as the renderer finds a call to set on a line of its own; the tests run what it gives)."""
    from weightdoctor.render.diff_keys import _end_of_call

    start = line.index(name + "(")
    return line[start:_end_of_call(line, start + len(name) + 1)]


def _paste(imports: str, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`code` run as pasted into `python` after the imports its dotted names need, in `cwd`."""
    done = subprocess.run([sys.executable, "-c", f"{imports}\n{code}"], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, (code, done.stderr)
    return done


def _inspected(source: str, cwd: Path) -> dict:
    done = run_subprocess("inspect", source, "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {"encoder.weight": torch.randn(4, 3, generator=generator),
            "encoder.bias": torch.randn(4, generator=generator),
            "head.weight": torch.randn(2, 4, generator=generator).half()}


def test_npz_refusal_snippet_writes_the_arrays_it_says(tmp_path: Path) -> None:
    """`numpy.load(path)` named a variable the snippet never defines: pasted, a NameError."""
    (tmp_path / ODD).mkdir()
    arrays = {"layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "layer.bias": np.ones(3, np.float16)}
    np.savez(tmp_path / ODD / "weights.npz", **arrays)
    source = f"{ODD}/weights.npz"
    line = _refusal(source, tmp_path)
    assert line.startswith(f"error: {source}: this is a NumPy .npz archive"), line
    _paste("import numpy, safetensors.numpy", _call(line, "safetensors.numpy.save_file"), tmp_path)

    from safetensors.numpy import load_file

    written = load_file(tmp_path / ODD / "weights.safetensors")  # beside the .npz, under its name
    assert sorted(written) == sorted(arrays)
    for name, array in arrays.items():
        assert written[name].dtype == array.dtype and np.array_equal(written[name], array)
    assert _inspected(f"{ODD}/weights.safetensors", tmp_path)["num_tensors"] == 2  # "writes them to read here"


def test_npy_refusal_names_the_file_numpy_loads(tmp_path: Path) -> None:
    array = np.linspace(0, 1, 6, dtype=np.float32)
    np.save(tmp_path / f"{ODD}.npy", array)
    line = _refusal(f"{ODD}.npy", tmp_path)
    loaded = _paste("import numpy", f"numpy.save('pasted.npy', {_call(line, 'numpy.load')})", tmp_path)
    assert loaded.returncode == 0 and np.array_equal(np.load(tmp_path / "pasted.npy"), array)


def _dcp_save(folder: Path, state_dict: dict[str, torch.Tensor]) -> None:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group": a single process saves as rank 0
        dcp.save(state_dict, checkpoint_id=str(folder))


@pytest.mark.parametrize("named", ["folder", "shard", "megatron-folder", "megatron-common", "run-folder"])
def test_dcp_refusal_call_writes_a_file_weightdoctor_reads(tmp_path: Path, named: str) -> None:
    """`dcp_to_torch_save(folder, 'model.pt')` pasted: a NameError on `folder`. Each message now names the DCP folder
    it means (a folder named alone, the folder of a shard named, a Megatron-Core torch_dist folder or its common.pt,
    the Megatron folder inside a run's folder), relative to where the user stands."""
    state_dict = _state_dict()
    dcp_folder = tmp_path / ODD / "iter_0000010" if named == "run-folder" else tmp_path / ODD
    _dcp_save(dcp_folder, state_dict)
    if named.startswith("megatron") or named == "run-folder":
        torch.save({"args": {"iteration": 10}}, dcp_folder / "common.pt")
        (dcp_folder / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist"}))
    source = {"folder": ODD, "shard": f"{ODD}/__0_0.distcp", "megatron-folder": ODD,
              "megatron-common": f"{ODD}/common.pt", "run-folder": ODD}[named]
    if named == "run-folder":  # NeMo-less: a folder whose subfolder is the torch_dist save
        (tmp_path / ODD / "scheduler.pt").write_bytes(b"")
    line = _refusal(source, tmp_path)
    call = _call(line, "torch.distributed.checkpoint.format_utils.dcp_to_torch_save")
    _paste("import torch.distributed.checkpoint.format_utils", call, tmp_path)

    # Beside the DCP folder it names (never a model.pt where the user stands).
    gathered = dcp_folder.with_name(f"{dcp_folder.name}.state_dict.pt")
    report = _inspected(str(gathered.relative_to(tmp_path)), tmp_path)
    assert report["num_tensors"] == 3 and report["num_params"] == 12 + 4 + 8
    written = torch.load(gathered, weights_only=True)
    assert sorted(written) == sorted(state_dict)
    assert all(torch.equal(written[k], v) and written[k].dtype == v.dtype for k, v in state_dict.items())


def test_rezipped_refusal_resave_keeps_the_input_and_reads(tmp_path: Path) -> None:
    """`torch.save(torch.load(path, weights_only=True), new_path)` pasted: a NameError on `path`. It now names the
    file and a new one beside it, and what it writes is read with every tensor as saved."""
    state_dict = _state_dict()
    (tmp_path / ODD).mkdir()
    torch.save(state_dict, tmp_path / "plain.pt")
    rezipped = tmp_path / ODD / "model.pt"
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, zipfile.ZipFile(rezipped, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    before = rezipped.read_bytes()
    line = _refusal(f"{ODD}/model.pt", tmp_path)
    assert "is compressed (deflate)" in line, line
    _paste("import torch", _call(line, "torch.save"), tmp_path)

    assert rezipped.read_bytes() == before  # a new file, never over the input
    report = _inspected(f"{ODD}/model-resaved.pt", tmp_path)
    assert report["num_tensors"] == 3
    written = torch.load(tmp_path / ODD / "model-resaved.pt", weights_only=True)
    assert all(torch.equal(written[k], v) for k, v in state_dict.items())


def test_shard_to_a_file_name_gives_a_convert_that_writes_that_file(tmp_path: Path) -> None:
    """`shard SRC -o merged.safetensors` (a folder, always) said "for a single file, use weightdoctor convert -o
    merged.safetensors": pasted, refused for its missing SOURCE, and it named another place (the output's folder
    dropped) and none of the run's --key, --dtype or --rename. The command given writes that file, as shard read and
    changed the tensors."""
    from safetensors.torch import load_file

    state_dict = _state_dict()
    torch.save({"model": state_dict, "epoch": 3}, tmp_path / f"{ODD}.pt")
    (tmp_path / "out dir").mkdir()
    args = ("shard", f"{ODD}.pt", "--key", "model", "--dtype", "fp16", "--rename", r"^encoder\.=enc.", "--max",
            "100B", "-o", "out dir/merged.safetensors", "--dry-run")
    done = run_subprocess(*args, cwd=tmp_path, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "is written as a folder holding the shards" in line]
    assert len(said) == 1, done.stderr  # on one line: the command is whole at its end
    as_json = run_subprocess(*args, "--json", cwd=tmp_path)
    assert said[0].removeprefix("warning: ") in json.loads(as_json.stdout)["warnings"]
    assert "name it 'out dir/merged/' for a folder" in said[0], said[0]
    words = shlex.split(said[0].split(", use ", 1)[1])
    assert words[0] == "weightdoctor", words
    converted = run_subprocess(*words[1:], cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr

    written = load_file(tmp_path / "out dir" / "merged.safetensors")  # one file, where shard named it
    assert sorted(written) == ["enc.bias", "enc.weight", "head.weight"]
    assert all(written[name.replace("encoder.", "enc.")].dtype == torch.float16 for name in state_dict)
    assert all(torch.equal(written[name.replace("encoder.", "enc.")], tensor.half())
               for name, tensor in state_dict.items())


def _module_folder_model(folder: Path) -> dict[str, torch.Tensor]:
    """A sentence-transformers-like folder: safetensors at its top, a module's PyTorch pickle in 2_Dense/."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(3)
    (folder / "2_Dense").mkdir(parents=True)
    save_file({"embeddings.weight": torch.randn(8, 4, generator=generator)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    dense = {"linear.weight": torch.randn(3, 4, generator=generator),
             "linear.bias": torch.randn(3, generator=generator)}
    torch.save(dense, folder / "2_Dense" / "pytorch_model.bin")
    (folder / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 4, "out_features": 3}))
    return dense


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_pickles_copied_note_gives_a_convert_that_leaves_no_pickle(tmp_path: Path, command: str) -> None:
    """A conversion to safetensors copies 2_Dense/pytorch_model.bin as it is and said "convert each on its own:
    weightdoctor convert /abs/src/2_Dense -o ...": pasted, it wrote a folder named `...` where the user stood and
    the output kept its pickle. The command given converts it over its copy, paths as the user typed them."""
    from safetensors.torch import load_file

    dense = _module_folder_model(tmp_path / ODD)
    extra = ("--max", "1KB") if command == "shard" else ()
    done = run_subprocess(command, ODD, "-o", "out put", *extra, cwd=tmp_path, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "still PyTorch pickles: 2_Dense/pytorch_model.bin" in line]
    assert len(said) == 1, done.stderr
    pasted = said[0][said[0].index("weightdoctor convert "):]  # to the end of the line, where the command ends
    words = shlex.split(pasted.removesuffix(")"))
    converted = run_subprocess(*words[1:], cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr

    assert sorted(os.listdir(tmp_path)) == sorted([ODD, "out put"])  # nothing written where the user stands
    module = tmp_path / "out put" / "2_Dense"
    assert sorted(os.listdir(module)) == ["config.json", "model.safetensors"]
    written = load_file(module / "model.safetensors")
    assert sorted(written) == sorted(dense) and all(torch.equal(written[k], v) for k, v in dense.items())
    assert "still PyTorch pickles" not in " ".join(_inspected("out put", tmp_path)["warnings"])


def test_adapter_on_a_ddp_base_gives_a_convert_of_b_that_the_adapter_fits(tmp_path: Path) -> None:
    """A PEFT adapter against a base saved from DDP (`module.` before every key): the note said "strip it from B's
    keys (weightdoctor convert B --rename '^module\\.=' -o ...)", printed as a command on its own line; pasted, it
    read a file named `B`. The command now names B as typed and a file to write, and the adapter fits that file."""
    from safetensors.torch import load_file

    from fixtures.diff_pairs import build_peft_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft: save_embedding_layers set for embed_tokens
        folders = build_peft_adapter(tmp_path / "made")
    base = load_file(folders["base"] / "model.safetensors")
    (tmp_path / ODD).mkdir()
    torch.save({f"module.{name}": tensor for name, tensor in base.items()}, tmp_path / ODD / "ddp base.pt")
    args = ("diff-keys", "made/adapter", f"{ODD}/ddp base.pt")
    done = run_subprocess(*args, cwd=tmp_path, env={"COLUMNS": "100"})
    assert done.returncode in (0, 1), done.stderr
    printed = [line for line in done.stdout.splitlines() if line.startswith("weightdoctor convert ")]
    assert len(printed) == 1, done.stdout  # on a line of its own, whole
    notes = json.loads(run_subprocess(*args, "--json", cwd=tmp_path).stdout)["notes"]
    assert any(f"({printed[0]})" in note for note in notes), notes  # the same command in --json's note
    converted = run_subprocess(*shlex.split(printed[0])[1:], cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr

    written = load_file(tmp_path / "ddp base.unwrapped.safetensors")
    assert sorted(written) == sorted(base) and all(torch.equal(written[k], v) for k, v in base.items())
    again = json.loads(run_subprocess("diff-keys", "made/adapter", "ddp base.unwrapped.safetensors", "--json",
                                      cwd=tmp_path).stdout)
    assert "LoRA (rank 4) on 5 modules, 5 of them in B with shapes that fit" in again["notes"][0], again["notes"]


@pytest.mark.parametrize(("parts", "said"), [(("image_proj", "ip_adapter"), "both read it flat"),
                                             (("id_encoder", "lora_weights"), "it reads it flat")])
def test_flat_adapter_pickle_gives_the_convert_that_writes_its_safetensors(tmp_path: Path, parts: tuple[str, str],
                                                                           said: str) -> None:
    """An IP-Adapter (PhotoMaker) saved flat in a pickle: "as a .safetensors (weightdoctor convert -o
    NAME.safetensors) ... reads it flat"; pasted, refused for its missing SOURCE. It now names the file."""
    generator = torch.Generator().manual_seed(5)
    saved = {f"{parts[0]}.proj.weight": torch.randn(8, 4, generator=generator),
             f"{parts[1]}.1.to_k.weight": torch.randn(4, 8, generator=generator)}
    (tmp_path / ODD).mkdir()
    torch.save(saved, tmp_path / ODD / "adapter.bin")
    done = run_subprocess("inspect", f"{ODD}/adapter.bin", cwd=tmp_path, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if "stored flat" in line)
    command = line.split("as a .safetensors (", 1)[1].split(f") {said}", 1)[0]
    converted = run_subprocess(*shlex.split(command)[1:], cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr

    from safetensors.torch import load_file

    written = load_file(tmp_path / ODD / "adapter.safetensors")
    assert sorted(written) == sorted(saved) and all(torch.equal(written[k], v) for k, v in saved.items())


def test_composer_checkpoint_gives_the_convert_that_strips_model(tmp_path: Path) -> None:
    """A Composer checkpoint of a HuggingFaceModel said "weightdoctor convert --strip-prefix model. writes these
    weights under the same names"; pasted, refused for its missing SOURCE (and -o). It now names both."""
    from safetensors.torch import load_file

    generator = torch.Generator().manual_seed(9)
    model = {"model.layer.weight": torch.randn(4, 3, generator=generator),
             "model.layer.bias": torch.randn(4, generator=generator)}
    (tmp_path / ODD).mkdir()
    torch.save({"state": {"model": model, "optimizers": {}, "timestamp": {}, "rank_zero_seed": 1,
                          "integrations": {"huggingface": {"model": {"config": {}}}}}, "rng": []},
               tmp_path / ODD / "ep1-ba3-rank0.pt")
    done = run_subprocess("inspect", f"{ODD}/ep1-ba3-rank0.pt", cwd=tmp_path, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if "Composer checkpoint" in line)
    command = line[line.index("; weightdoctor convert ") + 2:].split(" writes these weights under the same names")[0]
    converted = run_subprocess(*shlex.split(command)[1:], cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr

    written = load_file(tmp_path / ODD / "ep1-ba3-rank0.safetensors")
    assert sorted(written) == ["layer.bias", "layer.weight"]  # model. stripped, as Composer's export writes them
    assert all(torch.equal(written[name.removeprefix("model.")], tensor) for name, tensor in model.items())


def test_peft_adapter_plan_gives_the_base_plan_on_the_same_devices(tmp_path: Path) -> None:
    """plan-devices on a LoRA folder said "plan the base (weightdoctor plan-devices BASE ...)": pasted, refused
    ("Got unexpected extra argument(s) (...)"), and without the `...` refused again (no devices). The command now
    ends with this run's devices and dtype, and plans the base the adapter_config.json names."""
    from fixtures.diff_pairs import build_peft_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folders = build_peft_adapter(tmp_path / "made")
    base = tmp_path / ODD
    folders["base"].rename(base)
    config = json.loads((folders["adapter"] / "adapter_config.json").read_text())
    (folders["adapter"] / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": ODD}))
    args = ("plan-devices", "made/adapter", "--gpu", "1 MB", "--cpu", "2GB", "--dtype", "bf16")
    done = run_subprocess(*args, cwd=tmp_path, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if "this is a PEFT adapter" in line)
    command = line.split("plan the base (", 1)[1].split(") and add the adapter's size", 1)[0]
    json_warnings = json.loads(run_subprocess(*args, "--json", cwd=tmp_path).stdout)["warnings"]
    assert any(f"plan the base ({command})" in warning for warning in json_warnings), json_warnings
    words = shlex.split(command)
    assert words[2] == ODD and words[3:] == ["--gpu", "1 MB", "--cpu", "2GB", "--dtype", "bf16"], words
    planned = run_subprocess(*words[1:], "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    from safetensors.torch import load_file

    # The base's own weights, at the bf16 this run asked for.
    assert json.loads(planned.stdout)["weights_bytes"] == 2 * sum(
        tensor.numel() for tensor in load_file(base / "model.safetensors").values())


def test_torchscript_refusal_resave_writes_its_weights(tmp_path: Path) -> None:
    """A TorchScript archive (torch.jit.save): "torch.save(torch.jit.load(path).state_dict(), 'weights.pt')";
    pasted, a NameError on `path`. It now names the file, and a file beside it that weightdoctor reads."""
    torch.manual_seed(11)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    (tmp_path / ODD).mkdir()
    torch.jit.save(torch.jit.script(model), str(tmp_path / ODD / "model.pt"))
    line = _refusal(f"{ODD}/model.pt", tmp_path)
    assert "this is a TorchScript archive" in line, line
    _paste("import torch", _call(line, "torch.save"), tmp_path)

    report = _inspected(f"{ODD}/model-state-dict.pt", tmp_path)
    assert report["num_tensors"] == 4
    written = torch.load(tmp_path / ODD / "model-state-dict.pt", weights_only=True)
    assert all(torch.equal(written[name], tensor) for name, tensor in model.state_dict().items())


def test_plan_devices_smallest_changes_pasted_give_the_verdicts_they_promise(tmp_path: Path) -> None:
    """Each "smallest change" plan-devices prints, its flag added to the same command as printed, plans as said:
    --dtype fits on the GPUs, --cpu offloads to CPU RAM, --disk offloads to disk, N more GPUs fit."""
    from tests.test_ux17 import LLAMA_13B

    (tmp_path / ODD).mkdir()
    (tmp_path / ODD / "config.json").write_text(json.dumps(LLAMA_13B))
    gpus = ["--gpu", "12GiB", "--gpu", "12GiB"]
    done = run_subprocess("plan-devices", ODD, *gpus, cwd=tmp_path, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    changes = [line.split("smallest change: ", 1)[1] for line in done.stdout.splitlines()
               if "smallest change: " in line]
    assert len(changes) == 5, done.stdout
    promised = {"--dtype": "fits-on-gpus", "--cpu": "needs-cpu-offload", "--disk": "needs-disk-offload"}
    for change in changes:
        if change.startswith("--gpu "):  # "--gpu 13GiB for each of the 2 GPUs (instead of 12.00 GiB) at fp16"
            size = change.split()[1]
            followed = run_cli("plan-devices", str(tmp_path / ODD), "--gpu", size, "--gpu", size, "--json")
            assert json.loads(followed.stdout)["verdict"] == "fits-on-gpus", (change, followed.stdout[:300])
            continue
        if change.startswith("--"):
            flags = shlex.split(change.split(":")[0].removesuffix(" fits on the 2 GPUs"))
            verdict = promised[flags[0]]
        else:  # "1 more 12.00 GiB GPU (3 in all) at fp16"
            assert change.startswith("1 more 12.00 GiB GPU (3 in all)"), change
            flags, verdict = ["--gpu", "12GiB"], "fits-on-gpus"
        followed = run_cli("plan-devices", str(tmp_path / ODD), *gpus, *flags, "--json")  # in-process: faster
        assert json.loads(followed.stdout)["verdict"] == verdict, (change, followed.stdout[:300])


def test_architectures_written_as_a_list_as_said_is_accepted(tmp_path: Path) -> None:
    """"write it as a list, ["LlamaForCausalLM"]": the value printed, put into config.json, is what plan-devices
    then builds."""
    folder = tmp_path / ODD
    folder.mkdir()
    config = {"model_type": "llama", "architectures": "LlamaForCausalLM", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256}
    (folder / "config.json").write_text(json.dumps(config))
    refused = run_subprocess("plan-devices", ODD, "--gpu", "1GB", cwd=tmp_path, env={"COLUMNS": "80"})
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    value = refused.stderr.split("write it as a list, ", 1)[1].split(" (plan-devices:", 1)[0]
    (folder / "config.json").write_text(json.dumps({**config, "architectures": json.loads(value)}))
    planned = run_subprocess("plan-devices", ODD, "--gpu", "1GB", "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["verdict"] == "fits-on-gpus"


def test_fsdp_folder_merge_command_writes_the_model(tmp_path: Path) -> None:
    """accelerate's save_state under FSDP (pytorch_model_fsdp_0/ beside the training state): the printed
    `accelerate merge-weights FOLDER FOLDER.merged`, run with accelerate's own CLI, writes a model.safetensors that
    holds the model's tensors (the output was `OUTDIR` before advice3)."""
    import shutil

    from safetensors.torch import load_file

    state_dict = _state_dict()
    (tmp_path / ODD).mkdir()
    _dcp_save(tmp_path / ODD / "pytorch_model_fsdp_0", {"model": state_dict})
    torch.save({"step": 1}, tmp_path / ODD / "scheduler.bin")
    line = _refusal(ODD, tmp_path)
    command = line.split("(FSDP's sharded state dict): ", 1)[1].split(" writes them as one model.safetensors")[0]
    words = shlex.split(command)
    assert words[:2] == ["accelerate", "merge-weights"] and words[-1] == f"{ODD}.merged", words
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate is not None
    merged = subprocess.run([accelerate, *words[1:]], capture_output=True, text=True, cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    written = load_file(tmp_path / f"{ODD}.merged" / "model.safetensors")
    assert sorted(written) == sorted(state_dict)
    assert all(torch.equal(written[name], tensor) for name, tensor in state_dict.items())


def test_gzip_refusal_gunzip_command_runs_in_bash(tmp_path: Path) -> None:
    """"decompress it (gunzip -k my model's.pth.gz)": the name unquoted, bash read an unterminated quote (a space
    alone split it into two files). Run by bash as printed, it now leaves the checkpoint weightdoctor reads."""
    import gzip

    raw = tmp_path / "raw.pth"
    torch.save(_state_dict(), raw)
    (tmp_path / ODD).mkdir()
    (tmp_path / ODD / "model's v1.pth.gz").write_bytes(gzip.compress(raw.read_bytes()))
    line = _refusal(f"{ODD}/model's v1.pth.gz", tmp_path)
    command = line.split("decompress it (", 1)[1].split(") and point weightdoctor at the file it holds", 1)[0]
    ran = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, (command, ran.stderr)
    assert (tmp_path / ODD / "model's v1.pth").read_bytes() == raw.read_bytes()
    assert _inspected(f"{ODD}/model's v1.pth", tmp_path)["num_tensors"] == 3


@pytest.mark.parametrize(("name", "data", "call"), [
    ("model.keras", None, "keras.saving.load_model"),
    ("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(64), "model.load_weights"),
    ("tf_model.h5", b"\x89HDF\r\n\x1a\n" + bytes(64), "h5py.File"),
    ("model.onnx", b"\x08\x07\x12\x07pytorch", "onnx.load"),
    ("model.ort", b"\x10\x00\x00\x00ORTM" + b"\0" * 24, "onnxruntime.InferenceSession"),
    ("64-8bits.tflite", b"\x1c\x00\x00\x00TFL3" + b"\0" * 56, "tf.lite.Interpreter"),
    ("model.bin", struct.pack("<iid", 793712314, 12, 0.05) + bytes(range(256)) * 8, "fasttext.load_model"),
])
def test_foreign_format_calls_name_the_file_from_where_the_user_stands(tmp_path: Path, name: str, data: bytes | None,
                                                                       call: str) -> None:
    """keras.saving.load_model('model.keras') and the like named the file alone: pasted anywhere but in its folder,
    no file. Their libraries are not installed here, so what is checked is the argument they are given: evaluated as
    Python where the user stands, it is the file refused."""
    import ast

    folder = tmp_path / ODD
    folder.mkdir()
    if data is None:  # a Keras 3 archive: a zip with its metadata and config
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
            archive.writestr("config.json", json.dumps({"module": "keras", "class_name": "Sequential"}))
            archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(504))
    else:
        (folder / name).write_bytes(data)
    line = _refusal(f"{ODD}/{name}", tmp_path)
    argument = _call(line, call).split("(", 1)[1].rsplit(")", 1)[0].removeprefix("model_path=")
    assert (tmp_path / ast.literal_eval(argument)).samefile(folder / name), argument


@pytest.mark.parametrize("named", ["step", "model-states", "zero"])
def test_universal_checkpoint_gather_snippet_writes_the_parameters(tmp_path: Path, named: str) -> None:
    """A DeepSpeed universal checkpoint: "gather them with torch.save({...} for p in Path('zero').iterdir() ...},
    'model.pt')"; pasted where the user stands (not inside the step folder), no folder `zero` (FileNotFoundError).
    It now names the zero/ folder as typed, and writes every parameter's fp32 value beside the step folder."""
    from tests.test_third_party_layouts5 import _UNIVERSAL_PARAMETERS, _universal_checkpoint

    step = _universal_checkpoint(tmp_path / ODD, zero3=True)
    source = {"step": step, "model-states": step / "mp_rank_00_model_states.pt", "zero": step / "zero"}[named]
    line = _refusal(str(source.relative_to(tmp_path)), tmp_path)
    _paste("import pathlib, torch", _call(line, "torch.save"), tmp_path)

    # Written beside the step folder, not over a model.pt where the user stands.
    gathered = step.with_name(f"{step.name}.state_dict.pt")
    assert not (tmp_path / "model.pt").exists()
    written = torch.load(gathered, weights_only=True)
    assert {name: tuple(tensor.shape) for name, tensor in written.items()} == {
        name: tuple(shape) for name, shape in _UNIVERSAL_PARAMETERS.items()}
    assert all(torch.equal(written[name], torch.load(step / "zero" / name / "fp32.pt")["param"]) for name in written)
    assert _inspected(str(gathered.relative_to(tmp_path)), tmp_path)["num_tensors"] == len(_UNIVERSAL_PARAMETERS)


def test_protocol_1_legacy_file_resave_writes_a_file_weightdoctor_reads(tmp_path: Path) -> None:
    """A legacy torch.save of pickle protocol 1: "torch.load(path, weights_only=False) reads a protocol 1 file ...;
    torch.save what it returns with the defaults" named no file; the call printed now does it, beside the input."""
    state_dict = _state_dict()
    (tmp_path / ODD).mkdir()
    torch.save(state_dict, tmp_path / ODD / "old.pt", pickle_protocol=1, _use_new_zipfile_serialization=False)
    line = _refusal(f"{ODD}/old.pt", tmp_path)
    assert "pickled with protocol 0 or 1" in line, line
    _paste("import torch", _call(line[line.index("torch.save(torch.load("):], "torch.save"), tmp_path)

    assert _inspected(f"{ODD}/old-resaved.pt", tmp_path)["num_tensors"] == 3
    written = torch.load(tmp_path / ODD / "old-resaved.pt", weights_only=True)
    assert all(torch.equal(written[name], tensor) for name, tensor in state_dict.items())


@pytest.mark.parametrize("named", ["file", "folder", "split-part", "split-folder"])
def test_gguf_from_pretrained_names_the_folder_that_holds_the_file(tmp_path: Path, named: str) -> None:
    """"from_pretrained(folder, gguf_file='m.gguf')": `folder` pasted was a NameError. The gguf package is not
    installed here, so what is checked is what transformers is given: the folder as typed, joined with gguf_file
    where the user stands, is the GGUF file (for a split one, the file the printed llama-gguf-split --merge, whose
    first part is the one on disk, writes there)."""
    import ast

    from fixtures.gguf_files import split_gguf

    folder = tmp_path / ODD
    folder.mkdir()
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    split = named.startswith("split")
    names = [f"m-0000{part}-of-00002.gguf" for part in (1, 2)] if split else ["model.Q4_K_M.gguf"]
    if split:  # the parts as gguf-split writes them (split.no, split.count, split.tensors.count)
        split_gguf(folder, "m", {}, [], 2)
    else:
        (folder / names[0]).write_bytes(header)
    source = ODD if named.endswith("folder") else f"{ODD}/{names[0]}"
    if named == "split-folder":
        # A folder of one split set's parts is read as the set (gguf6): its note says what transformers needs.
        done = run_subprocess("inspect", source, "--json", cwd=tmp_path, env={"COLUMNS": "80"})
        assert done.returncode == 0, done.stderr
        [line] = [w for w in json.loads(done.stdout)["warnings"] if "llama-gguf-split" in w]
    else:
        # A GGUF file is read by inspect: convert, which does not take one, says what reads it.
        command = ("inspect",) if named.endswith("folder") else ("convert", "-o", "out.safetensors")
        line = _refusal(source, tmp_path, command)
    call = ast.parse(_call(line, "from_pretrained"), mode="eval").body
    assert isinstance(call, ast.Call)
    given = os.path.join(ast.literal_eval(call.args[0]), ast.literal_eval(call.keywords[0].value))
    if not split:
        assert (tmp_path / given).samefile(folder / names[0]), given
        return
    merge = shlex.split(line.split("llama-gguf-split ", 1)[1].split(" joins them into one file", 1)[0])
    assert merge[0] == "--merge" and (tmp_path / merge[1]).samefile(folder / names[0]), merge
    assert os.path.normpath(merge[2]) == os.path.normpath(given) == f"{ODD}/m.gguf", (merge, given)


@pytest.mark.parametrize("script", [True, False])
def test_zero3_placeholders_name_the_zero_to_fp32_run_of_this_folder(tmp_path: Path, script: bool) -> None:
    """A ZeRO-3 model states file (placeholders): "(python zero_to_fp32.py CHECKPOINT_DIR OUTPUT)" ran only inside
    the run folder and named no folder. DeepSpeed is not installed here, so what is checked is what the command is
    given: the script beside the step (or DeepSpeed's module), the run folder and --tag of this step, as typed."""
    run = tmp_path / ODD
    step = run / "global_step5"
    step.mkdir(parents=True)
    module = {f"layer.{i}.dense.weight": torch.empty(0) for i in range(3)}
    torch.save({"module": module}, step / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, step / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    if script:
        (run / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    line = _refusal(f"{ODD}/global_step5/zero_pp_rank_0_mp_rank_00_model_states.pt", tmp_path)
    words = shlex.split(line.split("beside the global_step folders (", 1)[1].split("), then read that", 1)[0])
    runs = [*words[:2]] if script else [*words[:3]]
    assert runs == (["python", f"{ODD}/zero_to_fp32.py"] if script else
                    ["python", "-m", "deepspeed.utils.zero_to_fp32"]), words
    rest = words[len(runs):]
    assert (tmp_path / rest[0]).samefile(run) and rest[2:] == ["--tag", "global_step5", "--safe_serialization"], words
    assert rest[1] == f"{ODD}.fp32" and not (tmp_path / rest[1]).exists(), words  # a new folder beside the run
