"""Oracle sweep of plan-devices over ordinary (non-quantized) checkpoints of 36 architectures.

For tiny seeded models of encoders, seq2seq, decoders (dense and MoE), vision and multimodal models, each saved as
a real checkpoint (one safetensors file, sharded safetensors or a pytorch_model.bin; fp32 or bf16; a config with
or without its dtype), compares `plan_devices(...).device_map` with the map transformers' own
`from_pretrained(device_map=..., max_memory=..., dtype=...)` computes (`fixtures.plan_devices.
from_pretrained_device_map`: the real from_pretrained, stopped right after `_get_device_map`, GPUs mocked by
their budgets):

* `--dtype` auto (from_pretrained's default) and one of fp16 / bf16 / fp32 per architecture;
* strategies auto / balanced / balanced_low_0 / sequential;
* GPU budgets splitting the model 1-4 ways with a CPU budget, GPU + CPU + disk, GPU + disk (no CPU budget),
  CPU + disk (no GPU);
* the class inferred from the config vs `--model-class` (the oracle loads that class), and `--no-split`;
* the CLI (`plan-devices ... --json`, a subprocess) once per architecture, unless `--quick` (or with `--cli`);
* with `--load`, the real load on the CPU + disk budget: the loaded model's `hf_device_map` (what a load does, not
  only what it computes).

    PYTHONPATH=. .venv/bin/python scripts/plan_sweep.py [--only NAME ...] [--quick] [--verbose] [--cli] [--load]

Prints one line per case (case / expected / got / verdict) and the counts; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sweep_common import only_these, print_table, quiet_libraries, summary

GB = 10**9
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass
class Arch:
    """One architecture of the sweep and the checkpoint written for it."""

    make: Callable[[], Any]  # the tiny config, `architectures` set
    saved: str = "fp32"  # dtype of the saved weights (and of the config's dtype)
    layout: str = "single"  # single | sharded | bin
    other_dtype: str = "fp16"  # the --dtype planned beside auto
    config_dtype: bool = True  # False: config.json without its dtype (auto reads the weights)
    model_class: str | None = None  # a --model-class case besides the config's architecture
    no_split: list[str] = field(default_factory=list)  # a --no-split case


def _archs() -> dict[str, Arch]:
    import transformers as T

    # vocabularies small beside the layers, so that budgets split the layers, not just the embeddings
    dec = {"vocab_size": 256, "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 128}
    llama = {**dec, "intermediate_size": 256, "num_hidden_layers": 6, "num_key_value_heads": 2}
    bert = {"vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4,
            "intermediate_size": 256, "max_position_embeddings": 128}
    bart = {"vocab_size": 512, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
            "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
            "max_position_embeddings": 128}
    t5 = {"vocab_size": 512, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 3, "num_decoder_layers": 3,
          "num_heads": 4}
    clip_text = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "max_position_embeddings": 64}
    clip_vision = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "image_size": 32, "patch_size": 8}

    def cfg(cls: Any, arch: str, **kw: Any) -> Callable[[], Any]:
        return lambda: cls(**kw, architectures=[arch])

    return {
        # encoders
        "bert": Arch(cfg(T.BertConfig, "BertForMaskedLM", **bert), model_class="BertModel"),
        "roberta": Arch(cfg(T.RobertaConfig, "RobertaForMaskedLM", **bert, pad_token_id=1), saved="bf16",
                        layout="sharded", other_dtype="fp32"),
        # lm_head registered before the encoder: named_parameters meets the tied lm_head.decoder.weight first
        "xlm_roberta": Arch(cfg(T.XLMRobertaConfig, "XLMRobertaForMaskedLM", **bert, pad_token_id=1),
                            other_dtype="bf16", model_class="XLMRobertaModel"),
        "deberta_v2": Arch(cfg(T.DebertaV2Config, "DebertaV2ForMaskedLM", **bert), layout="bin",
                           other_dtype="bf16"),
        "distilbert": Arch(cfg(T.DistilBertConfig, "DistilBertForMaskedLM", vocab_size=512, dim=64, n_layers=4,
                               n_heads=4, hidden_dim=128, max_position_embeddings=128), config_dtype=False),
        "albert": Arch(cfg(T.AlbertConfig, "AlbertForMaskedLM", **bert, embedding_size=32, num_hidden_groups=1),
                       other_dtype="bf16", model_class="AlbertModel"),
        # seq2seq
        "t5": Arch(cfg(T.T5Config, "T5ForConditionalGeneration", **t5), model_class="T5EncoderModel"),
        "t5_untied": Arch(cfg(T.T5Config, "T5ForConditionalGeneration", **t5, tie_word_embeddings=False,
                              feed_forward_proj="gated-gelu"), saved="bf16", layout="sharded"),
        "bart": Arch(cfg(T.BartConfig, "BartForConditionalGeneration", **bart), other_dtype="bf16",
                     model_class="BartModel"),
        "marian": Arch(cfg(T.MarianConfig, "MarianMTModel", **bart, pad_token_id=255, decoder_start_token_id=255),
                       layout="bin"),
        "pegasus": Arch(cfg(T.PegasusConfig, "PegasusForConditionalGeneration", **bart), saved="bf16",
                        other_dtype="fp32"),
        "whisper": Arch(cfg(T.WhisperConfig, "WhisperForConditionalGeneration", vocab_size=512, d_model=64,
                            encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                            encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=32,
                            max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            decoder_start_token_id=3, suppress_tokens=[], begin_suppress_tokens=[]),
                        layout="sharded", model_class="WhisperModel"),
        # decoders
        "gpt2": Arch(cfg(T.GPT2Config, "GPT2LMHeadModel", vocab_size=512, n_embd=64, n_layer=4, n_head=4,
                         n_positions=128), model_class="GPT2Model", no_split=["GPT2MLP"]),
        "opt": Arch(cfg(T.OPTConfig, "OPTForCausalLM", vocab_size=512, hidden_size=64, num_hidden_layers=4,
                        ffn_dim=128, num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=64),
                    saved="bf16", layout="bin", other_dtype="fp32"),
        "bloom": Arch(cfg(T.BloomConfig, "BloomForCausalLM", vocab_size=512, hidden_size=64, n_layer=4, n_head=4),
                      layout="sharded", other_dtype="bf16"),
        "falcon": Arch(cfg(T.FalconConfig, "FalconForCausalLM", vocab_size=512, hidden_size=64, num_hidden_layers=4,
                           num_attention_heads=4, new_decoder_architecture=True, num_kv_heads=2),
                       saved="bf16"),
        "gpt_neox": Arch(cfg(T.GPTNeoXConfig, "GPTNeoXForCausalLM", **dec, intermediate_size=128,
                             num_hidden_layers=4), config_dtype=False, other_dtype="bf16"),
        "gptj": Arch(cfg(T.GPTJConfig, "GPTJForCausalLM", vocab_size=512, n_embd=64, n_layer=4, n_head=4,
                         rotary_dim=8, n_positions=128), layout="bin"),
        "llama": Arch(cfg(T.LlamaConfig, "LlamaForCausalLM", **llama), saved="bf16", layout="sharded",
                      model_class="LlamaModel", no_split=["LlamaAttention", "LlamaMLP"]),
        "mistral": Arch(cfg(T.MistralConfig, "MistralForCausalLM", **llama), saved="bf16", other_dtype="fp32",
                        model_class="AutoModelForCausalLM"),
        "qwen2": Arch(cfg(T.Qwen2Config, "Qwen2ForCausalLM", **llama, tie_word_embeddings=True),
                      other_dtype="bf16"),
        "gemma": Arch(cfg(T.GemmaConfig, "GemmaForCausalLM", **llama, head_dim=16), saved="bf16"),
        "gemma2": Arch(cfg(T.Gemma2Config, "Gemma2ForCausalLM", **llama, head_dim=16), saved="bf16",
                       layout="sharded", other_dtype="fp32"),
        "phi3": Arch(cfg(T.Phi3Config, "Phi3ForCausalLM", **llama, pad_token_id=0), config_dtype=False),
        "mixtral": Arch(cfg(T.MixtralConfig, "MixtralForCausalLM", **llama, num_local_experts=4,
                            num_experts_per_tok=2), saved="bf16", layout="sharded"),
        "qwen2_moe": Arch(cfg(T.Qwen2MoeConfig, "Qwen2MoeForCausalLM", **llama, num_experts=4,
                              num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=64),
                          other_dtype="bf16"),
        "mamba": Arch(cfg(T.MambaConfig, "MambaForCausalLM", vocab_size=256, hidden_size=64, state_size=8,
                          num_hidden_layers=6, expand=2, conv_kernel=4), other_dtype="bf16"),
        "gpt_bigcode": Arch(cfg(T.GPTBigCodeConfig, "GPTBigCodeForCausalLM", vocab_size=256, n_embd=64, n_layer=6,
                                n_head=4, n_positions=128, multi_query=True), saved="bf16", layout="bin"),
        "mt5": Arch(cfg(T.MT5Config, "MT5ForConditionalGeneration", **t5), other_dtype="fp16"),
        "bert2bert": Arch(lambda: T.EncoderDecoderConfig.from_encoder_decoder_configs(
            T.BertConfig(**bert), T.BertConfig(**bert, is_decoder=True, add_cross_attention=True),
            architectures=["EncoderDecoderModel"]), layout="sharded"),
        # vision, audio and multimodal
        "vit": Arch(cfg(T.ViTConfig, "ViTForImageClassification", hidden_size=64, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8),
                    model_class="ViTModel"),
        "clip": Arch(lambda: T.CLIPConfig(text_config=clip_text, vision_config=clip_vision, projection_dim=32,
                                          architectures=["CLIPModel"]), layout="sharded", other_dtype="bf16",
                     model_class="CLIPTextModel"),
        "siglip": Arch(lambda: T.SiglipConfig(text_config=clip_text, vision_config=clip_vision,
                                              architectures=["SiglipModel"]), saved="bf16",
                       model_class="SiglipVisionModel"),
        "llava": Arch(lambda: T.LlavaConfig(
            vision_config=T.CLIPVisionConfig(**clip_vision), text_config=T.LlamaConfig(**llama),
            image_token_index=255, architectures=["LlavaForConditionalGeneration"]), saved="bf16", layout="sharded",
            other_dtype="fp32"),
        "qwen2_vl": Arch(lambda: T.Qwen2VLConfig(
            text_config={**llama, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
            vision_config={"depth": 2, "embed_dim": 64, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2,
                           "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2},
            image_token_id=250, video_token_id=251, vision_start_token_id=252,
            architectures=["Qwen2VLForConditionalGeneration"]), saved="bf16", other_dtype="fp16"),
        "wav2vec2": Arch(cfg(T.Wav2Vec2Config, "Wav2Vec2ForCTC", vocab_size=32, hidden_size=64, num_hidden_layers=4,
                             num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32), conv_stride=(5, 2),
                             conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
                         model_class="Wav2Vec2Model"),
    }


def write_checkpoint(arch: Arch, folder: Path, seed: int = 0) -> Path:
    """Save a seeded tiny model of `arch` into `folder` as its layout and dtype say; returns the folder."""
    import transformers

    config = arch.make()
    torch.manual_seed(seed)
    model = getattr(transformers, config.architectures[0])(config)
    if arch.saved == "bf16":
        model = model.to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    if arch.layout == "bin":
        model.save_pretrained(folder)
        for file in folder.glob("*.safetensors*"):
            file.unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder, max_shard_size="100KB" if arch.layout == "sharded" else "50GB")
    saved = json.loads((folder / "config.json").read_text())
    saved["dtype"] = {"fp32": "float32", "bf16": "bfloat16"}[arch.saved]
    if not arch.config_dtype:
        saved.pop("dtype", None)
        saved.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(saved))
    return folder


def _from_pretrained_bytes(model: torch.nn.Module) -> int:
    """The size transformers' planner gives the model, counted on the model as from_pretrained builds it (its own
    init contexts: untied, tied copies not counted), not on weightdoctor's: the budgets do not move with a bug."""
    import copy

    from transformers.integrations.accelerate import compute_module_sizes
    from transformers.utils.generic import ContextManagers

    cls = type(model)
    config = copy.deepcopy(model.config)
    with ContextManagers(cls.get_init_context(config.dtype, False, False, False, config)):
        fresh = cls(config)
    return int(compute_module_sizes(fresh)[0][""])


