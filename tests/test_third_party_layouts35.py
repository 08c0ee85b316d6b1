"""A thirty-fifth round: PyTorch's own ways of saving a model, and two runtimes' model files, that no earlier round
covered, each written by torch itself (2.13 here) or as the runtime's own export code writes it, and run through the
commands that apply.

torch.nn.utils.prune keeps a pruned `weight` as `weight_orig` (a parameter) and `weight_mask` (a buffer) until
prune.remove; the old spectral_norm hook as `weight_orig`, `weight_u`, `weight_v`; the old weight_norm hook as
`weight_g`, `weight_v`; torch.nn.utils.parametrize (parametrizations.spectral_norm, weight_norm, torch.ao.pruning's
sparsifiers) as `parametrizations.weight.original` (`original0`, `original1`) beside its parametrization's state. A
model without the same reparametrization loads none of these names.

torch.ao.quantization: quantize_dynamic's Linear layers (weight and bias in one `_packed_params._packed_params`
tuple), convert's quantized Conv2d (a quantized tensor), and QAT checkpoints (prepare_qat, prepare_qat_fx: each
layer's `weight_fake_quant.*` / `activation_post_process.*` beside its float weight).

llama2.c's model files (karpathy/llama2.c export.py: legacy_export, version1_export, version2_export, read with the
search tool) and gpt-fast's int4 checkpoints (pytorch-labs/gpt-fast quantize.py, WeightOnlyInt4QuantHandler: a packed
int32 `weight` beside bfloat16 `scales_and_zeros`), written as that code writes them; a LightningModule whose model
attribute is torch.compile'd (`model._orig_mod.*`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from tests.helpers import run_cli, run_json


class _ConvNet(nn.Module):
    """A convolution and a top-level `fc` (which diff-keys took for a classification head)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)


def _pruned_and_plain(folder: Path) -> tuple[Path, Path]:
    """The same model saved before pruning and after l1_unstructured on both layers (without prune.remove)."""
    torch.manual_seed(0)
    model = _ConvNet()
    plain = folder / "plain.pt"
    torch.save(model.state_dict(), plain)
    prune.l1_unstructured(model.conv, "weight", amount=0.5)
    prune.l1_unstructured(model.fc, "weight", amount=0.5)
    pruned = folder / "pruned.pt"
    torch.save(model.state_dict(), pruned)
    return pruned, plain


def _groups(report: dict) -> dict[str, tuple[str, str]]:
    return {group["pattern"]: (group["kind"], group["reason"]) for group in report["groups"]}


def test_a_pruned_state_dict_against_the_model_unpruned_names_prune_not_a_rename(tmp_path: Path) -> None:
    """diff-keys of a pruned model against the same model unpruned suggested `--rename weight_mask=weight` (the mask of
    0s and 1s loaded as the weight), called fc.weight a task head "dropped" and weight_orig / weight_mask "unknown";
    now every one of them is `reparametrized`, no rename is offered, and a note names prune.remove. Either way round."""
    pruned, plain = _pruned_and_plain(tmp_path)
    assert set(torch.load(pruned)) == {"conv.weight_orig", "conv.weight_mask", "conv.bias", "fc.weight_orig",
                                       "fc.weight_mask", "fc.bias"}
    for a, b in ((pruned, plain), (plain, pruned)):
        code, report = run_json("diff-keys", str(a), str(b))
        assert code == 1, report
        assert report["suggested_renames"] == [], report["suggested_renames"]
        assert {reason for _, reason in _groups(report).values()} == {"reparametrized"}, report["groups"]
        assert {row["reason"] for row in report["missing"] + report["unexpected"]} == {"reparametrized"}
        assert any("prune.remove(module, 'weight')" in note for note in report["notes"]), report["notes"]
    code, report = run_json("diff-keys", str(pruned), str(plain))
    missing = {row["name"]: row["detail"] for row in report["missing"]}
    assert missing["fc.weight"] == "A keeps it under torch.nn.utils.prune (fc.weight_mask, fc.weight_orig)", missing
    unexpected = {row["name"]: row["detail"] for row in report["unexpected"]}
    assert unexpected["conv.weight_mask"] == "A keeps conv.weight under torch.nn.utils.prune, which B stores plainly"
    # The same model pruned on both sides matches key for key: nothing to say.
    same = tmp_path / "pruned_again.pt"
    same.write_bytes(pruned.read_bytes())
    code, report = run_json("diff-keys", str(pruned), str(same))
    assert code == 0 and report["groups"] == [], report["groups"]


