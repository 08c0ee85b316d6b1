"""Small helpers for tests: running the CLI in-process with stdout and stderr kept apart."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from weightdoctor.cli import app

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_mutation_fuzz() -> Any:
    """scripts/mutation_fuzz.py as a module (the hostile tests' fuzzer), registered as `mutation_fuzz`, since its
    classes name their module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mutation_fuzz", REPO_ROOT / "scripts" / "mutation_fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_fuzz"] = module
    spec.loader.exec_module(module)
    return module


def run_cli(*args: str, runner: CliRunner | None = None) -> Result:
    """Run `weightdoctor ARGS` in-process; `result.stdout` and `result.stderr` are separate."""
    return (runner or CliRunner()).invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_json(*args: str) -> tuple[int, Any]:
    result = run_cli(*args, "--json")
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def json_report(*args: str) -> dict[str, Any]:
    """The `--json` report of a command that exits 0 or 1 (a verdict, not a refusal)."""
    result = run_cli(*args, "--json")
    assert result.exit_code in (0, 1), result.stderr or result.stdout
    return json.loads(result.stdout)


def redirect_proc_reads(monkeypatch: Any, files: dict[str, str]) -> None:
    """The memory guard's reads of /proc and /sys give `files` (path -> text); any other of them is absent."""
    import io

    from weightdoctor.checkpoint import safetensors_format

    def redirected(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str) and file.startswith(("/proc/", "/sys/")):
            if file not in files:
                raise FileNotFoundError(file)
            return io.StringIO(files[file])
        return open(file, *args, **kwargs)  # noqa: SIM115

    monkeypatch.setattr(safetensors_format, "open", redirected, raising=False)


def record_calls(monkeypatch: Any, owner: Any, name: str) -> list[Any]:
    """Replace `owner.name` (a one-argument function) for the test with one that records each argument and calls
    the original: the list of arguments, to count how often a check ran or what it was given."""
    original = getattr(owner, name)
    seen: list[Any] = []

    def recording(value: Any) -> Any:
        seen.append(value)
        return original(value)

    monkeypatch.setattr(owner, name, recording)
    return seen


def write_diffusers_flux_transformer(folder: Path, tensors: dict[str, Any]) -> Path:
    """A diffusers FluxTransformer2DModel folder (`save_pretrained`'s file names; a config naming the class only)
    holding `tensors`."""
    from safetensors.torch import save_file

    folder.mkdir()
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel"}))
    return folder


def run_subprocess(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run `python -m weightdoctor ARGS` in a fresh interpreter (for import and exit-code checks)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "weightdoctor", *map(str, args)],
        capture_output=True, text=True, env=full_env, cwd=kwargs.pop("cwd", REPO_ROOT), **kwargs,
    )


def flip_a_bit_in_the_third_copy(monkeypatch: Any) -> dict[str, int]:
    """Make `byte_copy.copy_range` flip the last bit it copies on its third call (a disk or copy fault).

    Returns the call counter: set `["n"] = 0` to have the next run corrupted again.
    """
    from weightdoctor.writers import byte_copy

    real_copy = byte_copy.copy_range
    calls = {"n": 0}

    def copy_then_flip_a_bit(src: int, dst: int, src_offset: int, dst_offset: int, length: int) -> None:
        real_copy(src, dst, src_offset, dst_offset, length)
        calls["n"] += 1
        if calls["n"] == 3 and length:
            byte = os.pread(src, 1, src_offset + length - 1)
            os.pwrite(dst, bytes([byte[0] ^ 0x01]), dst_offset + length - 1)

    monkeypatch.setattr(byte_copy, "copy_range", copy_then_flip_a_bit)
    return calls


def copy_example(tmp_path: Path) -> Path:
    """A copy of the tiny BERT example folder (config.json + model.safetensors) under `tmp_path`, to be changed."""
    folder = tmp_path / "bert"
    shutil.copytree(REPO_ROOT / "fixtures" / "example", folder)
    return folder


