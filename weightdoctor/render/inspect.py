"""Rich rendering of `InspectReport` for people."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.tree import Tree

from weightdoctor.errors import clip_middle
from weightdoctor.jsontext import MAX_ECHOED_CHARS
from weightdoctor.quantized import QuantizedSummary
from weightdoctor.render.text import (
    MAX_LISTED_CHARS,
    MAX_SHOWN_NAME_CHARS,
    BrokenAtSlashes,
    escape,
    listed,
    shown_name,
    wrapped_name,
)
from weightdoctor.structure import InspectReport, ModuleNode
from weightdoctor.units import format_bytes, format_count
from weightdoctor.wording import counted, plural

# What a file keeping its weights under these keys is, where it is no training checkpoint.
_NESTED_KINDS = {
    "string_to_param": "a textual-inversion embedding: A1111's and the SD scripts' token vectors",
    "params_ema": "a BasicSR checkpoint: its averaged weights",
    # RVC's and GPT-SoVITS' released voice models keep their weights here beside the settings that build the model
    # (a note names which); no training tool in sight uses the key, so "a training checkpoint" is no fair guess.
    "weight": "the model's weights beside other entries",
}


def nested_kind(key: str) -> str:
    """What holding the state dict at `key` makes the file, in words: `a training checkpoint` unless known."""
    return _NESTED_KINDS.get(key, "a training checkpoint")

def summary_table(report: InspectReport) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a path longer than the panel: folded, not cut with …
    # The arrow outside escape(): it escapes what the console cannot encode, our glyphs too (render/text.py).
    source = escape(report.source) + ("" if report.source == report.resolved_path
                                      else f" → {escape(report.resolved_path)}")
    table.add_row("source", BrokenAtSlashes(
        source + (f" (revision {escape(report.revision)})" if report.revision else "")))
    table.add_row("format", report.format + (" (sharded)" if report.sharded else ""))
    weight_files = [f for f in report.files if f.role == "weights"]
    on_disk = format_bytes(sum(f.size_bytes for f in weight_files))
    table.add_row("files", f"{counted(len(weight_files), 'weight file')}, {on_disk} on disk")
    table.add_row("tensors", f"{report.num_tensors:,}")
    table.add_row("parameters", f"{report.num_params:,} ({format_count(report.num_params)})"
                  + (" [dim]stored values[/]" if report.quantized else ""))
    if report.quantized:
        table.add_row("quantized", quantized_line(report.quantized))
    if report.adapter:
        table.add_row("PEFT adapter", escape(adapter_line(report.adapter, report.source)))
    if report.native_params:
        table.add_row("params.json", escape(", ".join(f"{k}={v}" for k, v in report.native_params.items()))
                      + " [dim](Meta's / Mistral's own config; transformers reads a config.json)[/]")
    table.add_row("tensor bytes", f"{report.total_bytes:,} ({format_bytes(report.total_bytes)})")
    table.add_row("dtypes", ", ".join(f"{d}: {format_count(n)}" for d, n in report.dtypes.items()) or "-")
    if report.shared_tensors:
        # Names from the file: escaped (a pickle key `a[/]` was a MarkupError), and a few thousand of them clipped.
        table.add_row("shared storage", listed((" ≡ ".join(g) for g in report.shared_tensors), "; "))
    if report.nested_key:
        table.add_row("state dict at", f"[cyan]{escape(report.nested_key)}[/] ({nested_kind(report.nested_key)})")
    if report.all_other_entries:
        table.add_row("other entries", listed(report.all_other_entries))
    if report.all_skipped_entries:
        table.add_row("non-tensor entries", listed(folded_entries(report.all_skipped_entries)))
    if report.metadata:
        table.add_row("metadata", listed(f"{k}={v}" for k, v in report.metadata.items()))
    if report.security is not None:
        table.add_row("security", security_line(report.security))
    if report.verify is not None:
        # A GGUF has no CRCs: what --verify checked there is its data layout.
        label = "zip CRCs" if getattr(report.verify, "members_checked", 0) or report.format != "gguf" else "verify"
        table.add_row(label, verify_line(report.verify))
    return table


def adapter_line(adapter: dict, source: str | None = None) -> str:
    """`LoRA r=8 alpha=16 on q_proj, v_proj; base meta-llama/Llama-2-7b-hf (CAUSAL_LM)`."""
    from weightdoctor.structure import peft_method_name

    text = peft_method_name(adapter["peft_type"]) if "peft_type" in adapter else "?"
    if adapter.get("use_dora") is True:  # weight-decomposed LoRA: a magnitude vector beside each pair
        text += " (DoRA)"
    if adapter.get("use_rslora") is True:  # its update is scaled by alpha / sqrt(r): a merge by alpha / r is wrong
        text = f"{text[:-1]}, rsLoRA: scaled by alpha/√r)" if text.endswith(")") else \
            f"{text} (rsLoRA: scaled by alpha/√r)"
    size = adapter_size(adapter)
    # A rank as LoRA's is written (r=8); another size in words beside the method: OFT (block size 32), or inside
    # the parentheses a method's name has: Llama-Adapter (adaption prompt, 10 adapter tokens).
    if "=" in size:
        text += f" {size}"
        # peft's rank_pattern gives the modules it matches another rank than r: "LoRA r=64" was all an adapter of
        # rank 8 but for two layers' said.
        # PaCA's paca_indices_pattern: the layers it matches train as many input columns as it lists for them.
        for field, said in (("rank_pattern", "rank_pattern"), ("paca_columns_pattern", "paca_indices_pattern")):
            ranks = adapter.get(field)
            if isinstance(ranks, dict) and ranks and size.startswith("r="):
                shown = _listed(sorted({str(rank) for rank in ranks.values()}, key=lambda rank: (len(rank), rank)))
                text += f" (r={shown} where {said} names {_counted(len(ranks), 'pattern')})"
    elif size:
        text = f"{text[:-1]}, {size})" if text.endswith(")") else f"{text} ({size})"
    if "paca_alpha" in adapter:  # PaCA's scaling, paca_alpha / r, as LoRA's lora_alpha / r
        text += f" alpha={adapter['paca_alpha']}"
    if "lora_alpha" in adapter:
        text += f" alpha={adapter['lora_alpha']}"
        alphas = adapter.get("alpha_pattern")  # as rank_pattern: another alpha for the modules it matches
        if isinstance(alphas, dict) and alphas:
            shown = _listed(sorted({str(alpha) for alpha in alphas.values()}, key=lambda alpha: (len(alpha), alpha)))
            text += f" (alpha={shown} where alpha_pattern names {_counted(len(alphas), 'pattern')})"
    targets = adapter.get("target_modules")
    if targets:
        text += " on " + _listed(targets)
        # layers_to_transform: "on q_proj, v_proj" was said of an adapter that adapts layer 1's alone.
        layers = adapter.get("layers_to_transform")
        if isinstance(layers, list) and layers:
            text += f" in {'layer' if len(layers) == 1 else 'layers'} {_listed([str(layer) for layer in layers])}"
            if adapter.get("layers_pattern"):
                text += f" (under {_listed(adapter['layers_pattern'])})"
        if adapter.get("exclude_modules"):  # "on q_proj" was said of an adapter that leaves some of them out
            text += f" except {_listed(adapter['exclude_modules'])}"
    if adapter.get("target_parameters"):
        text += f"{' and' if targets else ' on'} the parameters {_listed(adapter['target_parameters'])}"
    if isinstance(adapter.get("trainable_token_count"), int):  # LoRA's trainable_token_indices
        text += f"; trains {_counted(adapter['trainable_token_count'], 'token embedding')} (trainable_token_indices)"
    if adapter.get("modules_to_save"):
        # What the file holds of them: peft lists a SEQ_CLS adapter's classifier and score, the model has one.
        saved = adapter.get("modules_saved", adapter["modules_to_save"])
        text += (f"; saves {_listed(saved)} whole" if saved else
                 f"; modules_to_save {_listed(adapter['modules_to_save'])}, none stored")
    if "base_model_name_or_path" in adapter:
        text += f"; base {clip_middle(str(adapter['base_model_name_or_path']), MAX_SHOWN_NAME_CHARS)}"
    if "task_type" in adapter:
        text += f" ({clip_middle(str(adapter['task_type']), MAX_SHOWN_NAME_CHARS)})"
    if adapter_steps(adapter, source):
        return text + " — the lines below load it onto that base and check it fits"
    # No base named, or no source: in words ("diff-keys ADAPTER BASE" read like a command to paste).
    return (text + " — load it onto its base model with peft's PeftModel.from_pretrained; weightdoctor diff-keys, "
            "given the adapter and then its base, checks the fit")


def adapter_steps(adapter: dict, source: str | None, revision: str | None = None) -> list[tuple[str, str]]:
    """(what it does, the line to paste) for an adapter inspected as `source` whose adapter_config.json names its
    base (base_model_name_or_path): the PeftModel.from_pretrained that loads it, where its config gives the base's
    class, and the diff-keys that checks it fits; [] when the base or the source is not known."""
    from weightdoctor.diff_keys import peft_loading
    from weightdoctor.paths import shell_word

    base = adapter.get("base_model_name_or_path")
    if not isinstance(base, str) or not base or source is None:
        return []
    base_revision = adapter.get("revision") if isinstance(adapter.get("revision"), str) else None
    steps = []
    loading = peft_loading(source, base, adapter, base_revision, revision)
    if loading.startswith("import peft, transformers; "):  # the call, else words
        steps.append(("to load it onto its base (adapter_config.json's base_model_name_or_path), in Python:", loading))
    words = ["weightdoctor diff-keys", shell_word(source, argument=True), shell_word(base, argument=True)]
    words += [f"--revision {shell_word(revision, argument=True)}"] if revision is not None else []
    words += [f"--revision-b {shell_word(base_revision, argument=True)}"] if base_revision is not None else []
    steps.append(("to check it fits that base:", " ".join(words)))
    return steps


def adapter_size(adapter: dict) -> str:
    """What sizes a PEFT adapter, as its config says it: `r=8` for the methods whose rank is their size, the block
    size, frequencies or tokens for those whose `r` is none (peft's OFT config writes r=0 beside oft_block_size).

    Example:
        >>> adapter_size({"peft_type": "OFT", "r": 0, "oft_block_size": 32})
        'block size 32'
        >>> adapter_size({"peft_type": "LORA", "r": 8})
        'r=8'
    """
    method = adapter.get("peft_type")

    def given(key: str) -> object | None:
        value = adapter.get(key)  # 0 is peft's "not set" for the sizes one of two sets (OFT's r, BOFT's block_num)
        return value if value not in (None, 0, False) else None

    if method == "ADALORA":  # AdaLoRA ignores r: it starts at init_r and prunes to an average of target_r
        return " ".join(f"{key}={adapter[key]}" for key in ("init_r", "target_r") if given(key) is not None)
    if method in ("OFT", "BOFT"):
        prefix = "oft" if method == "OFT" else "boft"
        parts = [f"r={adapter['r']}"] if given("r") is not None else []
        if given(f"{prefix}_block_size") is not None:
            parts.append(f"block size {adapter[f'{prefix}_block_size']}")
        if given("boft_block_num") is not None:
            parts.append(_counted(adapter["boft_block_num"], "block"))
        if method == "BOFT" and isinstance(adapter.get("boft_n_butterfly_factor"), int) and \
                adapter["boft_n_butterfly_factor"] > 1:
            parts.append(f"butterfly factor {adapter['boft_n_butterfly_factor']}")
        return ", ".join(parts)
    # WaveFT's n_frequency counts wavelet coefficients (peft's WaveFTConfig), FourierFT's frequencies: inspect said
    # "WaveFT (2592 frequencies)". A count of one is singular: CPT's default config said "1 virtual tokens".
    frequencies = ("wavelet coefficient", None) if method == "WAVEFT" else ("frequency", "frequencies")
    for key, words in (("block_size", "block size {}"), ("n_frequency", frequencies),
                       ("group_size", "group size {}"), ("num_virtual_tokens", ("virtual token", None)),
                       ("adapter_len", ("adapter token", None)),
                       ("effective_rank", "effective rank {}"), ("token_count", ("token", None))):
        if given(key) is not None:
            return words.format(adapter[key]) if isinstance(words, str) else _counted(adapter[key], *words)
    return f"r={adapter['r']}" if given("r") is not None else ""


def _counted(value: object, singular: str, plural_form: str | None = None) -> str:
    """`value` and the noun that fits it, the number as the config writes it (a count of 1 is singular).

    Example:
        >>> _counted(1, "virtual token"), _counted(1000, "frequency", "frequencies"), _counted("8", "block")
        ('1 virtual token', '1000 frequencies', '8 blocks')
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return counted(value, singular, plural_form, grouped=False)
    return f"{value} {plural_form or singular + 's'}"


def _listed(value: object) -> str:
    """A config's list of names as text, each once (peft appends its task's heads to modules_to_save, so a
    SEQ_CLS adapter saved with modules_to_save=["classifier"] lists classifier twice); a file may hold a string
    (a regex) or anything else there. Not escaped (the caller escapes the whole line), and clipped to about
    `MAX_LISTED_CHARS` with the count of names left out: an adapter_config.json of 100,000 target_modules (under
    its 1 MB bound) printed a 1.2 MB line, 9 s of Rich's layout.

    Example:
        >>> _listed(["q", "v", "q"]), _listed(["m%d" % i for i in range(1000)])[-13:], len(_listed("(.*)" * 9999))
        ('q, v', ' and 648 more', 2038)
    """
    if not isinstance(value, (list, tuple)):
        return clip_middle(str(value), MAX_LISTED_CHARS)
    names = list(dict.fromkeys(map(str, value)))
    shown: list[str] = []
    used = 0
    for name in names:
        if used + len(name) > MAX_LISTED_CHARS:
            break
        shown.append(name)
        used += len(name) + 2
    if not shown and names:  # one name longer than the whole budget: its beginning and end
        shown.append(clip_middle(names[0], MAX_LISTED_CHARS))
    left = len(names) - len(shown)
    return ", ".join(shown) + (f" and {left:,} more" if left else "")


def quantized_line(quantized: QuantizedSummary) -> str:
    """`gptq 4-bit: 37,748,736 parameters (37.7M) once unpacked; 2 packed tensors, 6 side tensors`."""
    method = escape(quantized.method) + (f" {quantized.bits}-bit" if quantized.bits and "bit" not in
                                         quantized.method else "")
    parts = (f"{counted(quantized.packed_tensors, 'packed tensor')}, "
             f"{counted(quantized.side_tensors, 'side tensor')}")
    if quantized.parameters is None:
        return f"{method}: bits per value unknown, packed tensors counted as stored; {parts}"
    return (f"{method}: {counted(quantized.parameters, 'parameter')} "
            f"({format_count(quantized.parameters)}) once unpacked; "
            f"{parts} (scales, zero points: not parameters)")


def security_line(scan: object) -> str:
    """The scan verdict in one line (the report's shape: weightdoctor.security.ScanReport)."""
    verdict = getattr(scan, "verdict", "?")
    colour = {"safe": "green", "suspicious": "yellow", "dangerous": "bold red"}.get(verdict, "white")
    if getattr(scan, "format", "") == "safetensors":
        return f"[{colour}]{verdict}[/] (safetensors: no pickle, no code)"
    if getattr(scan, "format", "") == "gguf":
        notes = list(getattr(scan, "notes", []))
        return f"[{colour}]{verdict}[/] (GGUF: no pickle, no code)" + (
            f" [dim]notes: {escape('; '.join(notes))}[/]" if notes else "")
    count = len({g.qualified for g in getattr(scan, "globals", [])})
    notes = list(getattr(scan, "notes", []))
    inert = sorted({g.qualified for g in getattr(scan, "globals", []) if g.safety == "inert"})
    if inert:
        # "safe" and "allowed by torch's weights_only loader" read as "torch.load will take it": it will not, nor
        # from_pretrained, which loads .bin files so; the inert globals are why (docs/security.md said it alone).
        notes.append(f"{', '.join(inert)} read as inert data: never imported, none of its code runs; "
                     "torch.load(weights_only=True), as from_pretrained loads a .bin, refuses the file for "
                     f"{'it' if len(inert) == 1 else 'them'}")
        count -= len(inert)
    text = (f"[{colour}]{verdict}[/] (static pickle scan: {counted(getattr(scan, 'pickles', 0), 'pickle')}, {count} "
            "distinct "
            f"{plural(count, 'global')}, all allowed by torch's weights_only loader"
            + (f", and {len(inert)} read as inert data)" if inert else ")") if verdict == "safe"
            else f"[{colour}]{escape(scan.summary())}[/]")  # type: ignore[attr-defined]
    return text + (f" [dim]notes: {escape('; '.join(notes))}[/]" if notes else "")


def verify_line(verify: object) -> str:
    mismatches = getattr(verify, "mismatches", [])
    hashes = getattr(verify, "hash_mismatches", [])
    found = []
    if mismatches:
        listed = ", ".join(f"{m.file}:{m.member}" for m in mismatches[:4])
        found.append(f"[bold red]{counted(len(mismatches), 'CRC mismatch', 'CRC mismatches')}[/]: {escape(listed)}")
    if hashes:
        # Shown beside the CRC mismatches, not hidden by them: a file whose sha256 differs from the index's is a
        # second, separate finding (the JSON always listed both).
        found.append(f"[bold red]{counted(len(hashes), 'sha256 mismatch', 'sha256 mismatches')}[/]: "
                     f"{escape('; '.join(hashes))}")
    layout = getattr(verify, "layout_mismatches", [])
    if layout:
        found.append(f"[bold red]{counted(len(layout), 'GGUF layout mismatch', 'GGUF layout mismatches')}[/]: "
                     f"{escape('; '.join(layout))}")
    if found:
        return "; ".join(found)
    members = getattr(verify, "members_checked", 0)
    text = (f"[green]{counted(members, 'member')} checked, all "
            "match[/]" if members or not getattr(verify, "files_checked", 0)
            else f"[green]{counted(getattr(verify, 'files_checked', 0), 'file')} checked, all as their headers say[/]")
    notes = getattr(verify, "notes", [])
    return text + (f" [dim]({escape('; '.join(notes))})[/]" if notes else "")


def config_table(report: InspectReport) -> Table | None:
    summary = report.full_config_summary  # whole: --json cuts a string past MAX_ECHOED_CHARS, this one at 400
    if not summary or all(value is None for value in summary.values()):
        return None  # not an empty panel
    table = Table.grid(padding=(0, 2))
    # Folded, not cut: at 40 columns `initializer_range` read `initializer_ran…`, the class `BertForSequenceCl…`.
    table.add_column(style="bold", overflow="fold")
    table.add_column(overflow="fold")
    for key, value in summary.items():
        if value is not None:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)  # a config's own types
            if len(text) > MAX_CONFIG_TEXT:
                # A config.json listing a million architectures took minutes to lay out; --json keeps them all.
                whole = "all in --json" if len(text) <= MAX_ECHOED_CHARS else f"--json shows {MAX_ECHOED_CHARS:,}"
                text = f"{text[:MAX_CONFIG_TEXT]}... ({len(text):,} characters, {whole})"
            table.add_row(key, escape(text))
    return table