def test_inspect_of_a_pruned_state_dict_says_prune_and_that_its_masks_are_counted(tmp_path: Path) -> None:
    """inspect said nothing of prune: it counted the masks among the parameters and showed weight_orig as a weight."""
    pruned, plain = _pruned_and_plain(tmp_path)
    code, data = run_json("inspect", str(pruned))
    assert code == 0 and data["num_tensors"] == 6, data
    said = [w for w in data["warnings"] if "torch.nn.utils.prune" in w]
    assert len(said) == 1, data["warnings"]
    assert said[0].startswith("2 weights saved under torch.nn.utils.prune (conv.weight, fc.weight): "), said
    assert "prune.remove(module, 'weight')" in said[0], said
    assert said[0].endswith(f"the 2 masks ({8 * 3 * 3 * 3 + 4 * 8:,} values) are counted in the parameters here, "
                            "as every tensor of the state dict is, and hold no weights"), said
    code, data = run_json("inspect", str(plain))
    assert code == 0 and not any("torch.nn.utils" in w for w in data["warnings"]), data["warnings"]


def test_spectral_norm_and_parametrize_saves_against_the_plain_model_are_reparametrized(tmp_path: Path) -> None:
    """The old spectral_norm hook (weight_orig, weight_u, weight_v) and parametrize's spectral_norm / weight_norm
    (parametrizations.weight.original, original0 / original1, and the parametrization's own _u / _v) against the
    model without them read "unknown" on every key; now `reparametrized`, with the function that removes each."""
    torch.manual_seed(0)
    plain = tmp_path / "plain.pt"
    torch.save(_ConvNet().state_dict(), plain)
    saves = {}
    for name, apply, remover in (
            ("hook", lambda m: torch.nn.utils.spectral_norm(m.conv), "remove_spectral_norm(module)"),
            ("spectral", lambda m: nn.utils.parametrizations.spectral_norm(m.conv), "remove_parametrizations"),
            ("weight_norm", lambda m: nn.utils.parametrizations.weight_norm(m.fc), "remove_parametrizations")):
        model = _ConvNet()
        apply(model)
        saves[name] = tmp_path / f"{name}.pt"
        torch.save(model.state_dict(), saves[name])
        code, report = run_json("diff-keys", str(plain), str(saves[name]))
        assert code == 1 and report["suggested_renames"] == [], report
        assert {reason for _, reason in _groups(report).values()} == {"reparametrized"}, (name, report["groups"])
        assert any(remover in note for note in report["notes"]), (name, report["notes"])
        code, data = run_json("inspect", str(saves[name]))
        assert code == 0 and any("1 weight saved under torch.nn.utils." in w and remover in w
                                 for w in data["warnings"]), (name, data["warnings"])
    # torch.ao.pruning's sparsifiers reparametrize through parametrize (FakeSparsity): the same names.
    from torch.ao.pruning import WeightNormSparsifier

    model = _ConvNet()
    sparsifier = WeightNormSparsifier(sparsity_level=0.5)
    sparsifier.prepare(model, [{"tensor_fqn": "fc.weight"}])
    sparsifier.step()
    sparse = tmp_path / "sparse.pt"
    torch.save(model.state_dict(), sparse)
    code, report = run_json("diff-keys", str(sparse), str(plain))
    assert code == 1 and {row["name"]: row["reason"] for row in report["missing"] + report["unexpected"]} == {
        "fc.weight": "reparametrized", "fc.parametrizations.weight.original": "reparametrized"}, report
    assert any("sparsifier.squash_mask()" in note for note in report["notes"]), report["notes"]
    assert {"conv.weight_orig", "conv.weight_u", "conv.weight_v"} <= set(torch.load(saves["hook"]))
    assert {"fc.parametrizations.weight.original0", "fc.parametrizations.weight.original1"} <= set(
        torch.load(saves["weight_norm"]))
    # A model's own `*_u` / `*_v` / `*_orig` without their siblings is not called one.
    own = tmp_path / "own.pt"
    torch.save({"proj_u": torch.zeros(3), "proj_v": torch.zeros(3), "proj": torch.zeros(3, 3)}, own)
    code, data = run_json("inspect", str(own))
    assert code == 0 and not any("torch.nn.utils" in w for w in data["warnings"]), data["warnings"]