def restore_rebound_fakes(fakes: dict[str, Any], reals: dict[str, Any]) -> None:
    """Give the real function back wherever a module bound one of `fakes` by name (`from huggingface_hub import
    hf_hub_download`, run while a test had it monkeypatched): a module first imported during the test (transformers'
    hub helpers) kept the fake after monkeypatch restored the original's own attribute."""
    import sys

    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None) or {}
        for attribute, value in list(namespace.items()):
            for name, fake in fakes.items():
                if value is fake:
                    setattr(module, attribute, reals[name])


class RunsAShellCommand:
    """An object whose pickle calls os.system (a payload for the security tests; nothing here unpickles it)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, ("echo the payload ran",)


def one_error_line(result: Any) -> str:
    """The one non-empty stderr line of a command that exited 2 with nothing on stdout."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and result.stdout == "" and len(lines) == 1, (result.stdout, result.stderr)
    return lines[0]


def save_tiny_bert(folder: Path) -> dict[str, Any]:
    """A seeded two-layer BertForSequenceClassification saved by save_pretrained; its state dict returned."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(folder)
    return model.state_dict()


def write_legacy_save_with_frame_past_stop(path: Path, sentinel: Path, *, nested: bool = False) -> None:
    """A legacy (non-zip) torch.save of {"w": ones(3)} whose magic-number pickle opens a FRAME running 7 bytes past
    its STOP into the next pickle's bytes value, which hides a protocol-less STACK_GLOBAL call of posix.system that
    touches `sentinel`. pickle.load of the file reads on after the STOP (the genuine checkpoint); of a stream without
    peek (io.BytesIO) after the frame, and runs the call. `nested`: inside the outer frame a second FRAME ends at the
    STOP (a walk keeping only the last frame's end saw nothing wrong)."""
    import io
    import pickle
    import struct

    import torch

    saved = io.BytesIO()
    torch.save({"w": torch.ones(3)}, saved, _use_new_zipfile_serialization=False)
    magic, version = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2)
    assert saved.getvalue().startswith(magic + version)
    command = f"touch '{sentinel}'".encode()
    hidden = b"\x8c\x05posix\x8c\x06system\x93\x8c" + bytes([len(command)]) + command + b"\x85R."
    opening = b"\x80\x02B" + struct.pack("<I", len(hidden))
    inner = b"\x95" + struct.pack("<Q", len(magic) - 2) + magic[2:] if nested else magic[2:]
    framed = b"\x80\x04\x95" + struct.pack("<Q", len(inner) + len(opening)) + inner
    path.write_bytes(framed + opening + hidden + b"0M\xe9\x03." + saved.getvalue()[len(magic + version):])


def runs_when_loaded_from_memory(path: Path, sentinel: Path) -> bool:
    """Whether torch.load(io.BytesIO(the file's bytes), weights_only=False), in a child process, touches `sentinel`."""
    subprocess.run([sys.executable, "-c", f"import io, torch; data = open({str(path)!r}, 'rb').read(); "
                    "torch.load(io.BytesIO(data), weights_only=False)"], capture_output=True, timeout=120)
    return sentinel.exists()


def write_sparse_float_safetensors(path: Path, *counts: int) -> Path:
    """A safetensors file of float32 tensors a.weight, b.weight, ... of `counts` elements, their data a hole (a
    file that claims gigabytes and takes none of the disk)."""
    header, at = {}, 0
    for index, count in enumerate(counts):
        header[f"{'abcdefgh'[index]}.weight"] = {"dtype": "F32", "shape": [count], "data_offsets": [at, at + 4 * count]}
        at += 4 * count
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        out.truncate(8 + len(raw) + at)
    return path