# The GGUF summary's own fields shown first (its whole metadata follows them).
_GGUF_FIELDS = ("architecture", "name", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                "context_length", "rope_theta", "vocab_size")


def _gguf_value_text(value: object) -> str:
    if isinstance(value, dict) and "array" in value:  # an array, counted (`gguf_format.metadata_json`)
        first = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in value.get("first", []))
        more = ", ..." if value.get("count", 0) > len(value.get("first", [])) else ""
        return f"[{value.get('count', 0):,} {value.get('array')}: {first}{more}]"
    text = str(value)
    return clip_middle(text, MAX_CONFIG_TEXT) if len(text) > MAX_CONFIG_TEXT else text


def gguf_table(gguf: dict[str, Any]) -> Table:
    """A GGUF file's summary: architecture and sizes, ggml types with their bits per weight, then every metadata
    key (arrays such as tokenizer.ggml.tokens counted, never printed whole)."""
    from weightdoctor.checkpoint.gguf_format import _SUMMARY_KEYS, LLAMA_FILE_TYPES

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", overflow="fold")
    table.add_column(overflow="fold")
    # "alignment 32" said no unit: it is the byte boundary each tensor's data starts on.
    table.add_row("version", f"GGUF v{gguf.get('version')}, tensor data aligned to {gguf.get('alignment')} bytes")
    # Each summary field is a metadata entry under another name (architecture is general.architecture): the entry
    # is named beside the field and not listed again below, where it repeated the same value.
    metadata = gguf.get("metadata") or {}
    arch = gguf.get("architecture")
    source_keys = {"architecture": "general.architecture", "name": "general.name"} | (
        {name: key.format(arch=arch) for name, key in _SUMMARY_KEYS.items()} if isinstance(arch, str) else {})
    shown_above: set[str] = set()
    for key in _GGUF_FIELDS:
        if gguf.get(key) is not None:
            source = source_keys.get(key)
            said = source is not None and source in metadata and metadata[source] == gguf[key]
            shown_above |= {source} if said and source is not None else set()
            table.add_row(key, escape(_gguf_value_text(gguf[key])) + (f" [dim]({escape(source)})[/]" if said
                                                                      and source is not None else ""))
    types = gguf.get("tensor_types") or {}
    if types:
        table.add_row("ggml types", escape("; ".join(
            f"{name}: {counted(row['tensors'], 'tensor')}, {format_count(row['parameters'])} params, "
            f"{row['bits_per_weight']:g} bits/weight" for name, row in types.items())))
    if gguf.get("bits_per_weight") is not None:
        table.add_row("bits/weight", f"{gguf['bits_per_weight']:g} (all tensors)")
    if gguf.get("values_note"):
        table.add_row("values", f"[cyan]{escape(gguf['values_note'])}[/]")
    for key, value in metadata.items():
        if key in shown_above:
            continue
        text = _gguf_value_text(value)
        # "general.file_type 15" said nothing to whoever has not read llama.h: its llama_ftype name beside it.
        if key == "general.file_type" and type(value) is int and value in LLAMA_FILE_TYPES:
            text += f" ({LLAMA_FILE_TYPES[value]}, llama.cpp's file type: what most tensors were quantized to)"
        table.add_row(escape(clip_middle(str(key), 120)), escape(text))
    return table