def test_the_commands_that_write_keep_a_pruned_state_dict_whole(tmp_path: Path) -> None:
    """convert and check-dtype read a pruned state dict as it is (its masks too): the output loads into the pruned
    model as the input did."""
    from safetensors.torch import load_file

    pruned, _ = _pruned_and_plain(tmp_path)
    out = tmp_path / "pruned.safetensors"
    result = run_cli("convert", str(pruned), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    original = torch.load(pruned)
    written = load_file(out)
    assert set(written) == set(original) and all(torch.equal(written[k], original[k]) for k in original)
    code, data = run_json("check-dtype", str(pruned))
    assert code == 0 and data["stored_dtypes"]["float32"]["num_tensors"] == 6, data["stored_dtypes"]


class _TextClassifier(nn.Module):
    """An embedding and two Linear layers: quantize_dynamic quantizes the Linear layers, leaves the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)


# torch.ao.quantization's own deprecation and observer notices, about the API the tests use to write the files.
_TORCH_AO_NOTICES = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _static_quantized(path: Path) -> nn.Module:
    """convert's model after prepare and one calibration pass: its Conv2d weight a qint8 per-channel tensor."""
    torch.manual_seed(0)
    model = nn.Sequential(torch.ao.quantization.QuantStub(), nn.Conv2d(3, 8, 3),
                          torch.ao.quantization.DeQuantStub()).eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    prepared = torch.ao.quantization.prepare(model)
    prepared(torch.randn(2, 3, 8, 8))
    quantized = torch.ao.quantization.convert(prepared)
    torch.save(quantized.state_dict(), path)
    return quantized


@_TORCH_AO_NOTICES
def test_a_torch_ao_dynamic_quantized_state_dict_says_its_packed_layers_are_left_out(tmp_path: Path) -> None:
    """quantize_dynamic's Linear layers save weight and bias as one tuple (`fc1._packed_params._packed_params`):
    inspect counted 164 parameters (the embedding and the layers' scale / zero_point) of a model of 836, listed the
    tuples among the skipped entries and said nothing; now a warning names the layers and what is left out, in
    diff-keys too (where the float model's fc1.weight is "unknown")."""
    torch.manual_seed(0)
    model = _TextClassifier()
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    path = tmp_path / "quantized.pt"
    torch.save(quantized.state_dict(), path)
    assert isinstance(quantized.state_dict()["fc1._packed_params._packed_params"], tuple)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["num_params"] == 10 * 16 + 4, data  # emb, and each layer's scale and zero_point
    said = [w for w in data["warnings"] if "torch.ao.quantization" in w]
    assert len(said) == 1, data["warnings"]
    weights, biases = 16 * 32 + 32 * 4, 32 + 4
    assert f"2 layers quantized by torch.ao.quantization (fc1, fc2: {weights:,} qint8 weights and {biases} biases)" \
        in said[0], said
    assert "left out of the tensors and parameters counted here" in said[0], said
    floats = tmp_path / "float.pt"
    torch.save(model.state_dict(), floats)
    code, report = run_json("diff-keys", str(path), str(floats))
    assert code == 1 and any("2 layers quantized by torch.ao.quantization" in w for w in report["warnings"]), report


@_TORCH_AO_NOTICES
def test_a_torch_ao_static_quantized_state_dict_is_refused_as_one(tmp_path: Path) -> None:
    """convert's quantized Conv2d keeps its weight a quantized tensor: the refusal said "save it with .dequantize()",
    with no word that the whole state dict is torch.ao's, nor how to dequantize every tensor of it."""
    path = tmp_path / "static.pt"
    quantized = _static_quantized(path)
    assert quantized.state_dict()["1.weight"].is_quantized
    # Round quant3: inspect lists a qint8 tensor as its int8 values (tests/test_quant3.py); what reads its values
    # still refuses it, in one line that says how to dequantize every tensor.
    result = run_cli("convert", str(path), "-o", str(tmp_path / "out.safetensors"))
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    line = result.stderr.strip()
    assert "\n" not in line and "tensor '1.weight' is a qint8 quantized tensor (torch.ao.quantization)" in line, line
    assert "{k: v.dequantize() if v.is_quantized else v for k, v in state_dict.items()}" in line, line


def _write_llama2c(path: Path, version: int, *, shared: bool = True) -> None:
    """A tiny model written as llama2.c's export.py writes it (legacy_export, version1_export, version2_export):
    dim 16, hidden 32, 2 layers, 4 heads (2 KV heads), vocab 32, max_seq_len 8."""
    import struct

    generator = torch.Generator().manual_seed(version)
    dim, hidden, layers, heads, kv_heads, vocab, seq = 16, 32, 2, 4, 2, 32, 8
    kv_dim, head_size = dim * kv_heads // heads, dim // heads

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    norms = [rand(dim) for _ in range(2 * layers)] + [rand(dim)]
    embedding = rand(vocab, dim)
    matrices = ([rand(dim, dim) for _ in range(layers)] + [rand(kv_dim, dim) for _ in range(2 * layers)]
                + [rand(dim, dim) for _ in range(layers)] + [rand(hidden, dim) for _ in range(layers)]
                + [rand(dim, hidden) for _ in range(layers)] + [rand(hidden, dim) for _ in range(layers)])
    classifier = [] if shared else [rand(vocab, dim)]
    header = struct.pack("iiiiiii", dim, hidden, layers, heads, kv_heads, vocab if shared or version else -vocab, seq)
    with path.open("wb") as file:
        if version == 0:
            file.write(header)
            attention_norms, ffn_norms, final = norms[:layers], norms[layers:2 * layers], norms[-1]
            q, kv, o, ffn = (matrices[:layers], matrices[layers:3 * layers], matrices[3 * layers:4 * layers],
                             matrices[4 * layers:])
            for tensor in [embedding, *attention_norms, *q, *kv, *o, *ffn_norms, *ffn, final,
                           rand(seq, head_size // 2), rand(seq, head_size // 2), *classifier]:
                file.write(tensor.numpy().astype("float32").tobytes())
            return
        file.write(struct.pack("I", 0x616B3432) + struct.pack("i", version) + header + struct.pack("B", int(shared)))
        if version == 2:
            file.write(struct.pack("i", 16))
        file.write(b"\0" * (256 - file.tell()))
        if version == 1:
            for tensor in [*norms, embedding, *matrices, *classifier]:
                file.write(tensor.numpy().astype("float32").tobytes())
            return
        for tensor in norms:
            file.write(tensor.numpy().astype("float32").tobytes())
        quantized = [embedding, *matrices, *classifier]
        for tensor in quantized:
            file.write(torch.randint(-127, 128, (tensor.numel(),), dtype=torch.int8, generator=generator)
                       .numpy().tobytes())
        for tensor in quantized:
            file.write(rand(tensor.numel() // 16).numpy().astype("float32").tobytes())


def test_a_llama2c_model_bin_is_named_with_the_checkpoint_to_read(tmp_path: Path) -> None:
    """llama2.c's model files (the tinyllamas stories*.bin are version 0, export.py's default) were "not a safetensors
    file nor a PyTorch pickle (zip or legacy)"; now each command names llama2.c, the version and header, and the
    PyTorch checkpoint to read instead. A file of numbers of another size is not taken for one."""
    for version, shared in ((0, True), (0, False), (1, False), (2, True)):
        path = tmp_path / f"stories_v{version}_{shared}.bin"
        _write_llama2c(path, version, shared=shared)
        for command in ("inspect", "check-dtype", "diff-keys", "convert", "shard", "plan-devices"):
            args = {"diff-keys": [str(path), str(path)], "convert": [str(path), "-o", str(tmp_path / "o.safetensors")],
                    "shard": [str(path), "--max", "1MB", "-o", str(tmp_path / "shards")],
                    "plan-devices": [str(path), "--gpu", "1GB"]}.get(command, [str(path)])
            result = run_cli(command, *args)
            line = result.stderr.strip()
            assert result.exit_code == 2 and "\n" not in line, (command, version, result.stdout, line)
            assert f"this is a llama2.c model (its export.py, version {version}: dim 16, 2 layers, 4 heads, vocab 32;" \
                in line, (command, version, line)
            assert "llama2.c's train.py writes out/ckpt.pt" in line, line
        assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "shards").exists()
    # The size of version 0 is what tells it: one byte more and it is no llama2.c file.
    path = tmp_path / "stories_v0_True.bin"
    path.write_bytes(path.read_bytes() + b"\0")
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "llama2.c" not in result.stderr, result.stderr


class _ConvNetForward(_ConvNet):
    """_ConvNet with a forward, which FX traces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


@_TORCH_AO_NOTICES
def test_a_qat_checkpoint_against_the_float_model_is_its_observers_not_unknown_weights(tmp_path: Path) -> None:
    """A model prepared for quantization-aware training (prepare_qat, eager, or FX's prepare_qat_fx) and saved while
    training keeps each layer's weight beside its fake quantizer's and observer's state: against the float model every
    weight matched and each `weight_fake_quant.*` / `activation_post_process.*` key was "unknown: these weights will
    not load", an error, or a "likely the model's own parameter" warning; now `quantization` (warn) naming
    torch.ao.quantization, both ways round, nothing of it an error."""
    from torch.ao.quantization import get_default_qat_qconfig, get_default_qat_qconfig_mapping, prepare_qat, quantize_fx

    torch.manual_seed(0)
    plain = tmp_path / "float.pt"
    torch.save(_ConvNetForward().state_dict(), plain)
    eager = _ConvNetForward().train()
    eager.qconfig = get_default_qat_qconfig("fbgemm")
    fx = quantize_fx.prepare_qat_fx(_ConvNetForward().train(), get_default_qat_qconfig_mapping("fbgemm"),
                                    (torch.randn(1, 3, 8, 8),))
    for name, prepared in (("eager", prepare_qat(eager)), ("fx", fx)):
        path = tmp_path / f"qat_{name}.pt"
        torch.save(prepared.state_dict(), path)
        assert any(".weight_fake_quant." in key for key in prepared.state_dict()), name
        code, report = run_json("diff-keys", str(path), str(plain))
        assert report["worst_severity"] == "warn" and code == 0, (name, report["groups"])
        rows = [row for row in report["unexpected"] if row["reason"] == "quantization"]
        assert rows and all("torch.ao.quantization's observer / fake-quantizer state" in row["detail"]
                            for row in rows), (name, rows)
        assert {row["reason"] for row in report["unexpected"]} <= {"quantization", "tied-weight"}, report["unexpected"]
        assert report["missing"] == [] and report["mismatched"] == [], report
        code, report = run_json("diff-keys", str(plain), str(path))
        assert report["worst_severity"] == "warn" and code == 0, (name, report["groups"])
        assert all("start afresh and calibrate again" in row["detail"] for row in report["missing"]
                   if row["reason"] == "quantization"), report["missing"]


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm. is deprecated:FutureWarning")
def test_a_weight_norm_hook_save_against_the_model_without_it_is_not_renamed_v_onto_the_weight(tmp_path: Path) -> None:
    """The old torch.nn.utils.weight_norm hook (HiFi-GAN and other vocoders train with it, remove_weight_norm for
    inference) keeps conv.weight as weight_g and weight_v: against the model without it diff-keys offered
    `--rename weight_v=weight`, which loads the directions without their norms (weight = g * v / ||v||), and called
    weight_g "unknown"; now all three are `reparametrized`, no rename, a note naming remove_weight_norm."""

    class _Vocoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(3, 8, 3)
            self.fc = nn.Linear(8, 4)

    torch.manual_seed(0)
    model = _Vocoder()
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    nn.utils.weight_norm(model.conv)
    with torch.no_grad():
        model.conv.weight_g.mul_(2)  # trained: the norms are no longer ||v||
    hooked = tmp_path / "weight_norm.pt"
    torch.save(model.state_dict(), hooked)
    assert {"conv.weight_g", "conv.weight_v"} <= set(torch.load(hooked))
    for a, b in ((hooked, plain), (plain, hooked)):
        code, report = run_json("diff-keys", str(a), str(b))
        assert code == 1 and report["suggested_renames"] == [], report["suggested_renames"]
        rows = report["missing"] + report["unexpected"]
        assert {row["name"] for row in rows} == {"conv.weight", "conv.weight_g", "conv.weight_v"}, rows
        assert {row["reason"] for row in rows} == {"reparametrized"}, rows
        assert any("remove_weight_norm(module)" in note and "weight_v alone is not weight" in note
                   for note in report["notes"]), report["notes"]
    # weight_g / weight_v are how transformers' own models save weight_norm (wav2vec 2.0's pos_conv): inspect says
    # nothing of them.
    code, data = run_json("inspect", str(hooked))
    assert code == 0 and not any("weight_norm" in w for w in data["warnings"]), data["warnings"]


def _gpt_fast_int4(path: Path, group_size: int = 32, inner_k_tiles: int = 8) -> int:
    """A gpt-fast model_int4.g32.pth as quantize.py --mode int4 writes it (WeightOnlyInt4QuantHandler): each Linear's
    weight as aten._convert_weight_to_int4pack packs it on CUDA (int32 [out / 8, in / (inner_k_tiles * 16), 32,
    inner_k_tiles / 2]) beside pack_scales_and_zeros' bfloat16 [in / group_size, out, 2]; embeddings and norms in
    bfloat16. Returns the number of weights the int4 layers hold."""
    generator = torch.Generator().manual_seed(0)
    dim, hidden, vocab = 256, 512, 64
    state: dict[str, torch.Tensor] = {"tok_embeddings.weight": torch.randn(vocab, dim, generator=generator).bfloat16(),
                                      "norm.weight": torch.ones(dim, dtype=torch.bfloat16)}
    weights = 0
    for layer, (out_features, in_features) in {"layers.0.attention.wqkv": (3 * dim, dim),
                                               "layers.0.attention.wo": (dim, dim),
                                               "layers.0.feed_forward.w1": (hidden, dim),
                                               "layers.0.feed_forward.w2": (dim, hidden),
                                               "output": (vocab, dim)}.items():
        state[f"{layer}.weight"] = torch.randint(
            -2**31, 2**31 - 1, (out_features // 8, in_features // (inner_k_tiles * 16), 32, inner_k_tiles // 2),
            dtype=torch.int32, generator=generator)
        state[f"{layer}.scales_and_zeros"] = torch.rand(
            in_features // group_size, out_features, 2, generator=generator).bfloat16()
        weights += out_features * in_features
    state["layers.0.attention_norm.weight"] = torch.ones(dim, dtype=torch.bfloat16)
    torch.save(state, path)
    return weights


def test_a_gpt_fast_int4_checkpoint_counts_its_packed_weights_and_keeps_its_scales_in_bf16(tmp_path: Path) -> None:
    """gpt-fast's int4 files have no config: inspect counted each packed int32 as one parameter (an eighth of the
    weights) and said nothing, and convert --dtype fp16 cast scales_and_zeros to fp16, which _weight_int4pack_mm
    refuses (it reads them in bfloat16); now a warning gives the weights the layers hold, and convert / check-dtype
    leave the scales as stored."""
    from safetensors import safe_open

    path = tmp_path / "model_int4.g32.pth"
    weights = _gpt_fast_int4(path)
    code, data = run_json("inspect", str(path))
    assert code == 0, data
    said = [w for w in data["warnings"] if "gpt-fast" in w]
    assert len(said) == 1 and said[0].startswith("5 Linear layers quantized to int4 as gpt-fast's quantize.py writes "
                                                 "them (layers.0.attention.wqkv, layers.0.attention.wo and 3 more; "
                                                 "WeightOnlyInt4QuantHandler, group size 32)"), said
    assert f"they hold {weights:,} weights where the parameters here count {weights // 8:,} int32" in said[0], said
    assert data["dtypes"]["int32"] == weights // 8, data["dtypes"]
    out = tmp_path / "fp16.safetensors"
    result = run_cli("convert", str(path), "--dtype", "fp16", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert "quantizer scale/state tensors kept as stored" in result.stderr, result.stderr
    with safe_open(out, "pt") as written:
        dtypes = {name: written.get_slice(name).get_dtype() for name in written.keys()}  # noqa: SIM118
    assert {dtypes[name] for name in dtypes if name.endswith(".scales_and_zeros")} == {"BF16"}, dtypes
    assert dtypes["tok_embeddings.weight"] == "F16" and dtypes["output.weight"] == "I32", dtypes
    code, report = run_json("check-dtype", str(path))
    checked = [t["name"] for t in report["targets"]["fp16"]["tensors"]]
    assert code == 0 and not any(name.endswith(".scales_and_zeros") for name in checked), checked
    # A model's own `scales_and_zeros` beside a float weight is no gpt-fast layer.
    own = tmp_path / "own.pt"
    torch.save({"proj.weight": torch.zeros(64, 256), "proj.scales_and_zeros": torch.zeros(8, 64, 2)}, own)
    code, data = run_json("inspect", str(own))
    assert code == 0 and not any("gpt-fast" in w for w in data["warnings"]), data["warnings"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's import of torch.jit
def test_a_lightning_checkpoint_of_a_compiled_attribute_names_its_orig_mod(tmp_path: Path) -> None:
    """A LightningModule whose __init__ does `self.model = torch.compile(model)` saves every weight as
    `model._orig_mod.*`: inspect said nothing (its wrapper warning looks at the start of the names alone), where the
    module without the compile matches none of them; now it says so, with the --rename that diff-keys checks."""

    class _LitModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch.compile(_ConvNet())

    state = _LitModule().state_dict()
    assert all(name.startswith("model._orig_mod.") for name in state), list(state)
    path = tmp_path / "epoch=0-step=10.ckpt"
    torch.save({"epoch": 0, "global_step": 10, "pytorch-lightning_version": "2.4.0", "state_dict": state,
                "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [], "hparams_name": "kwargs",
                "hyper_parameters": {"lr": 0.001}}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "state_dict", data
    said = [w for w in data["warnings"] if "_orig_mod" in w]
    assert len(said) == 1 and said[0].startswith("every tensor name starts with model._orig_mod. (the module's model "
                                                 "attribute was torch.compile's OptimizedModule"), said
    rename = "^model\\._orig_mod\\.=model."
    assert f"diff-keys --rename '{rename}'" in said[0], said
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {name.replace("_orig_mod.", ""): value for name, value in state.items()},
                "pytorch-lightning_version": "2.4.0", "epoch": 0, "global_step": 10}, plain)
    code, report = run_json("diff-keys", str(path), str(plain), "--rename", rename)
    assert code == 0 and report["groups"] == [] and report["matched"] == len(state), report
    # Names that only share a first component with no _orig_mod. under it say nothing of it.
    code, data = run_json("inspect", str(plain))
    assert code == 0 and not any("_orig_mod" in w for w in data["warnings"]), data["warnings"]