def fp8_block_state_dict(state_dict: dict[str, Any], quantized: Any) -> dict[str, Any]:
    """FineGrainedFP8's layout (`quant_method: fp8`, `weight_block_size: [128, 128]`): each weight whose name
    `quantized(name)` accepts in float8_e4m3fn with its block scales as `weight_scale_inv` (ones), the rest in
    bfloat16."""
    import torch

    out: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        if quantized(name):
            out[name] = tensor.to(torch.float8_e4m3fn)
            rows, cols = tensor.shape
            out[name.removesuffix("weight") + "weight_scale_inv"] = torch.ones((rows + 127) // 128, (cols + 127) // 128)
        else:
            out[name] = tensor.to(torch.bfloat16).contiguous()
    return out


def train_tiny_gpt2(output_dir: Path, max_steps: int) -> Any:
    """A real transformers Trainer run of a 1-layer GPT-2 on CPU, saving checkpoint-N/ after every step into
    `output_dir` (model.safetensors, optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json,
    training_args.bin); the Trainer is returned (its save_model writes the final model)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=16)

    class Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = torch.arange(8) % 50
            return {"input_ids": ids, "labels": ids}

    args = transformers.TrainingArguments(output_dir=str(output_dir), save_strategy="steps", save_steps=1,
                                          max_steps=max_steps, per_device_train_batch_size=2, report_to=[],
                                          use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args, train_dataset=Tokens())
    trainer.train()
    return trainer


def write_quantized_bert(folder: Path, modules: tuple[str, ...], how: str = "gptq",
                         quantization_config: Any = None) -> Path:
    """A seeded tiny BERT saved with the weights of `modules` (e.g. "attention.self.query") re-saved as GPTQ packs
    them (qweight / qzeros / scales / g_idx in place of `weight`: AutoGPTQ's layout) or, `how="bnb8"`, as
    bitsandbytes 8-bit stores them (int8 weight + SCB + weight_format); config.json holds `quantization_config`
    where one is given (None: none, as TheBloke's 2023 AutoGPTQ repos)."""
    import torch
    from safetensors.torch import save_file

    from fixtures.build import build_bert

    model = build_bert()
    tensors: dict[str, Any] = {}
    for name, value in model.state_dict().items():
        if not (name.endswith(".weight") and any(f".{m}.weight" in name for m in modules)):
            tensors[name] = value.contiguous()
            continue
        stem = name[: -len("weight")]
        rows, cols = value.shape
        if how == "gptq":
            tensors[stem + "qweight"] = torch.zeros(cols // 8, rows, dtype=torch.int32)
            tensors[stem + "qzeros"] = torch.zeros(1, rows // 8, dtype=torch.int32)
            tensors[stem + "scales"] = torch.ones(1, rows, dtype=torch.float16)
            tensors[stem + "g_idx"] = torch.zeros(cols, dtype=torch.int32)
        else:
            scale = value.abs().amax(dim=1).clamp(min=1e-8)
            tensors[name] = torch.round(value / scale[:, None] * 127).to(torch.int8)
            tensors[stem + "SCB"] = scale * 127
            tensors[stem + "weight_format"] = torch.tensor(0, dtype=torch.uint8)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    config = model.config.to_dict()
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# A child process that imports `{setup}`, then torch.loads (weights_only=False) or runs weightdoctor's inspect on a
# file, and prints the JSON of `{probe}`: whether loading ran what the file's pickle names (a canary, such as a
# library's shared state filled), checked where nothing of the test's own process is touched.
_CANARY_CHILD = """
import json, sys
{setup}
if sys.argv[1] == "torch":
    import torch
    try:
        torch.load(sys.argv[2], weights_only=False)
    except Exception:
        pass
else:
    from typer.testing import CliRunner
    from weightdoctor.cli import app
    print(CliRunner().invoke(app, ["inspect", sys.argv[2]]).stderr.strip(), file=sys.stderr)
print(json.dumps({probe}))
"""


def run_canary_child(setup: str, probe: str, mode: str, path: Path) -> dict[str, Any]:
    """What the canary `probe` (a Python expression giving a dict) reads in a fresh process after `mode` ("torch":
    torch.load(weights_only=False); anything else: `weightdoctor inspect`) read `path`, with `setup` run first.
    accelerate's environment variables are left out, so its state starts empty."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    script = _CANARY_CHILD.format(setup=setup, probe=probe)
    done = subprocess.run([sys.executable, "-c", script, mode, str(path)], capture_output=True, text=True,
                          timeout=300, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


# A process's own peak resident memory in KB, as a Python expression: VmHWM, not ru_maxrss, which Linux carries
# across exec, so a child of a pytest process that once held 800 MB reported 830 MB after holding 11 MB.
PEAK_KB_EXPRESSION = ("int(next(line.split()[1] for line in open('/proc/self/status') "
                      "if line.startswith('VmHWM')))")


def pickle_loads_peak_kb(path: Path) -> int:
    """The peak resident memory (KB) of a fresh process that runs `pickle.loads` on `path`'s bytes: what a hostile
    pickle costs the loader that trusts it (run only on files built to exhaust memory, never to run code)."""
    code = f"import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read()); print({PEAK_KB_EXPRESSION})"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout)


def torch_zip_with_data_pkl(tmp_path: Path, name: str, data_pkl: bytes) -> Path:
    """A torch.save archive `tmp_path/NAME.pt` whose data.pkl is `data_pkl` (stored, as torch writes its records):
    a hand-made pickle in the container torch.load and weightdoctor read."""
    import zipfile

    import torch

    source, target = tmp_path / f"{name}_source.pt", tmp_path / f"{name}.pt"
    torch.save({}, source)
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
        for info in archive.infolist():
            out.writestr(info.filename.replace(f"{name}_source/", f"{name}/"),
                         data_pkl if info.filename.endswith("data.pkl") else archive.read(info.filename))
    return target


# A child that resets its peak resident set (VmHWM) once torch and the commands are imported, runs `weightdoctor`
# with its arguments, and writes what its peak rose by, in MiB, on stderr's last line (`peak rise MiB N`), however
# the command ends (os._exit, SystemExit or a return: a traceback is printed first and exits 3). Every weightdoctor
# module (and the Rich modules the commands import lazily) is imported before the reset: a module imported after it
# is compiled from source where no .pyc was written (PYTHONDONTWRITEBYTECODE=1, a fresh clone), and that compile's
# memory counted toward the command's peak (test_memory3's --values bound failed once in a clean clone's whole run).
PEAK_RISE_CHILD = """
import importlib, os, pkgutil, sys
import torch, safetensors, weightdoctor, weightdoctor.cli, weightdoctor.diff_keys
for module in pkgutil.walk_packages(weightdoctor.__path__, "weightdoctor."):
    importlib.import_module(module.name)
import rich.console, rich.live, rich.progress, rich.table, safetensors.torch
from weightdoctor.entry import main
def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")
start = status("VmRSS")
real_exit = os._exit
def reported_exit(code):
    sys.stderr.write("\\npeak rise MiB %d\\n" % ((status("VmHWM") - start) // 1024))
    sys.stderr.flush()
    real_exit(code)
os._exit = reported_exit
sys.argv = ["weightdoctor"] + sys.argv[1:]
try:
    main()
except SystemExit as stop:
    reported_exit(stop.code if isinstance(stop.code, int) else 1)
except BaseException:
    import traceback
    traceback.print_exc()
    reported_exit(3)
reported_exit(0)
"""


def peak_rise_mib(*args: str | Path) -> tuple[int, str]:
    """Run `weightdoctor ARGS` in a `PEAK_RISE_CHILD` (stdout UTF-8); by how many MiB its peak resident set rose
    once torch and the commands were imported, and its stdout. The command must exit 0."""
    done = subprocess.run([sys.executable, "-c", PEAK_RISE_CHILD, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == 0, done.stderr
    line = [line for line in done.stderr.splitlines() if line.startswith("peak rise MiB")][-1]
    return int(line.split()[-1]), done.stdout


def stack_limit_of(mib: int) -> Callable[[], None]:
    """A `preexec_fn` that sets a child's soft stack limit (`ulimit -s`) to `mib` MiB, the stack glibc gives each
    thread it starts (libgomp's OpenMP workers among them)."""
    import resource

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (mib << 20, resource.getrlimit(resource.RLIMIT_STACK)[1]))

    return set_limit


def hard_stack_limit_below(mib: int) -> bool:
    """Whether this process's hard stack limit is below `mib` MiB (no child can be given such stacks then)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
    return hard != resource.RLIM_INFINITY and hard < (mib << 20)


def peft_refuses_grouped_conv() -> bool:
    """Whether the installed peft refuses OFT and AdaLoRA on a Conv2d with groups > 1 (0.22 and later; 0.21 built,
    saved and loaded them)."""
    from importlib.metadata import version

    major, minor = (int(part) for part in version("peft").split(".")[:2])
    return (major, minor) >= (0, 22)


def peft_adapter_on_grouped_convs(model: Any, config: Any, folder: Path) -> Path:
    """`get_peft_model(model, config).save_pretrained(folder)`, the files peft 0.21 wrote of an OFT / AdaLoRA on a
    grouped convolution also where the installed peft refuses to build one: its Conv2d layers read as one group while
    peft builds its layers (OFT and AdaLoRA size them by in_channels and the kernel, never by groups), then put back."""
    import torch
    from peft import get_peft_model

    grouped = {conv: conv.groups for conv in model.modules() if isinstance(conv, torch.nn.Conv2d) and conv.groups > 1}
    # LoRA's and IA3's layers do read groups (LoRA's lora_B is grouped as its base): only OFT's and AdaLoRA's are read
    # as one group, and only where peft refuses them.
    refused = peft_refuses_grouped_conv() and getattr(config.peft_type, "value", config.peft_type) in ("OFT", "ADALORA")
    for conv in grouped if refused else ():
        conv.groups = 1
    try:
        get_peft_model(model, config).save_pretrained(str(folder))
    finally:
        for conv, groups in grouped.items():
            conv.groups = groups
    return folder


def bytes_loaded_by_forward(model: Any, inputs: Any) -> int:
    """The bytes accelerate's hooks copy to an execution device (anything but "meta") while `model`, dispatched with
    offload hooks, runs one forward on `inputs`: what a real forward loads, to hold plan-devices' figures to."""
    import accelerate.hooks as hooks
    import torch

    loaded = [0]
    original = hooks.set_module_tensor_to_device

    def counting(module: Any, name: str, device: Any, value: Any = None, **kwargs: Any) -> Any:
        if value is not None and str(device) != "meta":
            loaded[0] += value.numel() * value.element_size()
        return original(module, name, device, value=value, **kwargs)

    hooks.set_module_tensor_to_device = counting
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        hooks.set_module_tensor_to_device = original
    return loaded[0]


def folder_refusals(folder: Path) -> list[str]:
    """What `inspect FOLDER` and `plan-devices FOLDER --gpu 1GB` each said when refusing a folder: one line on
    stderr, nothing on stdout, exit 2, no traceback and not the generic "several weight files" (whitespace folded)."""
    said: list[str] = []
    for command in (("inspect", str(folder)), ("plan-devices", str(folder), "--gpu", "1GB")):
        result = run_cli(*command)
        assert result.exit_code == 2, (command, result.stdout)
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
        line = " ".join(result.stderr.split())
        assert "Traceback" not in line and "several weight files" not in line, line
        said.append(line)
    return said



def refused_line(path: Path, *args: str, words: tuple[str, ...] = ()) -> str:
    """The one line `weightdoctor ARGS` prints refusing `path` (exit 2, nothing on stdout, no traceback), which
    starts `error: PATH: ` and holds each of `words`."""
    result = run_cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: "), line
    for word in words:
        assert word in line, (word, line)
    return line