# The most characters of one config value the summary shows: real values (an architectures list) are far shorter.
MAX_CONFIG_TEXT = 400


def memory_table(report: InspectReport, width: int | None = None) -> Table:
    """The bytes at each dtype, one column per dtype; one row per dtype where the columns do not fit in `width`
    (a 40-column terminal cut every figure short: `553.… KB`)."""
    sizes = {name: format_bytes(value) for name, value in report.memory.items()}
    # A GGUF's quantized tensors are counted as the floats from_pretrained(gguf_file=) makes of them, as check-dtype's
    # memory figures count them: said, since the file itself is far smaller.
    # Short: a Rich title wraps at the table's width (some 50 columns).
    title = "Memory for the weights" + (", dequantized" if report.gguf and report.gguf.get("values_note") else "")
    if report.gguf:
        from weightdoctor.checkpoint.gguf_format import is_unread_dtype

        # Q8_1 / Q8_K: nothing dequantizes them, so they are counted at their stored bytes (`memory_by_dtype`).
        unread = [kind for kind in report.gguf.get("tensor_types") or {} if is_unread_dtype(kind)]
        title += f" ({', '.join(sorted(unread))} as stored)" if unread else ""
    # Each cell: its text, a space either side, and one separator between cells (show_edge=False).
    needed = sum(max(len(name), len(size)) + 2 for name, size in sizes.items()) + len(sizes) - 1
    if width is not None and needed > width:
        table = Table(title=title, title_justify="left", show_edge=False)
        table.add_column("dtype")
        table.add_column("bytes", justify="right", no_wrap=True)
        for name, size in sizes.items():
            table.add_row(name, size)
        return table
    table = Table(title=title, title_justify="left", show_edge=False)
    for name in sizes:
        table.add_column(name, justify="right")
    table.add_row(*sizes.values())
    return table


