"""Fix list 19: a Trainer checkpoint-N/ whose DeepSpeed states are scanned without zero_to_fp32.py beside them,
plan-devices' offload line without --disk, the shadowed-method walk skipping tensors, folders of many empty
subfolders refused in bounded time, and diff-keys' commands ending at a comma."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.helpers import RunsAShellCommand as _RunsAShellCommand
from tests.helpers import one_error_line as _one_error_line
from tests.helpers import run_cli


def _trainer_checkpoint(folder: Path, hook: object = None) -> Path:
    """A Trainer checkpoint-N/ saved under DeepSpeed ZeRO-2 with a 16-bit model: model.safetensors beside
    global_step5/ (model and optimizer states) and `latest`, without the zero_to_fp32.py some versions copy."""
    step = folder / "global_step5"
    step.mkdir(parents=True)
    save_file({"fc.weight": torch.ones(4, 4)}, str(folder / "model.safetensors"))
    state: dict[str, object] = {"module": {"fc.weight": torch.ones(4, 4)}, "ds_version": "0.14.0"}
    if hook is not None:
        state["hook"] = hook
    torch.save(state, step / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {"zero_stage": 2}}, step / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (folder / "latest").write_text("global_step5")
    return step


def test_a_trainer_checkpoint_whose_deepspeed_states_run_code_is_refused_without_zero_to_fp32(tmp_path: Path) -> None:
    """A resume with DeepSpeed torch.loads global_step5/'s states with weights_only=False: the folder was read as
    safe (its model.safetensors clean) because they were scanned only where zero_to_fp32.py is beside them."""
    genuine = tmp_path / "genuine" / "checkpoint-5"
    _trainer_checkpoint(genuine)
    result = run_cli("inspect", str(genuine))
    assert result.exit_code == 0 and "fc.weight" in result.stdout, result.stderr

    bad = tmp_path / "bad" / "checkpoint-5"
    step = _trainer_checkpoint(bad, hook=_RunsAShellCommand())
    for command in (("inspect", str(bad)), ("plan-devices", str(bad), "--gpu", "1GB")):
        line = _one_error_line(run_cli(*command))
        assert line.startswith(f"error: {step / 'mp_rank_00_model_states.pt'}: dangerous: this DeepSpeed states "
                               "file names posix.system; "), line


def _tiny_llama_config(tmp_path: Path) -> Path:
    import json

    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "torch_dtype": "float16"}))
    return config


def test_plan_devices_without_disk_says_the_left_over_bytes_are_not_placed_not_streamed(tmp_path: Path) -> None:
    """Without --disk the offload line said "164.54 KB on disk: 164.54 KB moved to the GPU for every generated
    token" of bytes the disk line called left over with nowhere to go. They are said not placed, and only what the
    CPU holds is timed; with --disk the line is as it was."""
    config = _tiny_llama_config(tmp_path)

    def offload_line(*budgets: str) -> str:
        out = run_cli("plan-devices", str(config), "--gpu", "100KB", *budgets).stdout
        [line] = [line for line in out.splitlines() if line.startswith("offload:")]
        return line

    assert offload_line("--cpu", "10KB") == ("offload: 0 B in CPU RAM, 164.54 KB not placed (disk offload is off; "
                                             "--disk allows it)")
    mixed = offload_line("--cpu", "160KB")
    # 64 B of it is the offloaded rotary embedding's inv_freq buffer, which accelerate keeps on the GPU (plan84)
    assert mixed.startswith("offload: 73.98 KB in CPU RAM, 90.56 KB not placed (disk offload is off; --disk allows "
                            "it): 73.92 KB moved to the GPU for every generated token (≥ "), mixed
    assert offload_line("--cpu", "10KB", "--disk").startswith(
        "offload: 0 B in CPU RAM, 164.54 KB on disk: 164.48 KB moved to the GPU for every generated token (≥ ")


def _builtin_calls(name: str, call: Any) -> int:
    """How many times `call()` calls the builtin `name` (sys.setprofile sees each C call)."""
    import sys

    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "c_call" and getattr(arg, "__name__", None) == name:
            count += 1

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return count


def test_the_shadowed_method_walk_leaves_tensors_out_and_finds_what_it_found() -> None:
    """`_refuse_shadowed_methods` walked every unpickled value, a stack entry and a seen-set entry for each of a
    state dict's tensors (160 ms a 100,000-tensor legacy .bin): leaves are left out before anything is built for
    them. A mapping hiding its methods is refused as before, in a dict, a list or a tuple among the tensors."""
    from collections import OrderedDict

    import pytest

    from weightdoctor.checkpoint.pytorch_format import _refuse_shadowed_methods
    from weightdoctor.errors import UnsafePickle

    state = OrderedDict((f"layers.{i}.weight", torch.zeros(1)) for i in range(500))
    obj = {"state_dict": state, "epoch": 3, "extra": [torch.ones(1), ("a", {"b": torch.ones(1)})]}
    # Two id() calls per container entered (5 here: obj, state, the list, the tuple, its dict), none per leaf.
    assert _builtin_calls("id", lambda: _refuse_shadowed_methods(obj)) == 2 * 5

    for where in ("dict", "list", "tuple"):
        shadowing = OrderedDict((f"w{i}", torch.zeros(1)) for i in range(50))
        shadowing.__dict__["items"] = lambda: iter([])  # BUILD may set it so under weights_only
        held: Any = {"dict": {"inner": shadowing}, "list": [torch.ones(1), shadowing],
                     "tuple": (torch.ones(1), shadowing)}[where]
        with pytest.raises(UnsafePickle) as caught:
            _refuse_shadowed_methods({"model": state, "held": held})
        assert str(caught.value).startswith("an unpickled OrderedDict sets attributes ['items'] that hide its own "
                                            "methods"), str(caught.value)


def _listed_during(call: Any) -> list[str]:
    """The folders os.scandir / os.listdir were called on while `call()` ran (audit events; the hook stays
    installed for the process, so it records only while `call` runs)."""
    import sys

    listed: list[str] = []
    recording: list[bool] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if recording and event in ("os.scandir", "os.listdir"):
            listed.append(os.fsdecode(args[0]) if args and args[0] is not None else ".")

    sys.addaudithook(hook)
    recording.append(True)
    try:
        call()
    finally:
        recording.clear()
    return listed


def _beside_many_folders(folder: Path, count: int = 1500) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    for index in range(count):
        (folder / f"d{index:05d}").mkdir()
    return folder


def test_a_config_beside_thousands_of_empty_folders_is_refused_without_listing_each(tmp_path: Path) -> None:
    """A config.json beside 30,000 empty folders (a data set's classes) took ~12 s to refuse: each folder was
    listed for weights, for a shard index and for Core ML packages. Past the first 1,000 none is listed, and the
    refusal is the same."""
    import pytest

    from weightdoctor.checkpoint.reader import open_checkpoint
    from weightdoctor.errors import SourceNotFound

    folder = _beside_many_folders(tmp_path / "classes")

    def refused() -> None:
        with pytest.raises(SourceNotFound) as caught:
            open_checkpoint(str(folder))
        assert str(caught.value) == "folder holds no weight file (.safetensors, .bin, .pt, .pth, .ckpt)", caught.value

    listed = _listed_during(refused)
    late = sorted({Path(p).name for p in listed if Path(p).parent == folder and Path(p).name >= "d01000"})
    assert late == [], late[:5]
    assert len(listed) < 4000, len(listed)


def test_what_lies_past_the_first_thousand_folders_is_still_named(tmp_path: Path) -> None:
    """The bound keeps the answers: the step DeepSpeed's `latest` names and a Core ML package in coreml/ are found
    past the first 1,000 folders, and a folder of a few subfolders is answered as before."""
    run = _beside_many_folders(tmp_path / "run")
    step = run / "global_step9999"
    step.mkdir()
    torch.save({"module": {"fc.weight": torch.ones(2, 2)}}, step / "mp_rank_00_model_states.pt")
    (run / "latest").write_text("global_step9999")
    line = " ".join(run_cli("inspect", str(run)).stderr.split())
    assert f"weights are in subfolders (global_step9999/): point at one, e.g. {step} (the one DeepSpeed's `latest` " \
           "file names)" in line, line

    exported = _beside_many_folders(tmp_path / "exported")
    (exported / "coreml" / "text-generation" / "float32_model.mlpackage").mkdir(parents=True)
    line = " ".join(run_cli("inspect", str(exported)).stderr.split())
    assert "it holds Core ML packages (coreml/text-generation/float32_model.mlpackage)" in line, line

    few = tmp_path / "few"
    (few / "unet").mkdir(parents=True)
    (few / "empty").mkdir()
    (few / "config.json").write_text('{"model_type": "bert"}')
    (few / "coreml" / "unet.mlpackage").mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(few / "unet" / "model.safetensors"))
    line = " ".join(run_cli("inspect", str(few)).stderr.split())
    assert "it holds Core ML packages (coreml/unet.mlpackage)" in line, line
    assert f"weights are in subfolders (unet/): point at one, e.g. {few / 'unet'}" in line, line


def test_a_command_for_a_folder_named_with_a_trailing_comma_is_shown_whole(tmp_path: Path) -> None:
    """diff-keys shows each command of a note on a line of its own, cut at a `,` before a space (the prose's): a
    folder `run,` (shlex leaves a comma bare) was shown as `weightdoctor convert run` and the note kept `, -o ...`.
    The word is quoted, and the command shown whole runs on the folder named."""
    import shlex

    from transformers import BertConfig, BertForSequenceClassification

    from weightdoctor.paths import shell_word
    from weightdoctor.render.diff_keys import _commands_out

    assert shell_word("run,") == "'run,'" and shell_word("a,b") == "a,b" and shell_word("a b,") == "'a b,'"
    assert _commands_out(f"write it first (weightdoctor convert {shell_word('run,')} -o m.safetensors), then") == (
        "write it first (the command below), then", ["weightdoctor convert 'run,' -o m.safetensors"])

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    folder = tmp_path / "run,"
    folder.mkdir()
    config.save_pretrained(folder)
    torch.save({"model": BertForSequenceClassification(config).state_dict(), "epoch": 1}, folder / "checkpoint.pt")
    out = run_cli("diff-keys", str(folder), "--model-class", "BertForSequenceClassification").stdout
    [command] = [line for line in out.splitlines() if line.startswith("weightdoctor convert ")]
    words = shlex.split(command)
    assert words[:5] == ["weightdoctor", "convert", str(folder), "-o", f"{folder}-state-dict"], command
    assert "(the command below, a folder from_pretrained reads)" in " ".join(out.split()), out
