"""Oracle sweep of `plan-devices --kv-cache` against the cache transformers really fills, over tiny architectures.

For each architecture a tiny seeded model is built from its transformers config and run once (a forward with
`use_cache=True`, batch B, S tokens; an encoder-decoder's decoder gets the S tokens, its encoder a short input)
at fp32 and bf16, with S below and above the sliding window where the model has one. The cache it returns
(`past_key_values`, the model's default cache class) is measured tensor by tensor:

* keys and values of every self-attention layer (`DynamicLayer`, `DynamicSlidingWindowLayer`, and the attention
  half of a hybrid layer);
* a sliding layer that dropped tokens holds `sliding_window - 1` of them (transformers keeps one less and
  concatenates the new token at the next step; its static cache allocates the whole window): the oracle adds that
  one token, so the figure held to is what a layer holds while it attends, `min(S, sliding_window)` tokens;
* the cross-attention cache of an encoder-decoder (`EncoderDecoderCache.cross_attention_cache`), which the
  estimate sizes apart as `kv_cache.cross_attention_bytes` for `encoder_seq_len` positions (Whisper's
  max_source_positions, else seq_len): equal per encoder position, and exactly for Whisper (since plan6);
* for every decoder-only model, also a `StaticCache(config, max_cache_len=S)` passed to the forward (the cache of
  `generate(cache_implementation="static")`): it allocates its sliding layers the whole window, and is held to the
  estimate with no token added;
* conv and recurrent states of linear-attention / state-space layers (Mamba, Jamba, Falcon-H1, Qwen3-Next,
  Bamba, ...), which are no KV cache: the estimate leaves them out of `total_bytes`, sizes them apart as
  `kv_cache.state_bytes`, which must equal their bytes (RecurrentGemma's, kept in its own blocks, too), and says
  so in its note (where it leaves them unsized, `state_bytes` null, the note must say "not counted").

It compares the figure with `kv_cache.total_bytes` of `plan-devices CONFIG --kv-cache --batch B --seq-len S
--dtype D` (in-process `plan_devices` on the saved config folder; the CLI, `--json`, a subprocess, once per
architecture unless `--quick`). Architectures whose published configs predate `layer_types` are also saved
without it (`<name>/legacy`): transformers derives the layer kinds again from the other fields.

    PYTHONPATH=. .venv/bin/python scripts/kv_cache_sweep.py [--only NAME ...] [--quick] [--cli]

Prints one line per case (case / expected / got / verdict) and the counts; exits 1 on any difference.
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

WINDOW = 8  # every sliding window of the sweep
SEQ_LENS = (5, 13)  # below and above WINDOW
BATCH = 2
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Arch:
    """One architecture: its tiny config and how to run it."""

    make: Callable[[], Any]  # the config, `architectures` set
    kind: str = "causal"  # causal | seq2seq | whisper
    legacy: dict[str, Any] = field(default_factory=dict)  # config.json as published before `layer_types`: keys
    # set to these values in the `legacy` variant (None: removed)
    quick: bool = False  # part of the --quick slice


def _archs() -> dict[str, Arch]:
    import transformers as T

    small = {"vocab_size": 128, "hidden_size": 32, "num_attention_heads": 4, "max_position_embeddings": 64}
    llama = {**small, "intermediate_size": 48, "num_hidden_layers": 4, "num_key_value_heads": 2}
    mla = {**llama, "num_key_value_heads": 4}  # latent attention: as many key/value heads as heads, as published
    bart = {"vocab_size": 128, "d_model": 32, "encoder_layers": 2, "decoder_layers": 3, "encoder_attention_heads": 4,
            "decoder_attention_heads": 2, "encoder_ffn_dim": 48, "decoder_ffn_dim": 48, "max_position_embeddings": 64}
    mamba2 = {"mamba_n_heads": 4, "mamba_d_head": 16, "mamba_n_groups": 1, "mamba_d_state": 8, "mamba_d_conv": 4,
              "mamba_expand": 2, "mamba_chunk_size": 8}

    def cfg(cls: Any, arch: str, **kw: Any) -> Callable[[], Any]:
        return lambda: cls(**kw, architectures=[arch])

    return {
        # multi-head attention: every head cached
        "gpt2": Arch(cfg(T.GPT2Config, "GPT2LMHeadModel", vocab_size=128, n_embd=32, n_layer=3, n_head=4,
                         n_positions=64), quick=True),
        "opt": Arch(cfg(T.OPTConfig, "OPTForCausalLM", vocab_size=128, hidden_size=32, num_hidden_layers=3,
                        ffn_dim=48, num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32)),
        "gpt_neox": Arch(cfg(T.GPTNeoXConfig, "GPTNeoXForCausalLM", **small, intermediate_size=48,
                             num_hidden_layers=3)),
        "gptj": Arch(cfg(T.GPTJConfig, "GPTJForCausalLM", vocab_size=128, n_embd=32, n_layer=3, n_head=4,
                         rotary_dim=4, n_positions=64)),
        "bloom": Arch(cfg(T.BloomConfig, "BloomForCausalLM", vocab_size=128, hidden_size=32, n_layer=3, n_head=4)),
        # Falcon: one shared key/value head (multi_query), or num_kv_heads groups (new decoder architecture)
        "falcon_mqa": Arch(cfg(T.FalconConfig, "FalconForCausalLM", vocab_size=128, hidden_size=32,
                               num_hidden_layers=3, num_attention_heads=4, multi_query=True,
                               new_decoder_architecture=False)),
        "falcon_new": Arch(cfg(T.FalconConfig, "FalconForCausalLM", vocab_size=128, hidden_size=32,
                               num_hidden_layers=3, num_attention_heads=4, new_decoder_architecture=True,
                               num_kv_heads=2)),
        "gpt_bigcode": Arch(cfg(T.GPTBigCodeConfig, "GPTBigCodeForCausalLM", vocab_size=128, n_embd=32, n_layer=3,
                                n_head=4, n_positions=64, multi_query=True)),
        # grouped-query attention
        "llama": Arch(cfg(T.LlamaConfig, "LlamaForCausalLM", **llama), quick=True),
        # Qwen2's published configs carry a sliding_window unused without use_sliding_window
        "qwen2": Arch(cfg(T.Qwen2Config, "Qwen2ForCausalLM", **llama),
                      legacy={"layer_types": None, "sliding_window": WINDOW, "use_sliding_window": False}),
        "qwen2_swa": Arch(cfg(T.Qwen2Config, "Qwen2ForCausalLM", **llama, use_sliding_window=True,
                              sliding_window=WINDOW, max_window_layers=2), legacy={"layer_types": None}),
        "qwen3": Arch(cfg(T.Qwen3Config, "Qwen3ForCausalLM", **llama, head_dim=16)),
        "mistral": Arch(cfg(T.MistralConfig, "MistralForCausalLM", **llama, sliding_window=None)),
        "mistral_swa": Arch(cfg(T.MistralConfig, "MistralForCausalLM", **llama, sliding_window=WINDOW), quick=True),
        "phi3": Arch(cfg(T.Phi3Config, "Phi3ForCausalLM", **llama, pad_token_id=0)),
        # head_dim set apart from hidden / heads
        "gemma": Arch(cfg(T.GemmaConfig, "GemmaForCausalLM", **llama, head_dim=16)),
        # alternating sliding and full layers
        "gemma2": Arch(cfg(T.Gemma2Config, "Gemma2ForCausalLM", **llama, head_dim=16, sliding_window=WINDOW),
                       legacy={"layer_types": None}, quick=True),
        "gemma3_text": Arch(cfg(T.Gemma3TextConfig, "Gemma3ForCausalLM", **{**llama, "num_hidden_layers": 7},
                                head_dim=16, sliding_window=WINDOW), legacy={"layer_types": None}),
        "cohere2": Arch(cfg(T.Cohere2Config, "Cohere2ForCausalLM", **llama, sliding_window=WINDOW),
                        legacy={"layer_types": None}),
        "gpt_oss": Arch(cfg(T.GptOssConfig, "GptOssForCausalLM", **llama, head_dim=16, sliding_window=WINDOW,
                            num_local_experts=4, num_experts_per_tok=2)),
        "exaone4": Arch(cfg(T.Exaone4Config, "Exaone4ForCausalLM", **llama, sliding_window=WINDOW)),
        "olmo3": Arch(cfg(T.Olmo3Config, "Olmo3ForCausalLM", **llama, sliding_window=WINDOW)),
        # chunked attention (a window of attention_chunk_size), every fourth layer full
        "llama4_text": Arch(cfg(T.Llama4TextConfig, "Llama4ForCausalLM", **llama, head_dim=8,
                                attention_chunk_size=WINDOW, intermediate_size_mlp=48, num_local_experts=2)),
        # the last layers reuse the keys and values of earlier ones (KV sharing): they cache nothing
        "gemma3n_text": Arch(cfg(T.Gemma3nTextConfig, "Gemma3nForCausalLM", **llama, head_dim=16,
                                 sliding_window=WINDOW, num_kv_shared_layers=2)),
        "smollm3": Arch(cfg(T.SmolLM3Config, "SmolLM3ForCausalLM", **llama, pad_token_id=0, bos_token_id=1,
                            eos_token_id=2)),
        # mixtures of experts
        "mixtral": Arch(cfg(T.MixtralConfig, "MixtralForCausalLM", **llama, num_local_experts=4,
                            num_experts_per_tok=2)),
        "qwen2_moe": Arch(cfg(T.Qwen2MoeConfig, "Qwen2MoeForCausalLM", **llama, num_experts=4,
                              num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16)),
        # multi-head latent attention
        "deepseek_v2": Arch(cfg(T.DeepseekV2Config, "DeepseekV2ForCausalLM", **mla, moe_intermediate_size=16,
                                kv_lora_rank=8, q_lora_rank=None, qk_rope_head_dim=4, qk_nope_head_dim=8,
                                v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1,
                                n_group=1, topk_group=1)),
        "deepseek_v3": Arch(cfg(T.DeepseekV3Config, "DeepseekV3ForCausalLM", **mla, moe_intermediate_size=16,
                                kv_lora_rank=8, q_lora_rank=12, qk_rope_head_dim=4, qk_nope_head_dim=8,
                                v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1,
                                n_group=1, topk_group=1), quick=True),
        # latent attention and a sparse-attention indexer that caches its own key per token
        "deepseek_v32": Arch(cfg(T.DeepseekV32Config, "DeepseekV32ForCausalLM", **mla, moe_intermediate_size=16,
                                 kv_lora_rank=8, q_lora_rank=12, qk_rope_head_dim=4, qk_nope_head_dim=8,
                                 v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1,
                                 n_group=1, topk_group=1, index_topk=4, index_head_dim=8, index_n_heads=2)),
        "minicpm3": Arch(cfg(T.MiniCPM3Config, "MiniCPM3ForCausalLM", **mla, kv_lora_rank=8, q_lora_rank=12,
                             qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=8)),
        # encoder-decoders: the decoder's self-attention (cross-attention by its note)
        "t5": Arch(cfg(T.T5Config, "T5ForConditionalGeneration", vocab_size=128, d_model=32, d_kv=16, d_ff=48,
                       num_layers=2, num_decoder_layers=3, num_heads=4), kind="seq2seq", quick=True),
        "bart": Arch(cfg(T.BartConfig, "BartForConditionalGeneration", **bart), kind="seq2seq"),
        "whisper": Arch(cfg(T.WhisperConfig, "WhisperForConditionalGeneration", vocab_size=128, d_model=32,
                            encoder_layers=2, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=2,
                            encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=16, max_source_positions=16,
                            max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            decoder_start_token_id=3, suppress_tokens=[], begin_suppress_tokens=[]),
                        kind="whisper"),
        # a multimodal wrapper: its language model's cache (text_config)
        "llava": Arch(lambda: T.LlavaConfig(
            vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "intermediate_size": 40, "image_size": 32, "patch_size": 8},
            text_config={"model_type": "mistral", **llama, "head_dim": 16, "sliding_window": WINDOW},
            image_token_index=127, architectures=["LlavaForConditionalGeneration"])),
        # state-space models and hybrids: a recurrent state, and attention on some layers only
        "mamba": Arch(cfg(T.MambaConfig, "MambaForCausalLM", vocab_size=128, hidden_size=32, state_size=8,
                          num_hidden_layers=3, expand=2, conv_kernel=4), quick=True),
        "mamba2": Arch(cfg(T.Mamba2Config, "Mamba2ForCausalLM", vocab_size=128, hidden_size=32, state_size=8,
                           num_hidden_layers=3, expand=2, conv_kernel=4, num_heads=4, head_dim=16, n_groups=1,
                           chunk_size=8)),
        "jamba": Arch(cfg(T.JambaConfig, "JambaForCausalLM", **llama, num_experts=2, num_experts_per_tok=1,
                          expert_layer_period=2, expert_layer_offset=1, attn_layer_period=2, attn_layer_offset=1,
                          mamba_d_state=8, mamba_d_conv=4, mamba_expand=2), quick=True),
        "falcon_h1": Arch(cfg(T.FalconH1Config, "FalconH1ForCausalLM", **llama, head_dim=16, **mamba2,
                              mamba_d_ssm=64)),  # every layer attends and keeps a Mamba-2 state
        "bamba": Arch(cfg(T.BambaConfig, "BambaForCausalLM", **llama, attn_layer_indices=[1, 3], **mamba2)),
        "qwen3_next": Arch(cfg(T.Qwen3NextConfig, "Qwen3NextForCausalLM", **llama, head_dim=16,
                               linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=8,
                               linear_value_head_dim=8, linear_conv_kernel_dim=4, num_experts=4,
                               num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16,
                               full_attention_interval=2)),
        "lfm2": Arch(cfg(T.Lfm2Config, "Lfm2ForCausalLM", **llama, conv_L_cache=3,
                         layer_types=["conv", "full_attention", "conv", "full_attention"])),
        "olmo_hybrid": Arch(cfg(T.OlmoHybridConfig, "OlmoHybridForCausalLM", **llama, pad_token_id=0,
                                eos_token_id=2)),
        "granitemoehybrid": Arch(cfg(T.GraniteMoeHybridConfig, "GraniteMoeHybridForCausalLM", **llama,
                                     layer_types=["mamba", "attention", "mamba", "attention"], num_local_experts=2,
                                     num_experts_per_tok=1, **mamba2)),
        # its layer count is its layers_block_type's length, a property the config it saves does not write
        "nemotron_h": Arch(cfg(T.NemotronHConfig, "NemotronHForCausalLM", vocab_size=128, hidden_size=32,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
                               mamba_num_heads=4, mamba_head_dim=16, ssm_state_size=8, n_groups=1,
                               chunk_size=8, max_position_embeddings=64,
                               layers_block_type=["mamba", "attention", "mamba", "moe", "attention"],
                               n_routed_experts=2, num_experts_per_tok=1, moe_intermediate_size=16)),
        # two of twelve layers also run a shared attention block, on twice the hidden size (attention_head_dim)
        "zamba": Arch(cfg(T.ZambaConfig, "ZambaForCausalLM", **{**llama, "num_hidden_layers": 12,
                                                                  "num_key_value_heads": 4},
                          mamba_d_state=8, n_mamba_heads=2, mamba_expand=2)),
        "recurrent_gemma": Arch(cfg(T.RecurrentGemmaConfig, "RecurrentGemmaForCausalLM", vocab_size=128,
                                    hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                                    num_key_value_heads=1, lru_width=32, attention_window_size=WINDOW,
                                    conv1d_width=4, block_types=["recurrent", "recurrent", "attention"]),
                                kind="recurrent_gemma"),
    }


def write_config(arch: Arch, folder: Path, legacy: bool) -> Any:
    """Save the config (no weights: plan-devices plans from a config); `legacy` drops the keys of arch.legacy."""
    config = arch.make()
    config.save_pretrained(folder)
    if legacy:
        saved = json.loads((folder / "config.json").read_text())
        for key, value in arch.legacy.items():
            if value is None:
                saved.pop(key, None)
            else:
                saved[key] = value
        (folder / "config.json").write_text(json.dumps(saved))
    return config


def _run_model(arch: Arch, folder: Path, dtype: torch.dtype, batch: int, seq_len: int,
               static: bool = False) -> tuple[Any, list[Any]]:
    """The cache a forward of `batch` x `seq_len` tokens returns, the model built from the saved config, and the
    state tensors the model keeps in its own modules (RecurrentGemma's recurrent blocks). `static`: a
    `StaticCache(max_cache_len=seq_len)` passed in, the cache `generate(cache_implementation="static")` makes."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    model = getattr(transformers, config.architectures[0])(config).to(dtype).eval()
    vocab = getattr(config.get_text_config(decoder=True), "vocab_size", 100)
    ids = torch.randint(4, min(vocab, 100), (batch, seq_len))
    with torch.no_grad():
        if arch.kind == "seq2seq":
            out = model(input_ids=torch.randint(4, 100, (batch, 6)), decoder_input_ids=ids, use_cache=True)
        elif arch.kind == "recurrent_gemma":
            # its forward fills a DynamicCache it does not return, and keeps the recurrent states in its blocks:
            # set both up as its forward does, and pass the cache
            model.model._setup_cache(config, batch, ids.device, dtype)
            cache = transformers.DynamicCache(config=config)
            model(input_ids=ids, use_cache=True, **_cache_argument(model, cache))
            blocks = [layer.temporal_block for layer in model.model.layers]
            states = [t for b in blocks for t in (getattr(b, "conv1d_state", None),
                                                  getattr(getattr(b, "rg_lru", None), "recurrent_states", None))]
            return cache, [t for t in states if t is not None]
        elif arch.kind == "whisper":
            features = torch.randn(batch, config.num_mel_bins, 2 * config.max_source_positions, dtype=dtype)
            out = model(input_features=features, decoder_input_ids=ids, use_cache=True)
        elif static:
            cache = transformers.StaticCache(config=config, max_cache_len=seq_len)
            model(input_ids=ids, use_cache=True, **_cache_argument(model, cache))
            return cache, []
        else:
            out = model(input_ids=ids, use_cache=True)
    # transformers 5.17's Mamba and Mamba-2 return theirs as `cache_params`
    return (getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            or getattr(out, "cache_params", None)), []


def _cache_argument(model: Any, cache: Any) -> dict[str, Any]:
    """`cache` as the model's forward takes it: `cache=` (transformers 5.25), `past_key_values=` or Mamba's
    `cache_params=` (5.17, whose forward swallowed an unknown `cache=` into its kwargs and left the cache empty)."""
    import inspect

    taken = inspect.signature(model.forward).parameters
    return {next((name for name in ("cache", "past_key_values", "cache_params") if name in taken), "cache"): cache}


@dataclass
class Measured:
    kv_bytes: int = 0  # self-attention keys and values held
    window_bytes: int = 0  # the token each full sliding layer dropped (see the module docstring)
    cross_bytes: int = 0  # an encoder-decoder's cross-attention keys and values
    state_bytes: int = 0  # conv / recurrent states of linear-attention and state-space layers
    other_bytes: int = 0  # any other tensor with more than one element
    kv_layers: int = 0
    cache_class: str = ""


def _tensor_bytes(value: Any) -> int:
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0


def measure(cache: Any, states: list[Any]) -> Measured:
    """Bytes of every tensor a transformers cache holds, by role, and of the model-held `states`."""
    from transformers.cache_utils import DynamicSlidingWindowLayer

    result = Measured(cache_class=type(cache).__name__)
    seen: set[int] = set()

    def walk(obj: Any, role: str) -> None:
        if isinstance(obj, torch.Tensor):
            if id(obj) in seen or obj.numel() <= 1:
                return
            seen.add(id(obj))
            nbytes = _tensor_bytes(obj)
            setattr(result, f"{role}_bytes", getattr(result, f"{role}_bytes") + nbytes)
        elif isinstance(obj, dict):
            for value in obj.values():
                walk(value, role)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value, role)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            layer_like = hasattr(obj, "keys") and isinstance(getattr(obj, "keys", None), torch.Tensor)
            if layer_like and role == "kv":
                result.kv_layers += 1
                tokens = obj.keys.shape[-2]
                if isinstance(obj, DynamicSlidingWindowLayer) and obj.cumulative_length > tokens and tokens:
                    result.window_bytes += (_tensor_bytes(obj.keys) + _tensor_bytes(obj.values)) // tokens
            for name, value in vars(obj).items():
                if name in ("keys", "values", "indexer_keys"):  # DeepSeek-V3.2's indexer caches a key per token
                    walk(value, role)
                elif name in ("conv_states", "recurrent_states", "ssm_states"):
                    walk(value, "state")
                elif name == "cross_attention_cache":
                    walk(value, "cross")
                elif name.startswith("_") or name in ("recurrent_states_history",):
                    continue
                else:
                    walk(value, role if name in ("layers", "self_attention_cache") else "other"
                         if isinstance(value, torch.Tensor) else role)

    walk(cache, "kv")
    walk(states, "state")
    return result