# The parts of a single-file Stable Diffusion checkpoint (the original LDM / sgm layout that A1111, ComfyUI and
# diffusers' from_single_file read), by their top-level names: the tree showed the names alone, which say nothing
# of which is the UNet and which the VAE. SD3's and ComfyUI's Flux single files keep their text encoders under
# text_encoders.
_SD_SINGLE_FILE_PARTS = {
    "model.diffusion_model": "UNet", "first_stage_model": "VAE", "cond_stage_model": "text encoder",
    "conditioner.embedders": "text encoders", "conditioner": "text encoders", "text_encoders": "text encoders",
    "model_ema": "EMA copy of the UNet",
    "vae": "VAE",  # ComfyUI's all-in-one Flux files (flux1-dev-fp8.safetensors) name it so
}
# Child names of an MMDiT / Flux transformer (SD3's joint_blocks, Flux's double and single blocks), not a UNet.
_TRANSFORMER_BLOCKS = ("joint_blocks", "double_blocks", "single_blocks")


def _part_names(nodes: list[ModuleNode]) -> dict[str, str]:
    """What each top-level node of a single-file Stable Diffusion checkpoint is; {} for any other checkpoint."""
    # A node may be a chain collapsed into one (`cond_stage_model.transformer.text_model` where each holds one child).
    by_part: dict[str, ModuleNode] = {}
    for node in nodes:
        part = max((p for p in _SD_SINGLE_FILE_PARTS if node.name == p or node.name.startswith(p + ".")),
                   key=len, default=None)
        if part is not None:
            by_part[part] = node
    if "model.diffusion_model" not in by_part or not by_part.keys() & {
            "first_stage_model", "cond_stage_model", "conditioner", "conditioner.embedders", "text_encoders"}:
        return {}
    denoiser = by_part["model.diffusion_model"]
    names = [denoiser.name + "." + child.name for child in denoiser.children] + [denoiser.name]
    unet = "transformer" if any(f".{block}" in name for name in names for block in _TRANSFORMER_BLOCKS) else "UNet"
    parts = {node.name: _SD_SINGLE_FILE_PARTS[part].replace("UNet", unet) for part, node in by_part.items()}
    # One embedder, its chain collapsed into the node's name (the SDXL refiner's OpenCLIP-G, conditioner.embedders.0.
    # model): one text encoder, which "text encoders" miscounted.
    for name in parts:
        if name.startswith("conditioner.embedders.") and name.split(".")[2].isdigit():
            parts[name] = "text encoder"
    return parts