def _budgets(total: int) -> list[tuple[str, list[int], int | None]]:
    return [
        ("1gpu+cpu", [total // 2], 10 * GB),
        ("2gpu+cpu", [total // 3, total // 3], 10 * GB),
        ("3gpu+cpu", [total // 2, total // 4, total // 4], 10 * GB),
        ("4gpu+cpu", [total // 5] * 4, 10 * GB),
        ("2gpu+cpu+disk", [total // 4, total // 4], total // 4),
        ("2gpu+disk", [total // 3, total // 4], None),
        ("4gpu-roomy+cpu", [total // 2] * 4, 10 * GB),
        ("2gpu-all", [total] * 2, 10 * GB),
        ("cpu+disk", [], total // 2),
    ]


def _short(device_map: dict[str, Any] | None) -> str:
    if device_map is None:
        return "-"
    counts: dict[str, int] = {}
    for device in device_map.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return f"{len(device_map)} entries " + ",".join(f"{d}:{n}" for d, n in counts.items())


def _cli_map(folder: Path, dtype: str | None, strategy: str, gpus: list[int], cpu: int | None,
             model_class: str | None, no_split: list[str] | None) -> dict[str, Any] | None:
    """The device_map of `weightdoctor plan-devices FOLDER ... --json`, run as a user runs it."""
    command = [sys.executable, "-m", "weightdoctor", "plan-devices", str(folder), "--strategy", strategy, "--json",
               "--disk"]
    for size in gpus:
        command += ["--gpu", str(size)]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if dtype:
        command += ["--dtype", dtype]
    if model_class:
        command += ["--model-class", model_class]
    for name in no_split or []:
        command += ["--no-split", name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)["device_map"]
    except (ValueError, KeyError):
        print(done.stderr[-500:], file=sys.stderr)
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="architectures to run (bert, t5_untied, ...)")
    parser.add_argument("--quick", action="store_true",
                        help="auto and sequential only, two budgets (1gpu+cpu, 2gpu+disk), auto dtype; no CLI, "
                             "--model-class or --no-split cases")
    parser.add_argument("--verbose", action="store_true", help="print the differing entries of each mismatch")
    parser.add_argument("--cli", action="store_true", help="run the CLI check even with --quick")
    parser.add_argument("--load", action="store_true",
                        help="also load each model for real on the budgets without a GPU (CPU + disk, offloaded to a "
                             "temporary folder) and compare the loaded model's hf_device_map")
    args = parser.parse_args()
    quiet_libraries()
    import transformers

    from fixtures.plan_devices import from_pretrained_device_map, load_with_device_map
    from weightdoctor.errors import UsageError
    from weightdoctor.plan_devices import DTYPES, PlanRequest, build_planned_model, open_plan_source, plan_devices

    archs = _archs()
    archs = only_these(parser, archs, args.only)
    counts = {"equal": 0, "different": 0, "error": 0}
    rows: list[tuple[str, str, str, str]] = []
    started = time.monotonic()

    def compare(name: str, expected: dict[str, Any] | None, got: dict[str, Any] | None) -> None:
        same = got == expected
        counts["equal" if same else "different"] += 1
        verdict = "equal" if same else "DIFFERENT"
        if not same and args.verbose and expected is not None and got is not None:
            keys = list(dict.fromkeys([*expected, *got]))
            verdict += " " + "; ".join(f"{k}: {expected.get(k)} vs {got.get(k)}" for k in keys
                                       if expected.get(k) != got.get(k))[:400]
        rows.append((name, _short(expected), _short(got), verdict))

    with tempfile.TemporaryDirectory() as tmp:
        for arch_name, arch in archs.items():
            try:
                folder = write_checkpoint(arch, Path(tmp) / arch_name)
            except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
                counts["error"] += 1
                rows.append((arch_name, "-", "-", f"ERROR checkpoint: {type(exc).__name__}: {str(exc)[:120]}"))
                continue
            # (label, --dtype, --model-class, --no-split): auto and one other dtype, then the class and no-split
            variants: list[tuple[str, str | None, str | None, list[str] | None]] = [("auto", None, None, None)]
            if not args.quick:
                variants.append((arch.other_dtype, arch.other_dtype, None, None))
                if arch.model_class:
                    variants.append((f"class={arch.model_class}", None, arch.model_class, None))
                if arch.no_split:
                    variants.append((f"no-split={'+'.join(arch.no_split)}", None, None, arch.no_split))
            cli_done = False
            for label, dtype, model_class, no_split in variants:
                case = f"{arch_name}[{arch.saved},{arch.layout}]/{label}"
                try:
                    with open_plan_source(str(folder)) as checkpoint:
                        planned = build_planned_model(checkpoint, dtype, model_class)
                except Exception as exc:  # noqa: BLE001
                    counts["error"] += 1
                    rows.append((case, "-", "-", f"ERROR plan: {type(exc).__name__}: {exc}"[:200]))
                    continue
                total = _from_pretrained_bytes(planned.model)
                kwargs: dict[str, Any] = {}
                if dtype:
                    kwargs["dtype"] = getattr(torch, DTYPES[dtype][0])
                if model_class:
                    kwargs["model_class"] = getattr(transformers, model_class)
                if no_split:
                    kwargs["no_split"] = no_split
                budgets = _budgets(total)
                if args.quick:
                    budgets = [budgets[0], budgets[5]]
                for strategy in (("auto", "sequential") if args.quick else STRATEGIES):
                    for budget, gpus, cpu in budgets:
                        name = f"{case}/{strategy}/{budget}"
                        memory: dict[int | str, int] = dict(enumerate(gpus))
                        if cpu is not None:
                            memory["cpu"] = cpu
                        request = PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True, no_split=no_split,
                                              suggest=False)
                        try:
                            expected = from_pretrained_device_map(folder, strategy, memory, **kwargs)
                        except Exception as oracle_exc:  # noqa: BLE001
                            # transformers' own planner fails (its tied-parameter bookkeeping raises IndexError
                            # on some disk maps): plan-devices must refuse these budgets too, naming the planner.
                            failed = f"{type(oracle_exc).__name__}: {oracle_exc}"
                            try:
                                plan_devices(planned, request)
                                refused = ""
                            except UsageError as exc:
                                refused = str(exc)
                            same = "fails on these budgets" in refused and type(oracle_exc).__name__ in refused
                            counts["equal" if same else "different"] += 1
                            rows.append((name, "fails", "fails" if refused else "a plan",
                                         f"equal (both fail: {failed})"[:90] if same else f"DIFFERENT: {failed}"[:200]))
                            continue
                        try:
                            got = plan_devices(planned, request).device_map
                        except Exception as exc:  # noqa: BLE001
                            counts["error"] += 1
                            rows.append((name, _short(expected), "-", f"ERROR plan: {exc}"[:200]))
                            continue
                        compare(name, expected, got)
                        if args.load and not gpus and not no_split:
                            # no GPU in the budget: this machine can run the whole load, offloading to disk
                            try:
                                loaded = load_with_device_map(folder, strategy, Path(tmp) / f"offload-{len(rows)}",
                                                              max_memory=memory, **kwargs)
                                real = dict(loaded.hf_device_map)
                                del loaded
                            except Exception as exc:  # noqa: BLE001
                                counts["error"] += 1
                                rows.append((name + "/load", _short(expected), "-",
                                             f"ERROR load: {type(exc).__name__}: {exc}"[:200]))
                            else:
                                compare(name + "/load", expected, real)
                        if not cli_done and (args.cli or not args.quick) and strategy == "auto":
                            # once per architecture: the CLI agrees with the oracle on its first case
                            cli_done = True
                            compare(name + "/cli", expected,
                                    _cli_map(folder, dtype, strategy, gpus, cpu, model_class, no_split))
    print_table(("case", "expected", "got", "verdict"), rows, (None, 30, 30, None))
    return summary(counts, len(archs), started)


if __name__ == "__main__":
    sys.exit(main())
