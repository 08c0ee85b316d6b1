"""`weightdoctor shard`'s analysis: split (or merge) a checkpoint into Hugging Face shards.

The split follows huggingface_hub's `split_state_dict_into_shards_factory` (the function behind
`split_torch_state_dict_into_shards` and `save_pretrained`), called on the planned output sizes: tensors
in order (`split_order`), a new shard when the next tensor would pass the limit, a tensor larger than the limit alone
in its own shard. Only the size units differ: `--max` takes decimal and binary units alike.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from weightdoctor.checkpoint import Checkpoint
from weightdoctor.checkpoint.reader import natural_order
from weightdoctor.convert import (
    data_changes,
    drop_stale_hashes,
    flat_parts_warning,
    format_choice,
    nested_only_warning,
    output_metadata,
    source_metadata,
)
from weightdoctor.errors import UsageError
from weightdoctor.meta_model import is_tensorrt_llm_config
from weightdoctor.paths import expand_output, shell_word
from weightdoctor.renames import Rename
from weightdoctor.rewrite import (
    OPEN_CLIP_NAMES,
    DroppedAlias,
    OutputFile,
    PlannedTensor,
    SideFile,
    TensorSelection,
    WriteResult,
    bytes_to_write,
    check_not_input,
    disk_shortfall,
    dry_run_refusal,
    hub_cache_output_note,
    meta_release_note,
    nemo_weights_note,
    output_variant,
    pickles_copied_note,
    plan_tensors,
    refuse_names_too_long,
    side_files,
    with_config_dtype,
    write_plan,
)
from weightdoctor.units import format_bytes, parse_size, size_is_binary
from weightdoctor.wording import counted, plural

PATTERNS = {"safetensors": "model{suffix}.safetensors", "bin": "pytorch_model{suffix}.bin"}
# Libraries whose loaders look for weights under their own name: diffusers' models
# (`diffusion_pytorch_model{suffix}.safetensors` + `diffusion_pytorch_model.safetensors.index.json`, as its
# save_pretrained writes them), PEFT adapters (`adapter_model.safetensors`) and diffusers' LoRAs
# (`pytorch_lora_weights.safetensors`, as save_lora_weights writes them and load_lora_weights looks for them).
OWN_STEMS = ("diffusion_pytorch_model", "adapter_model", "pytorch_lora_weights")
# Mistral's native checkpoints (`consolidated.safetensors` + `params.json`) shard as
# `consolidated-00001-of-00051.safetensors` + `consolidated.safetensors.index.json` (Mistral-Large), the names
# mistral-inference and vLLM's `--load-format mistral` look for; `model-*.safetensors` beside a params.json and no
# config.json is read by neither them nor transformers. Safetensors only: there is no .bin of this layout.
OWN_SAFETENSORS_STEMS = ("consolidated",)


def shard_pattern(checkpoint: Checkpoint, fmt: str) -> str:
    """The file-name pattern of `fmt` shards for `checkpoint`: transformers' names, or the source's own where its
    library loads weights by another name (diffusers, PEFT, open_clip).

    Example:
        >>> # unet/ holds diffusion_pytorch_model.safetensors
        >>> shard_pattern(open_checkpoint("unet"), "safetensors")  # doctest: +SKIP
        'diffusion_pytorch_model{suffix}.safetensors'
    """
    for file in checkpoint.files:
        if file.role in ("weights", "index"):
            name = Path(file.relpath).name
            if name in OPEN_CLIP_NAMES.values():
                return OPEN_CLIP_NAMES[fmt].replace(".", "{suffix}.", 1)
            for stem in OWN_STEMS:
                if name.startswith((stem + ".", stem + "-")):
                    return stem + "{suffix}." + ("safetensors" if fmt == "safetensors" else "bin")
            for stem in OWN_SAFETENSORS_STEMS:
                if fmt == "safetensors" and name.startswith((stem + ".", stem + "-")) \
                        and name.endswith((".safetensors", ".safetensors.index.json")):
                    return stem + "{suffix}.safetensors"
    return PATTERNS[fmt]


def split_order(checkpoint: Checkpoint, tensors: list[PlannedTensor]) -> list[PlannedTensor]:
    """The order tensors are split in, file after file: a pickle's as saved (the state dict's: the modules'
    order, as save_pretrained splits), a safetensors file's in natural name order (`layers.2` before
    `layers.10`). A safetensors header keeps no order of its own, and its names sorted as strings would put
    layers 1, 10, 11, ... into one shard and layer 2 into another.

    Example:
        >>> [t.name for t in split_order(open_checkpoint("model.safetensors"), tensors)][:3]  # doctest: +SKIP
        ['lm_head.weight', 'model.embed_tokens.weight', 'model.layers.0.input_layernorm.weight']
    """
    if any(t.alias_of for t in tensors):  # a .bin output's aliases follow the tensor they share storage with
        return tensors
    formats = {f.relpath: f.format for f in checkpoint.files}
    first_seen: dict[str, int] = {}
    for position, tensor in enumerate(tensors):
        first_seen.setdefault(tensor.source_file, position)

    def key(item: tuple[int, PlannedTensor]) -> tuple[int, tuple[str | int, ...], int]:
        position, tensor = item
        natural = natural_order(tensor.name) if formats.get(tensor.source_file) == "safetensors" else ()
        return first_seen[tensor.source_file], natural, position

    return [tensor for _, tensor in sorted(enumerate(tensors), key=key)]


_DIFFUSERS_LORA = re.compile(r"[._](lora_[AB]|lora\.(down|up)|lora_(down|up))\.weight$")
# diffusers' first LoRA files (unet.save_attn_procs' pytorch_lora_weights.bin) hold the UNet's attention processors'
# LoRALinearLayer pairs under no component's prefix (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.
# to_q_lora.down.weight`; LoRAAttnAddedKVProcessor's add_k_proj_lora too), which load_lora_weights still reads
# (all but the add_k_proj_lora / add_v_proj_lora pairs, which it leaves out: diff_keys' _DIFFUSERS_OLD_ADDED_KV).
_ATTN_PROCESSOR_LORA = re.compile(r"\.processor\.[a-z_]+_lora\.(?:down|up)\.weight$")
# The parts only LyCORIS' algorithms save under kohya's names (LoHa, LoKr, Tucker LoCon, GLoRA, OFT / BOFT, full).
_LYCORIS_PART = re.compile(r"^lora_[a-z0-9]+_[^.]+\.(hada_|lokr_|lora_mid|a1\.|b1\.|oft_blocks$|oft_diag$|diff$)")


def single_file_kind(checkpoint: Checkpoint) -> str | None:
    """What single-file-only Stable Diffusion checkpoint `checkpoint` is (a kohya-style or diffusers-layout LoRA, an
    original-layout model as CivitAI shares them, Black Forest Labs' Flux), or None: the tools that load those read
    one .safetensors / .ckpt, no index."""
    names = [t.name for t in checkpoint.tensors]
    metadata = checkpoint.metadata or {}
    # kohya's ControlNet-LLLite (sdxl_train_control_net_lllite.py): `lllite_unet_<module>.conditioning1 / down / mid /
    # up`, with sd-scripts' ss_* metadata; it was called a kohya-style LoRA, which LoRA loaders do not read.
    if any(n.startswith("lllite_unet_") for n in names) or "lllite" in str(metadata.get("ss_network_module", "")):
        return CONTROLNET_LLLITE
    # Textual-inversion embeddings: kohya's and A1111's safetensors (`emb_params`), SDXL's (`clip_l` + `clip_g`), the
    # .pt's `string_to_param` (read as its `*`); A1111, ComfyUI and diffusers' load_textual_inversion read one file.
    if set(names) in ({"emb_params"}, {"clip_l", "clip_g"}) or (
            checkpoint.nested_key == "string_to_param" and names == ["*"]):
        return TEXTUAL_INVERSION
    if "ss_network_module" in metadata or any(n.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"))
                                              for n in names):
        # LyCORIS' files share kohya's names (and its ss_* metadata, network_module "lycoris.kohya"): a LoHa, LoKr,
        # GLoRA, OFT or full-diff file was called a kohya-style LoRA, with diffusers' load_lora_weights among its
        # loaders, which reads lora_down / lora_up only.
        if str(metadata.get("ss_network_module", "")).startswith("lycoris") or any(
                _LYCORIS_PART.search(n) for n in names):
            return LYCORIS_ADAPTER
        return KOHYA_LORA
    # diffusers' LoRA layout under any file name (ai-toolkit's and the diffusers trainers' Flux / SDXL LoRAs):
    # `transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight`, `unet.<module>.lora.down.weight`.
    if any(n.startswith(("unet.", "transformer.", "text_encoder.", "text_encoder_2."))
           and _DIFFUSERS_LORA.search(n) for n in names):
        return DIFFUSERS_LORA
    # (One of diffusers' first layout, unprefixed, was planned by plan-devices as a model that "fits on the GPUs",
    # without a word of the UNet it is applied to.)
    if names and all(_ATTN_PROCESSOR_LORA.search(n) for n in names):
        return DIFFUSERS_LORA
    # A LoRA for a diffusion transformer in its authors' or ComfyUI's layout (`diffusion_model.double_blocks.0.
    # img_attn.qkv.lora_A.weight`, XLabs' `double_blocks.0.processor.proj_lora1.down.weight`) was called "a
    # single-file Flux checkpoint", a model its loaders read whole.
    if any(_ORIGINAL_LORA.search(n) and _DIT_PART.match(n) for n in names):
        return ORIGINAL_LORA
    family = _transformer_family(checkpoint)
    # ComfyUI's single files of the newer models (CheckpointSave; Comfy-Org's flux1-dev-fp8.safetensors): the
    # diffusion model beside `text_encoders.<name>.` and `vae.`. Flux's was called a Stable Diffusion checkpoint
    # that AUTOMATIC1111 loads, which loads no Flux.
    if any(n.startswith("model.diffusion_model.") for n in names) and any(n.startswith("text_encoders.")
                                                                           for n in names):
        return comfyui_single_file(family)
    if family is not None:
        return family
    # Stability's Stable Cascade (Würstchen v3) stages in their authors' layout, bare (stage_c.safetensors,
    # stage_b.safetensors) or under ComfyUI's model.diffusion_model.: stage C maps the CLIP embeddings in
    # (clip_txt_mapper), stage B the EfficientNet latents (effnet_mapper). A bare one was named nothing, under
    # ComfyUI's prefix "a single-file diffusion checkpoint".
    stage_c = any(n in ("clip_txt_mapper.weight", "model.diffusion_model.clip_txt_mapper.weight") for n in names)
    if stage_c or any(n.startswith(("effnet_mapper.", "model.diffusion_model.effnet_mapper.")) for n in names):
        layout = "a single-file" if any(n.startswith("model.diffusion_model.") for n in names) else "an original-layout"
        return f"{layout} Stable Cascade stage {'C' if stage_c else 'B'} checkpoint"
    if any(n.startswith("model.diffusion_model.") for n in names) and not any(_LDM_UNET.match(n) for n in names):
        # ComfyUI saves every model it loads under `model.diffusion_model.` (LTX-Video's own release too): Wan's
        # blocks, AuraFlow's double_layers, PixArt's blocks were called "a single-file Stable Diffusion checkpoint".
        return SINGLE_FILE_DIFFUSION
    if any(n.startswith(("model.diffusion_model.", "first_stage_model.")) for n in names):
        # SDXL's two text encoders are conditioner.embedders.0 and .1 (SD 1.x / 2.x: cond_stage_model); the SDXL
        # refiner's one, OpenCLIP-G, is conditioner.embedders.0.model (it was called "a single-file Stable Diffusion
        # checkpoint", as SD 1.x).
        sdxl = any(n.startswith("conditioner.embedders.1.") for n in names)
        refiner = not sdxl and any(n.startswith("conditioner.embedders.0.model.") for n in names)
        return f"a single-file {'SDXL' if sdxl else 'SDXL refiner' if refiner else 'Stable Diffusion'} checkpoint"
    # lllyasviel's ControlNet files: 1.1's (input_blocks, zero_convs, input_hint_block, no prefix) and the extracted
    # copies A1111 / ComfyUI share (control_model.*).
    if any(n.startswith("control_model.") for n in names) or (
            any(n.startswith("zero_convs.") for n in names) and any(n.startswith("input_hint_block.") for n in names)):
        return "an original-layout ControlNet"
    # The original (ldm) VAE shared on its own (vae-ft-mse-840000-ema-pruned): encoder.down.N, not diffusers'
    # encoder.down_blocks.N.
    if any(n.startswith("post_quant_conv.") for n in names) and any(n.startswith("encoder.down.") for n in names):
        return "an original-layout Stable Diffusion VAE"
    if names and {n.split(".", 1)[0] for n in names} == {"image_proj", "ip_adapter"}:
        return IP_ADAPTER
    # Black Forest Labs' FLUX.1 Redux (flux1-redux-dev.safetensors): two linear layers that map SigLIP's image
    # features into Flux's text tokens, applied beside a Flux model; it was named nothing, and planned alone.
    if names and {n.split(".", 1)[0] for n in names} == {"redux_up", "redux_down"}:
        return FLUX_REDUX
    return None


# Stable Diffusion's (SD 1.x / 2.x / SDXL) UNet in its original (LDM / sgm) layout.
_LDM_UNET = re.compile(r"^model\.diffusion_model\.(?:input_blocks|middle_block|output_blocks|time_embed|label_emb|"
                       r"out\.\d)\.")
# A LoRA's down / up (or A / B) matrices: diffusers' and PEFT's names, kohya's, XLabs' `proj_lora1.down`.
_ORIGINAL_LORA = re.compile(r"[._](?:lora_[AB]|lora\.(?:down|up)|lora_(?:down|up)|lora\d*\.(?:down|up))\.weight$")
# A diffusion transformer in its authors' layout, bare (flux1-dev.safetensors) or under ComfyUI's
# `model.diffusion_model.` (its all-in-one files, beside `vae.` / `text_encoders.`) or a trainer's `diffusion_model.`.
_DIT_PART = re.compile(r"^(?:(?:model\.)?diffusion_model\.)?(double_blocks|single_blocks|joint_blocks|"
                       r"txt_in\.individual_token_refiner|img_in\.proj\.weight$)")


def _transformer_family(checkpoint: Checkpoint) -> str | None:
    """Which single-file diffusion transformer `checkpoint` is: Black Forest Labs' Flux (double_blocks and
    single_blocks), Tencent's HunyuanVideo (double and single blocks too, but its text tokens refined in
    txt_in.individual_token_refiner and its patches embedded by a 3-D conv, img_in.proj, [out, in, t, h, w]; its own
    release names the attention's parts img_attn_qkv), Stability's SD3 / SD3.5 (joint_blocks); None for none.
    A Flux or SD3 file under `model.diffusion_model.` was "a single-file Stable Diffusion checkpoint"."""
    found: set[str] = set()
    conv3d = False
    for tensor in checkpoint.tensors:
        match = _DIT_PART.match(tensor.name)
        if match is not None:
            found.add(match.group(1))
            conv3d = conv3d or (match.group(1).startswith("img_in") and len(tensor.shape) == 5)
    prefixed = any(t.name.startswith(("model.diffusion_model.", "diffusion_model.")) for t in checkpoint.tensors
                   if _DIT_PART.match(t.name))
    layout = "a single-file" if prefixed else "an original-layout"
    if {"double_blocks", "single_blocks"} <= found:
        # HunyuanVideo was called a Flux checkpoint: ComfyUI's saves of it name the attention img_attn.qkv as Flux's.
        hunyuan = ("txt_in.individual_token_refiner" in found or conv3d
                   or any(".img_attn_qkv." in t.name for t in checkpoint.tensors))
        return f"{layout} {'HunyuanVideo' if hunyuan else _flux_variant(checkpoint)} checkpoint"
    if "joint_blocks" in found:
        return f"{layout} {_sd3_variant(checkpoint)} checkpoint"
    return None


# What Flux's patch embedding (img_in, hidden × channels) reads: 64 latent channels (dev, schnell, Kontext), 384 with
# the masked image and mask packed beside them (FLUX.1 Fill), 128 with a control image's latents (FLUX.1 Depth /
# Canny); diffusers' from_single_file tells them apart so too.
_FLUX_INPUTS = {64: "Flux", 384: "Flux Fill", 128: "Flux Depth / Canny"}


def _flux_variant(checkpoint: Checkpoint) -> str:
    """Which model a file of Flux's double and single blocks is: lodestones' Chroma (a Flux derivative whose
    `distilled_guidance_layer` replaces Flux's modulation: no guidance_in, time_in or vector_in; it was called a Flux
    checkpoint), or Flux named by what its img_in reads (`_FLUX_INPUTS`)."""
    names = [t.name.removeprefix("model.").removeprefix("diffusion_model.") for t in checkpoint.tensors]
    if any(name.startswith("distilled_guidance_layer.") for name in names):
        return "Chroma (Flux-derived)"
    img_in = next((t for t in checkpoint.tensors if t.name.endswith("img_in.weight") and len(t.shape) == 2), None)
    return _FLUX_INPUTS.get(img_in.shape[1], "Flux") if img_in is not None else "Flux"


def _sd3_variant(checkpoint: Checkpoint) -> str:
    """Which SD3 model a file of MMDiT joint_blocks is: SD3.5 Medium's MMDiT-X has a second self-attention in its
    first blocks (`joint_blocks.N.x_block.attn2`), SD3.5 Large 38 blocks (SD3 Medium 24); each was "SD3"."""
    blocks: set[str] = set()
    attn2 = False
    for tensor in checkpoint.tensors:
        match = _SD3_BLOCK.search(tensor.name)
        if match is not None:
            blocks.add(match.group(1))
            attn2 = attn2 or match.group(2) == "attn2"
    return "SD3.5 Medium (MMDiT-X)" if attn2 else "SD3.5 Large" if len(blocks) == 38 else "SD3"


_SD3_BLOCK = re.compile(r"(?:^|\.)joint_blocks\.(\d+)\.x_block\.(attn2?)\.")


# IP-Adapter's weights (image_proj.*, ip_adapter.*), and the loaders that read them, one file each.
IP_ADAPTER = "an IP-Adapter"
CONTROLNET_LLLITE = "a ControlNet-LLLite"
TEXTUAL_INVERSION = "a textual-inversion embedding"
KOHYA_LORA = "a kohya-style LoRA"
FLUX_REDUX = "a FLUX.1 Redux image embedder (redux_up / redux_down)"
LYCORIS_ADAPTER = "a LyCORIS adapter (under kohya's flat lora_unet_ / lora_te_ names)"
DIFFUSERS_LORA = "a LoRA in diffusers' layout"
COMFYUI_SINGLE_FILE = "a ComfyUI single-file checkpoint (diffusion model, text encoders and VAE)"


def comfyui_single_file(family: str | None) -> str:
    """ComfyUI's all-in-one file, its diffusion model's family named where `_transformer_family` found one ("a
    single-file Flux checkpoint" -> "a ComfyUI single-file Flux checkpoint (...)")."""
    if family is None:
        return COMFYUI_SINGLE_FILE
    name = family.removeprefix("a single-file ").removeprefix("an original-layout ").removesuffix(" checkpoint")
    return f"a ComfyUI single-file {name} checkpoint (diffusion model, text encoders and VAE)"


def _comfyui_loaders(kind: str) -> str:
    """Who loads ComfyUI's all-in-one `kind`: ComfyUI's Load Checkpoint node; Forge too for Flux (the unnamed ones
    are no SD-family file: ComfyUI saves SD 1.x / 2.x / SDXL under cond_stage_model. / conditioner., and
    `text_encoders.` holds the newer models' encoders, AuraFlow's or Lumina's, which Forge does not load);
    diffusers' StableDiffusion3Pipeline.from_single_file for SD3, whose text encoders it finds under
    `text_encoders.clip_l / clip_g / t5xxl` (single_file_utils' clip_sd3 keys: Stability's
    sd3_medium_incl_clips.safetensors is such a file)."""
    forge = " Flux checkpoint" in kind  # Flux itself (not its Fill / Depth variants, nor Chroma)
    sd3 = ", diffusers' StableDiffusion3Pipeline.from_single_file" if " SD3" in kind else ""  # SD3.5's too
    return "ComfyUI's Load Checkpoint node" + (", Forge" if forge else "") + sd3
ORIGINAL_LORA = "a LoRA in a diffusion transformer's original layout"
# A diffusion model ComfyUI saves under `model.diffusion_model.` that is no Stable Diffusion UNet, Flux or SD3.
SINGLE_FILE_DIFFUSION = "a single-file diffusion checkpoint"
# The kinds above that are applied to a model loaded apart, not loaded as one.
ADD_ONS = frozenset({KOHYA_LORA, LYCORIS_ADAPTER, DIFFUSERS_LORA, ORIGINAL_LORA, CONTROLNET_LLLITE, TEXTUAL_INVERSION,
                     IP_ADAPTER, FLUX_REDUX})
_LOADERS = {IP_ADAPTER: "diffusers' load_ip_adapter, ComfyUI's IPAdapter nodes",
            CONTROLNET_LLLITE: "sd-scripts' sdxl_gen_img.py --control_net_lllite_models, kohya's "
                               "ControlNet-LLLite-ComfyUI nodes",
            TEXTUAL_INVERSION: "AUTOMATIC1111's and ComfyUI's embeddings folders, diffusers' load_textual_inversion",
            ORIGINAL_LORA: "ComfyUI's LoRA loaders, diffusers' load_lora_weights",
            # A LoRA is applied by a LoRA loader: from_single_file loads models, not LoRAs.
            KOHYA_LORA: "AUTOMATIC1111, ComfyUI, diffusers' load_lora_weights",
            DIFFUSERS_LORA: "diffusers' load_lora_weights, ComfyUI's LoRA loaders",
            LYCORIS_ADAPTER: "ComfyUI, AUTOMATIC1111 / Forge, LyCORIS' create_lycoris_from_weights",
            FLUX_REDUX: "ComfyUI's Load Style Model node",
            SINGLE_FILE_DIFFUSION: "ComfyUI; diffusers' from_single_file for the families it converts"}


def stable_audio_model(checkpoint: Checkpoint) -> bool:
    """Whether `checkpoint` is a stable-audio-tools model (Stable Audio Open's model.safetensors): its conditioned
    diffusion wrapper keeps the diffusion model as `model.model.`, the autoencoder as `pretransform.model.` and the
    conditioners (T5, the seconds embedders) as `conditioner.conditioners.`."""
    names = [t.name for t in checkpoint.tensors]
    return any(n.startswith("pretransform.model.") for n in names) and any(
        n.startswith(("model.model.", "conditioner.conditioners.")) for n in names)


# Vocos (gemelo-ai/vocos; charactr/vocos-mel-24khz, the vocoder of F5-TTS and others): its pretrained.py's
# Vocos.from_pretrained downloads config.yaml and pytorch_model.bin by those names, builds the model from the YAML's
# class_path entries (vocos.feature_extractors / vocos.models / vocos.heads) and torch.loads the .bin.
VOCOS_CONFIG = "config.yaml"
# The most bytes of a config.yaml read to tell Vocos' (its own is under 1 KB).
_VOCOS_CONFIG_MAX_BYTES = 64 * 1024


def vocos_model(checkpoint: Checkpoint) -> bool:
    """Whether `checkpoint` is a Vocos vocoder's folder: its ConvNeXt backbone's and ISTFT head's names
    (`backbone.convnext.N.pwconv1`, `head.out`) beside a config.yaml that names vocos' classes."""
    names = [t.name for t in checkpoint.tensors]
    if not (any(n.startswith("backbone.convnext.") and ".pwconv1." in n for n in names)
            and any(n.startswith("head.") for n in names)):
        return False
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    config = folder / VOCOS_CONFIG
    try:
        if not config.is_file() or config.stat().st_size > _VOCOS_CONFIG_MAX_BYTES:
            return False
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return vocos_config(text)


def vocos_config(text: str) -> bool:
    """Whether `text` is a config.yaml that Vocos.from_hparams builds a model from: a mapping whose
    feature_extractor, backbone and head are each `{class_path, init_args}`, the backbone's and head's classes
    vocos' own. It indexes config["feature_extractor"] / ["backbone"] / ["head"]; a file that only mentions
    `class_path: vocos.` (a comment, Vocos' Lightning training config with its parts under model.init_args) is not
    one, and from_hparams raises on it.

        >>> vocos_config("feature_extractor:\\n  class_path: vocos.feature_extractors.MelSpectrogramFeatures\\n"
        ...              "backbone:\\n  class_path: vocos.models.VocosBackbone\\n"
        ...              "head:\\n  class_path: vocos.heads.ISTFTHead\\n")
        True
        >>> vocos_config("# class_path: vocos.models.VocosBackbone\\nmodel:\\n  dim: 16\\n")
        False
    """
    try:
        import yaml
    except ImportError:  # declared in pyproject.toml; a broken install calls nothing Vocos'
        return False
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    if not isinstance(config, dict):
        return False
    parts = [config.get(part) for part in ("feature_extractor", "backbone", "head")]
    if not all(isinstance(part, dict) and isinstance(part.get("class_path"), str) for part in parts):
        return False
    return all(part["class_path"].startswith("vocos.") for part in parts[1:])


VOCOS_LOADS = ("Vocos.from_pretrained reads config.yaml and pytorch_model.bin by those names (torch.load, then "
               "load_state_dict)")


def timm_config(config: object) -> bool:
    """Whether `config` is a timm config.json (its model named in `architecture`, no transformers `model_type`), not
    a TensorRT-LLM checkpoint's, which names its model so too."""
    return (isinstance(config, dict) and isinstance(config.get("architecture"), str) and "model_type" not in config
            and not is_tensorrt_llm_config(config))


@dataclass(frozen=True)
class ShardInfo:
    """One output shard: file name, bytes of tensor data, tensor count, first and last tensor name.

    `oversized` is True for a shard holding a single tensor larger than `--max`.
    """

    filename: str
    size_bytes: int
    num_tensors: int
    first: str | None
    last: str | None
    oversized: bool


@dataclass
class ShardPlan:
    """What `shard` will write into `output`.

    Attributes:
        max_bytes: the limit in bytes (None: one file); `max_text`: as typed; `units`: "decimal" or
            "binary" (how `max_text` was read), or None.
        shards: each shard; `index`: the index file name (None when everything fits one file).
        total_bytes / num_tensors: of the output. dtype, cast, kept_fp32, renamed, dropped_aliases,
        copied, metadata, warnings: as in `convert`.
    """

    source: str
    output: str
    format: str
    max_bytes: int | None
    max_text: str | None
    units: str | None
    shards: list[ShardInfo]
    index: str | None
    num_tensors: int
    total_bytes: int
    dtype: str | None
    cast: dict[str, int]
    kept_fp32: list[str]
    renamed: int
    dropped_aliases: list[DroppedAlias]
    copied: list[str]
    metadata: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    _selection: TensorSelection | None = field(default=None, repr=False)
    _files: list[OutputFile] = field(default_factory=list, repr=False)
    _copy_paths: list[SideFile] = field(default_factory=list, repr=False)


@dataclass
class ShardResult:
    """A finished (or dry-run) shard: the plan and what was written (None for a dry run)."""

    plan: ShardPlan
    write: WriteResult | None
    dry_run: bool
    # With --dry-run: why the write would be refused (`PATH: why`, as the write would say it), None when it would
    # go ahead (and always without --dry-run, where a refused write is exit 2).
    would_refuse: str | None = None
    # The plan's warnings again, at the top level where inspect, diff-keys, check-dtype and plan-devices put
    # theirs, so that one `jq .warnings` reads every command's; `plan.warnings` stays as it was.
    warnings: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.warnings = self.plan.warnings


def split_sizes(
    sizes: dict[str, int], max_bytes: int | None, pattern: str, storage_ids: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """File name -> tensor names, split by huggingface_hub's own splitter on these sizes.

    Example:
        >>> split_sizes({"a": 6, "b": 6, "c": 2}, 10, "model{suffix}.safetensors")
        {'model-00001-of-00002.safetensors': ['a'], 'model-00002-of-00002.safetensors': ['b', 'c']}
    """
    from huggingface_hub import split_state_dict_into_shards_factory

    ids = storage_ids or {}
    # The splitter skips str values (bitsandbytes entries), so each tensor is stood in for by a 1-tuple.
    split = split_state_dict_into_shards_factory(
        {name: (name,) for name in sizes},
        get_storage_size=lambda item: sizes[item[0]],
        get_storage_id=lambda item: ids.get(item[0]),
        filename_pattern=pattern,
        max_shard_size=max_bytes if max_bytes is not None else sys.maxsize,
    )
    return split.filename_to_tensors


def single_file_command(checkpoint: Checkpoint, output: str, key: str | None = None, dtype: str | None = None,
                        keep_fp32: str | None = None, renames: list[Rename] | None = None,
                        metadata: dict[str, str] | None = None) -> str:
    """The `weightdoctor convert` that writes, as one file named `output`, what shard writes as a folder of shards
    there: the source as given, read as it was read (--revision, --key) and with the same changes, each word quoted
    for a shell. `weightdoctor convert -o merged.safetensors` alone, without the source, was refused pasted.

    Example:
        >>> from weightdoctor.checkpoint import Checkpoint
        >>> single_file_command(Checkpoint("my model", Path("my model"), "safetensors", False, [], []),
        ...                     "out/merged.safetensors", dtype="float16")
        "weightdoctor convert 'my model' --dtype float16 -o out/merged.safetensors"
    """
    words = ["weightdoctor convert", shell_word(checkpoint.source, argument=True)]
    words += [f"--revision {shell_word(checkpoint.revision)}"] if checkpoint.revision else []
    words += [f"--key {shell_word(key)}"] if key is not None else []
    words += [f"--dtype {dtype}"] if dtype is not None else []
    words += [f"--keep-fp32 {shell_word(keep_fp32)}"] if keep_fp32 is not None else []
    words += [rename.as_flag() for rename in renames or []]
    words += [f"--metadata {shell_word(f'{name}={value}')}" for name, value in (metadata or {}).items()]
    return " ".join([*words, f"-o {shell_word(output, argument=True)}"])


def plan_shard(
    checkpoint: Checkpoint,
    output: str | Path,
    *,
    max_size: str | None,
    fmt: str = "safetensors",
    dtype: str | None = None,
    keep_fp32: str | None = None,
    renames: list[Rename] | None = None,
    metadata: dict[str, str] | None = None,
    key: str | None = None,
) -> ShardPlan:
    """Plan shards of at most `max_size` (None, "0": one file) in `output`, writing nothing.

    Example:
        >>> plan = plan_shard(open_checkpoint("bert"), "out", max_size="200MB")  # doctest: +SKIP
        >>> [(s.filename, s.num_tensors) for s in plan.shards]  # doctest: +SKIP

    Raises:
        UsageError: a size that does not parse, a negative size, an unknown format.
        OutputError: the output is (or holds) the input.
    """
    if fmt.strip().lower() not in PATTERNS:
        raise UsageError(format_choice("--format", fmt))
    fmt = fmt.strip().lower()  # `--format SAFETENSORS`, as every choice is read whatever its case
    limit = parse_size(max_size) if max_size is not None else 0
    max_bytes = limit or None
    units = None
    if max_size is not None and limit:
        units = "binary" if size_is_binary(max_size) else "decimal"
    out = expand_output(output)  # as a source is: a quoted "~/x" must not become a folder named ~
    check_not_input(checkpoint, out)
    selection = plan_tensors(checkpoint, dtype=dtype, keep_fp32=keep_fp32, renames=renames, fmt=fmt)
    selection.tensors = split_order(checkpoint, selection.tensors)
    sizes = {t.name: t.nbytes for t in selection.tensors}
    # Aliases (bin only) share a storage: the splitter keeps them in the shard of the tensor they alias.
    storage_ids = {t.name: (t.alias_of or t.name) for t in selection.tensors if fmt == "bin"}
    if fmt == "bin":
        aliased = {t.alias_of for t in selection.tensors if t.alias_of}
        storage_ids = {n: s for n, s in storage_ids.items() if s in aliased}
    pattern = shard_pattern(checkpoint, fmt)
    stem, extension = pattern.split("{suffix}.")
    source_file = next((f for f in checkpoint.files if f.role == "index"),
                       next((f for f in checkpoint.files if f.role == "weights"), None))
    variant = output_variant(source_file.relpath, dtype) if source_file is not None else None
    if variant:  # a dtype variant keeps its name, as convert keeps it: from_pretrained(variant=...) reads it
        pattern = f"{stem}.{variant}{{suffix}}.{extension}"
    by_file = split_sizes(sizes, max_bytes, pattern, storage_ids) if sizes else {pattern.format(suffix=""): []}
    planned = {t.name: t for t in selection.tensors}
    shards: list[ShardInfo] = []
    files: list[OutputFile] = []
    warnings = list(checkpoint.warnings) + selection.warnings
    named = Path(output).name
    if named.endswith((".safetensors", ".bin", ".pt", ".pth")):
        # `-o merged.safetensors` reads as one file, but shard always writes a folder (shards, index, config):
        # a folder with a weight file's name is what the user then finds.
        warnings.append(f"{named} is written as a folder holding the shards, not as a single file: name it "
                        f"{shell_word(output.rsplit('.', 1)[0] + '/', argument=True)} for a folder; for a single "
                        "file (where no folder of that name is in the way), use "
                        f"{single_file_command(checkpoint, output, key, dtype, keep_fp32, renames, metadata)}")
    too_large: list[tuple[str, int]] = []
    for filename, names in by_file.items():
        size = sum(planned[n].nbytes for n in names if planned[n].alias_of is None)
        oversized = max_bytes is not None and size > max_bytes
        if oversized:
            too_large.append((names[0], size))
        shards.append(ShardInfo(filename, size, len(names), names[0] if names else None,
                                names[-1] if names else None, oversized))
        files.append(OutputFile(filename, names, size))
    # Said in the family --max was typed in: `(507.14 KB)` beside `--max 500KiB` read as over the limit.
    binary = units == "binary"

    def over(size: int) -> str:
        # A size that rounds to the limit's own figure is said in bytes: "4.00 KB is larger than --max 4KB" for
        # 4,004 bytes read as a contradiction.
        shown = format_bytes(size, binary)
        return f"{size:,} bytes" if max_bytes is not None and shown == format_bytes(max_bytes, binary) else shown

    if len(too_large) == 1:
        name, size = too_large[0]
        warnings.append(f"{name} ({over(size)}) is larger than --max {max_size}: it gets a shard of its own")
    elif too_large:  # one line, not one per tensor (a --max below most tensors of a model)
        largest = sorted(too_large, key=lambda item: -item[1])
        shown = ", ".join(f"{name} ({over(size)})" for name, size in largest[:3])
        more = f" and {len(largest) - 3} more" if len(largest) > 3 else ""
        warnings.append(f"{counted(len(too_large), 'tensor')} {plural(len(too_large), 'is', 'are')} "
                        f"larger than --max {max_size}: each gets a shard of its own "
                        f"({shown}{more})")
    index_name = f"{stem}.{extension}.index.{variant}.json" if variant else f"{stem}.{extension}.index.json"
    index = index_name if len(files) > 1 else None
    refuse_names_too_long(out, [f.filename for f in files] + ([index] if index else []))
    if index is not None and pattern.startswith("adapter_model"):
        warnings.append("peft loads an adapter from one adapter_model file: it cannot load these shards")
    if index is not None and pattern.startswith("pytorch_lora_weights"):
        warnings.append("diffusers' load_lora_weights loads one pytorch_lora_weights file: it reads no index and "
                        "cannot load these shards")
    if index is not None and timm_config(checkpoint.config):
        warnings.append("timm loads one model.safetensors or pytorch_model.bin (create_model(pretrained=True), from "
                        "hf-hub: and local-dir: alike): it reads no index and cannot load these shards")
    if index is not None and is_tensorrt_llm_config(checkpoint.config):
        warnings.append("TensorRT-LLM reads rank0.safetensors, one file per rank of its config's mapping (trtllm-build "
                        "--checkpoint_dir): it reads no index and cannot load these shards")
    if index is not None and pattern.startswith("open_clip_"):
        warnings.append(f"open_clip loads one {OPEN_CLIP_NAMES[fmt]} (create_model_from_pretrained, hf-hub: and "
                        "local-dir: alike): it reads no index and cannot load these shards")
    if index is not None and stable_audio_model(checkpoint):
        warnings.append("a stable-audio-tools model (Stable Audio Open's model.model.*, pretransform.model.*, "
                        "conditioner.conditioners.*): its get_pretrained_model and load_ckpt_state_dict load one "
                        "model.safetensors or model.ckpt beside model_config.json: they read no index and cannot load "
                        "these shards")
    if (index is not None or fmt != "bin") and vocos_model(checkpoint):
        warnings.append(f"a Vocos vocoder (config.yaml's vocos classes): {VOCOS_LOADS}; it reads no index nor "
                        "safetensors and cannot load " + ("these shards" if index is not None else "this output")
                        + ": keep one pytorch_model.bin for it")
    if index is not None and not pattern.startswith(("adapter_model", "pytorch_lora_weights", "open_clip_")):
        single = single_file_kind(checkpoint)  # the libraries above said already
        if single:
            loaders = _comfyui_loaders(single) if single.startswith("a ComfyUI single-file") else _LOADERS.get(
                single, "ComfyUI, diffusers' from_single_file" if single.endswith(
                ("Flux checkpoint", "HunyuanVideo checkpoint", "SD3 checkpoint", "Flux Fill checkpoint",
                 "Flux Depth / Canny checkpoint", "Chroma (Flux-derived) checkpoint", "SD3.5 Large checkpoint",
                 "SD3.5 Medium (MMDiT-X) checkpoint", "Stable Cascade stage C checkpoint",
                 "Stable Cascade stage B checkpoint"))
                else "AUTOMATIC1111, ComfyUI, diffusers' from_single_file")
            warnings.append(f"{single} is loaded from one file ({loaders}): none of them reads an index or these "
                            "shards")
    carried, lost = source_metadata(checkpoint, fmt, renames)
    if lost:
        warnings.append(lost)
    carried, stale = drop_stale_hashes(carried, selection.cast, data_changes(selection, single_output=index is None))
    if stale:
        warnings.append(stale)
    user_metadata = {**carried, **(metadata or {})}
    if fmt == "bin" and metadata and index is None:  # several shards keep it in their index
        warnings.append("a .bin file holds no metadata: --metadata is ignored")
    if checkpoint.nested_key:
        warnings.append(nested_only_warning(checkpoint))
    if (in_cache := hub_cache_output_note(out)) is not None:
        warnings.append(in_cache)
    flat = flat_parts_warning(checkpoint, list(planned))
    if flat:
        warnings.append(flat)
    source_dir = checkpoint.path if checkpoint.path.is_dir() else None
    if source_dir is None and checkpoint.sharded:
        source_dir = checkpoint.path.parent
    copy_paths, left_out = side_files(
        source_dir, [f.path for f in checkpoint.files if f.role != "config"], output=out)
    if left_out:
        warnings.append("not copied: " + ", ".join(left_out))
    typed = checkpoint.source if checkpoint.path.is_dir() else os.path.dirname(checkpoint.source) or "."
    pickle_note = pickles_copied_note(copy_paths, fmt, source_dir, typed, str(out))
    if pickle_note:
        warnings.append(pickle_note)
    if (nemo := nemo_weights_note(checkpoint, [f.filename for f in files])) is not None:
        warnings.append(nemo)
    if (meta := meta_release_note(checkpoint, [f.filename for f in files])) is not None:
        warnings.append(meta)
    copy_paths, config_note = with_config_dtype(copy_paths, dtype, len(selection.kept_fp32),
                                                  len(selection.kept_fp32_by_class))
    if config_note:
        warnings.append(config_note)
    # Said in a --dry-run too (a write refuses it before writing anything: `write_outputs`).
    shortfall = disk_shortfall(out, bytes_to_write(files, copy_paths), files=files, copy_files=copy_paths)
    if shortfall is not None:
        warnings.append(f"{out}: {shortfall}: the write would be refused")
    return ShardPlan(
        source=checkpoint.source,
        output=str(out),
        format=fmt,
        max_bytes=max_bytes,
        max_text=max_size,
        units=units,
        shards=shards,
        index=index,
        num_tensors=len(selection.tensors),
        total_bytes=selection.total_bytes,
        dtype=dtype,
        cast=selection.cast,
        kept_fp32=selection.kept_fp32,
        renamed=selection.renamed,
        dropped_aliases=selection.dropped,
        copied=[p.relpath for p in copy_paths],
        metadata=output_metadata(fmt, index is None, selection.dropped, user_metadata, checkpoint.source),
        warnings=warnings,
        _selection=selection,
        _files=files,
        _copy_paths=copy_paths,
    )


def dry_run_shard(plan: ShardPlan, *, force: bool = False, checkpoint: Checkpoint | None = None) -> ShardResult:
    """What `run_shard(plan, force=force)` would do, writing nothing: the plan, and in `would_refuse` why the
    write would be refused before writing anything (see `weightdoctor.rewrite.dry_run_refusal`), or None."""
    refusal = dry_run_refusal(plan, plan._files, single_file=False, force=force, checkpoint=checkpoint)
    return ShardResult(plan=plan, write=None, dry_run=True, would_refuse=refusal)


def run_shard(
    checkpoint: Checkpoint,
    plan: ShardPlan,
    *,
    force: bool = False,
    verify: bool = True,
    allow_overflow: bool = False,
    advance: Callable[[int], None] = lambda n: None,
) -> ShardResult:
    """Write the shards of `plan` into a staging folder (index last), verify them, swap the folder in.

    Raises:
        CastOverflow, OutputError (see `weightdoctor.rewrite.write_outputs`).
    """
    written = write_plan(
        checkpoint, plan, plan._files, single_file=False, force=force, verify=verify,
        allow_overflow=allow_overflow, advance=advance,
    )
    return ShardResult(plan=plan, write=written, dry_run=False)