# Siblings shown per module: names that are not numbered (`b0`, `b1`, ...) do not fold into one `×N` line, so a
# state dict of 100,000 such modules printed 100,000 lines of tree (13 s, before the warnings that matter).
MAX_TREE_CHILDREN = 200


def _add_nodes(tree: Tree, nodes: list[ModuleNode], depth: int, max_depth: int) -> None:
    parts = _part_names(nodes) if depth == 1 else {}
    if len(nodes) > MAX_TREE_CHILDREN:
        _add_nodes(tree, nodes[:MAX_TREE_CHILDREN], depth, max_depth)
        # A line left out may be a folded `{0..299} ×300`: it hides its blocks, not one module.
        hidden = sum(node.repeat for node in nodes[MAX_TREE_CHILDREN:])
        tree.add(f"[dim]… {hidden:,} more modules here (all in --json, or narrow with "
                 "--filter REGEX)[/]")
        return
    for node in nodes:
        label = f"[bold]{shown_name(node.name)}[/]"
        if node.repeat > 1:
            label += f" [magenta]×{node.repeat}[/]"
        label += f"  [dim]{format_count(node.num_params)}[/]"
        if node.repeat > 1:
            label += f" [dim]({format_count(node.num_params // node.repeat)} each)[/]"
        if node.tied_params:
            label += f" [dim]+ {format_count(node.tied_params)} tied (another name of a tensor counted once)[/]"
        if node.name in parts:
            label += f"  [cyan]{parts[node.name]}[/]"
        branch = tree.add(label)
        if depth < max_depth:
            _add_nodes(branch, node.children, depth + 1, max_depth)
        elif node.children:
            branch.add("[dim]…[/]")