def _cli_kv(folder: Path, dtype: str, batch: int, seq_len: int) -> dict[str, Any] | None:
    """The kv_cache object of `weightdoctor plan-devices FOLDER --kv-cache ... --json`, run as a user runs it."""
    command = [sys.executable, "-m", "weightdoctor", "plan-devices", str(folder), "--gpu", "80GB", "--kv-cache",
               "--batch", str(batch), "--seq-len", str(seq_len), "--dtype", dtype, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)["kv_cache"]
    except (ValueError, KeyError):
        print(done.stderr[-500:], file=sys.stderr)
        return None


def _describe(kv: dict[str, Any] | None) -> str:
    if kv is None:
        return "-"
    state = kv.get("state_bytes")
    return (f"{kv['total_bytes']} B ({kv['num_layers']}x{kv['num_kv_heads']}x{kv['head_dim']})"
            + (f" + state {state} B" if state else " + state unsized" if state is None else ""))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="architectures to run (gpt2, gemma2, ...)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the quick slice of architectures, fp32, batch {BATCH}, seq-len {SEQ_LENS[-1]}; "
                             "no CLI")
    parser.add_argument("--cli", action="store_true", help="run the CLI check even with --quick")
    parser.add_argument("--verbose", action="store_true", help="print the note of each case")
    args = parser.parse_args()
    quiet_libraries()
    from dataclasses import asdict

    from weightdoctor.errors import UsageError
    from weightdoctor.plan_devices import PlanRequest, build_planned_model, open_plan_source, plan_devices

    archs = _archs()
    if args.only:
        archs = only_these(parser, archs, args.only)
    elif args.quick:
        archs = {name: arch for name, arch in archs.items() if arch.quick}
    counts = {"equal": 0, "different": 0, "error": 0}
    rows: list[tuple[str, str, str, str]] = []
    started = time.monotonic()
    dtypes = ("fp32",) if args.quick else tuple(DTYPES)
    seq_lens = SEQ_LENS[-1:] if args.quick else SEQ_LENS

    with tempfile.TemporaryDirectory() as tmp:
        for arch_name, arch in archs.items():
            variants = [False] + ([True] if arch.legacy else [])
            for legacy in variants:
                name = arch_name + ("/legacy" if legacy else "")
                folder = Path(tmp) / name
                try:
                    write_config(arch, folder, legacy)
                except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
                    counts["error"] += 1
                    rows.append((name, "-", "-", f"ERROR config: {type(exc).__name__}: {str(exc)[:120]}"))
                    continue
                cli_done = legacy or (args.quick and not args.cli)
                # (dtype, seq_len, static): the default cache at each dtype and length, then a StaticCache
                runs = [(dtype, seq_len, False) for dtype in dtypes for seq_len in seq_lens]
                if arch.kind == "causal":
                    runs.append(("fp32", SEQ_LENS[-1], True))
                for dtype, seq_len, static in runs:
                    case = f"{name}/{dtype}/b{BATCH}/s{seq_len}" + ("/static" if static else "")
                    try:
                        measured = measure(*_run_model(arch, folder, DTYPES[dtype], BATCH, seq_len, static))
                    except Exception as exc:  # noqa: BLE001
                        counts["error"] += 1
                        rows.append((case, "-", "-", f"ERROR model: {type(exc).__name__}: {exc}"[:200]))
                        continue
                    expected = measured.kv_bytes + measured.window_bytes
                    shown = f"{expected} B ({measured.kv_layers} layers)" + (
                        f" + state {measured.state_bytes} B" if measured.state_bytes else "")
                    try:
                        with open_plan_source(str(folder)) as checkpoint:
                            planned = build_planned_model(checkpoint, dtype)
                        report = plan_devices(planned, PlanRequest(gpus=[80 * 10**9], cpu=None,
                                                                   kv_cache=(BATCH, seq_len), suggest=False))
                        got = asdict(report.kv_cache)
                    except UsageError as exc:
                        got = None
                        refusal = str(exc)
                    except Exception as exc:  # noqa: BLE001
                        counts["error"] += 1
                        rows.append((case, shown, "-", f"ERROR plan: {type(exc).__name__}: {exc}"[:200]))
                        continue
                    problems = []
                    if got is None:
                        problems.append(f"refused: {refusal}"[:120])
                    else:
                        note = got.get("note") or ""
                        if got["total_bytes"] != expected:
                            problems.append(f"bytes {got['total_bytes']} vs {expected}")
                        if measured.cross_bytes:
                            # the encoder's output length here: 6 tokens, Whisper's max_source_positions frames;
                            # the estimate's `cross_attention_bytes` is for `encoder_seq_len` positions (Whisper's
                            # max_source_positions, else seq_len): compared per encoder position, and exactly for
                            # Whisper
                            encoder_tokens = 6 if arch.kind == "seq2seq" else planned.config["max_source_positions"]
                            positions = got.get("encoder_seq_len") or 0
                            sized = got.get("cross_attention_bytes") or 0
                            if not positions or sized * encoder_tokens != measured.cross_bytes * positions:
                                problems.append(f"cross-attention {measured.cross_bytes} B for {encoder_tokens} "
                                                f"encoder positions vs {sized} B for {positions}")
                            if arch.kind != "seq2seq" and sized != measured.cross_bytes:
                                problems.append(f"cross-attention {sized} vs {measured.cross_bytes}")
                            if "cross-attention" not in note:
                                problems.append("no cross-attention note")
                        sized = got.get("state_bytes")
                        if sized is None:
                            # unsized (a model whose meta run fails): the note must say so
                            if not measured.state_bytes or "state" not in note or "not counted" not in note:
                                problems.append(f"{measured.state_bytes} B of recurrent state, unsized and not "
                                                "noted as not counted")
                        elif sized != measured.state_bytes:
                            problems.append(f"recurrent state {sized} vs {measured.state_bytes}")
                        elif measured.state_bytes and "state" not in note:
                            problems.append(f"{measured.state_bytes} B of recurrent state not noted")
                        if measured.other_bytes:
                            problems.append(f"{measured.other_bytes} B of other cache tensors")
                    if not cli_done and got is not None:  # (a refusal is already the row's difference)
                        cli_done = True
                        cli = _cli_kv(folder, dtype, BATCH, seq_len)
                        # --json leaves out the private fields (`_layer_bytes`, `_latent`) that asdict keeps
                        if cli != {k: v for k, v in got.items() if not k.startswith("_")}:
                            problems.append(f"CLI said {_describe(cli)}")
                    verdict = "equal" if not problems else "DIFFERENT: " + "; ".join(problems)
                    if args.verbose and got is not None and got.get("note"):
                        verdict += f"  [{got['note']}]"
                    counts["equal" if not problems else "different"] += 1
                    rows.append((case, shown, _describe(got), verdict))
    print_table(("case", "expected", "got", "verdict"), rows, (None, 40, 40, None))
    return summary(counts, len(archs), started)


if __name__ == "__main__":
    sys.exit(main())