def module_tree(report: InspectReport, max_depth: int = 4) -> Tree:
    quantized = report.quantized.parameters if report.quantized is not None else None
    total = f"{format_count(quantized)} {plural(quantized, 'parameter')} once unpacked" if quantized is not None \
        else f"{format_count(report.num_params)} {plural(report.num_params, 'parameter')}"
    tree = Tree(f"[bold]modules[/] [dim]{total}[/]")
    _add_nodes(tree, report.module_tree, 1, max_depth)
    return tree


def tensor_table(report: InspectReport, limit: int | None, width: int | None = None) -> Table:
    """The tensor table; with the console's `width`, names too long for their column break after a dot."""
    title = "Tensors" + (f" matching /{escape(report.filter)}/" if report.filter else "")
    table = Table(title=title, title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("params", justify="right")
    rows = report.tensors if limit is None else report.tensors[:limit]
    cells = [("×".join(map(str, row.shape)) or "scalar", row.dtype, f"{row.num_params:,}") for row in rows]
    name_width = 0
    if width is not None and rows:
        # What the other columns take (widest cell or header), plus 5 borders and 8 spaces of padding.
        others = sum(max(len(header), *(len(c[i]) for c in cells))
                     for i, header in enumerate(("shape", "dtype", "params")))
        name_width = width - others - 13
    group_size = {name: len(group) for group in report.shared_tensors for name in group}
    for row, (shape, dtype, params) in zip(rows, cells, strict=True):
        name = wrapped_name(row.name, name_width)
        if row.shared_with:
            left = group_size.get(row.name, 0) - 1 - len(row.shared_with)
            name += f" [dim](≡ {escape(', '.join(row.shared_with))}{f' and {left:,} more' if left > 0 else ''})[/]"
        table.add_row(name, shape, dtype, params)
    if limit is not None and len(report.tensors) > limit:
        table.caption = f"{len(report.tensors) - limit} more; use --all or --filter REGEX"
    return table


def render_inspect(report: InspectReport, console: Console, max_depth: int = 4, limit: int | None = 50) -> None:
    """Print the report: summary, config, memory, module tree, tensor table (its warnings go to stderr)."""
    console.print(Panel(summary_table(report), title="[bold]weightdoctor inspect[/]", title_align="left"))
    for said, line in adapter_steps(report.adapter, report.source, report.revision) if report.adapter else ():
        # Whole, each on a line of its own: folded in the table's column, a call pasted as two lines.
        console.print(f"[dim]{escape(said)}[/]", soft_wrap=True)
        console.print(escape(line), soft_wrap=True, highlight=False)
    config = config_table(report)
    if config is not None:
        console.print(Panel(config, title="config.json", title_align="left"))
    if report.gguf is not None:
        console.print(Panel(gguf_table(report.gguf), title="GGUF metadata", title_align="left"))
    console.print(memory_table(report, console.width))
    console.print()
    console.print(module_tree(report, max_depth))
    console.print()
    console.print(tensor_table(report, limit, console.width))


__all__ = ["render_inspect", "Group"]


def folded_entries(entries: list[str]) -> list[str]:
    """Described entries with their layer indices folded, each fold once with its count, in first-seen order:
    a Megatron-LM model's `_extra_state` entries (five in each of 80 layers) read in five lines, not 400 (the
    first six alone were shown, with no word of the others).

    Example:
        >>> folded_entries([f"l.{i}.a (None)" for i in range(6)] + ["l.2.b (int: 3)"])
        ['l.*.a (None) ×6', 'l.2.b (int: 3)']
    """
    if len(entries) <= 6:
        return entries
    from collections import Counter

    from weightdoctor.diff_keys import _collapse_all

    split = [entry.partition(" (") for entry in entries]
    # All names in one pass, and counted by Counter: collapse_indices name by name took 3.5 s for 10^6 entries.
    collapsed = _collapse_all([name for name, _, _ in split])
    keys = [folded + space + description for folded, (_, space, description) in zip(collapsed, split, strict=True)]
    counts = Counter(keys)  # in first-seen order
    # An entry alone in its fold keeps its own name: `layers.*.b (int: 3)` read as a `b` in every layer, and hid
    # which layer holds the one there is.
    first = {key: entry for key, entry in zip(keys, entries, strict=True) if counts[key] == 1}
    return [f"{key} ×{count}" if count > 1 else first[key] for key, count in counts.items()]
