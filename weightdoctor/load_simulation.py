"""What `from_pretrained` would report for a checkpoint, computed from headers and a meta-device model.

The key handling is transformers' own: its conversion mapping (`get_model_conversion_mapping`: the
model's registered renames and the legacy `LayerNorm.gamma`/`beta` ones), its `rename_source_key`
(which adds or strips `base_model_prefix`), then its `tie_weights(missing_keys=...)` and
`_adjust_missing_and_unexpected_keys` (tied weights, `_keys_to_ignore_on_load_*`, stale `position_ids`
and `rotary_emb.inv_freq`). Only the loop of `convert_and_load_state_dict_in_model` that sorts keys into
missing / unexpected / mismatched is re-implemented, since it also materialises tensors; it compares
header shapes with the meta model's instead. tests/test_diff_keys.py checks it against real loads.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import io
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.diff_keys import (
    DiffReport,
    KeySpec,
    SuggestedRename,
    _any_tied,
    _layer_count_whys,
    adapter_fit,
    build_report,
    foreign_layout,
    is_quantizer_name,
    name_side_b_in,
    renumbering_note,
    renumbering_renames,
    specs_from_tensors,
    suggest_renames,
)
from weightdoctor.dtypes import FLOATING
from weightdoctor.errors import SourceNotFound, UsageError, clip_middle
from weightdoctor.jsontext import MAX_DEPTH, parse_json
from weightdoctor.paths import expand_user
from weightdoctor.quantized import (
    names_no_quantizer,
    quantizer_load_error,
    raised_name,
    skipped_quantizer,
    unusable_device,
    without_quantization_config,
)
from weightdoctor.renames import Rename, apply_renames
from weightdoctor.wording import counted, plural

if TYPE_CHECKING:
    import torch

    from weightdoctor.checkpoint import Checkpoint


@dataclass
class LoadSimulation:
    """The three sets `from_pretrained(..., output_loading_info=True)` returns, plus how keys were renamed.

    Attributes:
        missing: model keys no checkpoint key fills (after tying and ignore lists).
        unexpected: checkpoint keys (as transformers renamed them) the model has no place for.
        mismatched: (model key, checkpoint shape, model shape).
        renamed: checkpoint key -> model key, for keys transformers renamed (prefix, legacy names).
        converted: model keys filled through a WeightConverter (its operations run on meta tensors, so their
            shapes are compared like any other).
        conversion_errors: model key -> the last line of the error a converter raised (transformers then
            leaves the key missing), or why a non-tensor entry of A named after it fails the load.
        misnumbered_experts: model key a WeightConverter stacks per-expert tensors into -> which of A's expert
            numbers are not 0 to N-1 (`_expert_numbering`); for a key also in `conversion_errors` it says why the
            converter raised, otherwise the key loads without a word, its experts in the wrong slots.
    """

    missing: set[str]
    unexpected: set[str]
    mismatched: set[tuple[str, tuple[int, ...], tuple[int, ...]]]
    renamed: dict[str, str] = field(default_factory=dict)
    converted: set[str] = field(default_factory=set)
    unexpected_sources: dict[str, str] = field(default_factory=dict)
    conversion_errors: dict[str, str] = field(default_factory=dict)
    non_tensor_targets: set[str] = field(default_factory=set)  # model keys a non-tensor entry of A names
    misnumbered_experts: dict[str, str] = field(default_factory=dict)
    # model key -> (A's experts' prefix under the number the model lacks, the same under the lacking number):
    # one expert renumbered (`...experts.9.` for `...experts.2.`), which a rename puts back in its slot; or
    # several (9 and 11 for 2 and 5), paired in the order of their numbers.
    renumbered_experts: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def loading_quantizer(model: torch.nn.Module) -> Any:
    """The quantizer from_pretrained makes for `model`'s config here, pre-quantized and accepted by its
    `validate_environment` on this machine, else None.

    Made as from_pretrained makes it (`get_hf_quantizer`, which also reads the text config's
    `quantization_config`), on a copy of the config. Either it dequantizes here: a pre-quantized FP8
    (`quant_method: fp8`) or MXFP4 (gpt-oss) checkpoint needs a GPU, and on a machine without one its
    `validate_environment` sets `dequantize`, from_pretrained builds the model unquantized and its conversion
    mapping merges each weight with its scales (`weight_scale_inv`, `_blocks` and `_scales`) into a plain weight.
    Or it works as it is (BitNet's on a CPU: its `preprocess_model` swaps in BitLinear layers holding the packed
    weights). None for a quantizer that raises, or maps the model to a device torch lacks here (Metal's "mps" as it
    dequantizes: from_pretrained fails on the first weight; `quantizer_load_error` says why).
    """
    if config_quantization(model.config) is None:
        return None
    try:
        from transformers.quantizers.auto import get_hf_quantizer

        with contextlib.redirect_stdout(io.StringIO()):
            hf_quantizer, _, device_map = get_hf_quantizer(copy.deepcopy(model.config), None, None, True, {})
    except Exception:  # noqa: BLE001 - the quantizer refuses: quantizer_load_error reports it
        return None
    if unusable_device(device_map) is not None:  # Metal's: dequantized, yet placed on "mps" (quantizer_load_error)
        return None
    if hf_quantizer is None or not hf_quantizer.pre_quantized:
        return None
    hf_quantizer._weightdoctor_device_map = device_map  # what from_pretrained passes to its preprocess_model
    return hf_quantizer


def dequantizes(hf_quantizer: Any) -> bool:
    """Whether a quantizer from `loading_quantizer` dequantizes the weights as they load (FP8, MXFP4 without the
    GPU they need; `dequantize: true`).

    Both transformers ask the same: its config's `dequantize` is set (by the config, or by `validate_environment`
    on a machine without the GPU) and the quantizer has an operation that dequantizes as weights load. 5.25 lists
    its operations in `get_load_operations()` ("dequantize": Fp8Dequantize). Earlier 5.x (5.17) has no such
    method: its `get_weight_conversions()` returns, for a pre-quantized checkpoint it dequantizes, the
    WeightConverters that merge each weight with its scales (Fp8Dequantize, Mxfp4Dequantize, MetalDequantize);
    its compressed-tensors quantizer has none (it decompresses after the load, `decompress_model`): not counted.
    """
    if hf_quantizer is None or not getattr(hf_quantizer.quantization_config, "dequantize", False):
        return False
    load_operations = getattr(hf_quantizer, "get_load_operations", None)
    if callable(load_operations):
        return "dequantize" in load_operations()
    return any(type(operation).__name__.endswith("Dequantize")
               for converter in hf_quantizer.get_weight_conversions()
               for operation in getattr(converter, "operations", ()))


def prepare_for_quantizer(model: torch.nn.Module) -> Any:
    """`loading_quantizer(model)`, its `preprocess_model` run on `model` once, as from_pretrained runs it on its
    model before it loads a weight; the same quantizer on a later call for that model. None where there is none or
    its preprocessing raises: from_pretrained raises there too, and why is kept for `quantizer_prepare_error`
    (SINQ's quantizer accepts its environment, since transformers 5.25's `is_sinq_available()` is a tuple, always
    true, and then fails importing the package it lacks).

    Preprocessing can change the model's own keys: FineGrainedFP8 swaps the embeddings its config's
    `modules_to_convert` names for FP8Embedding (weight and weight_scale) even as it dequantizes the rest, BitNet
    every Linear for a BitLinear holding packed weights, so the keys a report compares against are read after it.
    """
    if hasattr(model, "_weightdoctor_hf_quantizer"):
        return model._weightdoctor_hf_quantizer
    hf_quantizer = loading_quantizer(model)
    if hf_quantizer is not None:
        import torch

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                # As from_pretrained calls it: the model's dtype as the quantizer updates it (SINQ keeps it), the
                # device map the quantizer made (SINQ's needs one), no checkpoint files (none here reads them).
                dtype = hf_quantizer.update_dtype(getattr(model, "dtype", None))  # from_pretrained's _get_dtype
                # Inside from_pretrained's init contexts: on the meta device, torch's default dtype the model's.
                # Outside them Gemma's QuantizedLinear made its packed weights and scales in CPU memory (half a
                # byte per 4-bit Linear parameter: 8 of a 70B config's 80 layers took 70 s), and biases it makes
                # at the default dtype came out float32 where from_pretrained makes them at the model's.
                with torch.device("meta"), _default_dtype(dtype):
                    hf_quantizer.preprocess_model(model=model, dtype=dtype,
                                                  device_map=getattr(hf_quantizer, "_weightdoctor_device_map", None),
                                                  checkpoint_files=None)
        except Exception as error:  # noqa: BLE001 - whatever it raises, from_pretrained raises
            said = " ".join(str(error).split()) or raised_name(error)
            model._weightdoctor_quantizer_error = (
                f"from_pretrained raises {raised_name(error)} here before it loads a weight, as its "
                f"{type(hf_quantizer).__name__} prepares the model: {clip_middle(said, 240)!r}; the keys are "
                "compared as its quantizer reads them where it loads")
            hf_quantizer = None
    model._weightdoctor_hf_quantizer = hf_quantizer
    return hf_quantizer


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    """torch's default dtype set to `dtype` for the block where it is a floating dtype (transformers'
    `local_torch_dtype`, which from_pretrained enters before it builds and prepares the model)."""
    import torch

    before = torch.get_default_dtype()
    floating = isinstance(dtype, torch.dtype) and dtype.is_floating_point
    try:
        if floating:
            torch.set_default_dtype(dtype)
        yield
    finally:
        torch.set_default_dtype(before)


class MetaDequantizeMemo:
    """transformers' fp8 dequantization run once per distinct input on meta tensors, where it ran per weight.

    `Fp8Dequantize._dequantize_one` works on the meta tensors standing in for A's data, so its result (a shape,
    strides and dtype) or its error depends only on its inputs' shapes, strides, dtypes and the output dtype
    (inputs that require grad, whose result also depends on the grad mode, run unmemoized).
    DeepSeek-V3's 45,000 fp8 expert weights come in two shapes, and torch's meta dispatch for them was half of
    `diff-keys --model-class`'s CPU time on that checkpoint (17.7 s -> 8.9 s without it). A repeat gets a fresh
    meta tensor of the recorded layout, or the recorded error raised again, message and type unchanged.

    Example:
        >>> memo = MetaDequantizeMemo()  # doctest: +SKIP
        >>> memo.attach(converter)  # its Fp8Dequantize operations now consult the memo  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.results: dict[tuple[Any, ...], tuple[tuple[int, ...], tuple[int, ...], Any] | Exception] = {}
        self.calls = 0  # calls that ran transformers' own code (misses, inputs not on meta or requiring grad)

    def attach(self, converter: Any) -> None:
        """Route `converter`'s Fp8Dequantize operations (its own deep copies) through this memo."""
        try:
            from transformers.integrations.finegrained_fp8 import Fp8Dequantize
        except ImportError:  # another transformers: its operations run as they are
            return
        for op in getattr(converter, "operations", ()):
            if type(op) is Fp8Dequantize:
                op._dequantize_one = self._memoized(op._dequantize_one)

    def _memoized(self, real: Any) -> Any:
        import torch

        def dequantize_one(quantized: Any, scales: Any, output_dtype: Any = None) -> Any:
            tensors = (quantized, scales)
            # An input that requires grad gives a result that does or does not by the grad mode of the call (no
            # part of a key): run as it is. Without one the result never requires grad.
            if not all(isinstance(t, torch.Tensor) and t.device.type == "meta" and not t.requires_grad
                       for t in tensors):
                self.calls += 1
                return real(quantized, scales, output_dtype=output_dtype)
            key = (output_dtype, *((tuple(t.shape), t.stride(), t.storage_offset(), t.dtype) for t in tensors))
            found = self.results.get(key)
            if found is None:
                self.calls += 1
                try:
                    result = real(quantized, scales, output_dtype=output_dtype)
                except Exception as exc:
                    self.results[key] = exc
                    raise
                if isinstance(result, torch.Tensor) and result.device.type == "meta" and not result.requires_grad:
                    self.results[key] = (tuple(result.shape), result.stride(), result.dtype)
                return result
            if isinstance(found, Exception):
                raise found.with_traceback(None)
            shape, stride, dtype = found
            return torch.empty_strided(shape, stride, dtype=dtype, device="meta")

        return dequantize_one


def quantizer_prepare_error(model: torch.nn.Module) -> str | None:
    """Why the quantizer's `preprocess_model` raised in `prepare_for_quantizer(model)`, in a line, else None."""
    return getattr(model, "_weightdoctor_quantizer_error", None)


def simulate_from_pretrained(
    model: torch.nn.Module, shapes: Mapping[str, tuple[int, ...]], key_mapping: dict[str, str] | None = None,
    non_tensor_keys: Sequence[str] = (),
) -> LoadSimulation:
    """Sort checkpoint keys the way `from_pretrained` does, without reading any tensor.

    Example:
        >>> model = build_meta_model(config, "BertForSequenceClassification")  # doctest: +SKIP
        >>> shapes = {"embeddings.word_embeddings.weight": (99, 32), ...}  # doctest: +SKIP
        >>> sim = simulate_from_pretrained(model, shapes)  # doctest: +SKIP
        >>> sorted(sim.missing)  # doctest: +SKIP
        ['classifier.bias', 'classifier.weight']

    Args:
        model: a transformers model built on the meta device (`weightdoctor.meta_model.build_meta_model`);
            it is modified (weights get tied), so pass a throwaway one.
        shapes: checkpoint key -> shape.
        key_mapping: as `from_pretrained(key_mapping=...)`.
        non_tensor_keys: keys of A's state dict whose values are not tensors (a `.bin` holding `version: 2`):
            from_pretrained sorts them like any key (unexpected), and fails on one that names a weight.
    """

    try:
        import torch
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            WeightConverter,
            WeightRenaming,
            dot_natural_key,
            rename_source_key,
        )
        from transformers.utils.loading_report import LoadStateDictInfo
    except ImportError as exc:  # transformers 4.x loads differently; reproducing it would be guesswork
        import transformers

        raise UsageError(
            f"--model-class needs transformers 5 (its loading code is reused); found {transformers.__version__}"
        ) from exc

    with _quiet_transformers():
        hf_quantizer = prepare_for_quantizer(model)
        weight_mapping = get_model_conversion_mapping(model, key_mapping, hf_quantizer)
        renamings = [entry for entry in weight_mapping if isinstance(entry, WeightRenaming)]
        converters = [entry for entry in weight_mapping if isinstance(entry, WeightConverter)]
        pattern_to_converter = {k: c for c in converters for k in c.source_patterns}
        meta_state_dict = model.state_dict()
        prefix = model.base_model_prefix
        info = LoadStateDictInfo(
            missing_keys=set(meta_state_dict), unexpected_keys=set(), mismatched_keys=set(),
            conversion_errors={}, error_msgs=[], skipped_pp_keys=set(),
        )
        sim = LoadSimulation(set(), set(), set())
        to_convert: dict[str, Any] = {}  # target key -> its WeightConverter, as transformers' param_name_to_load
        dequantize_memo = MetaDequantizeMemo()
        direct: dict[str, str] = {}  # model key -> A's key that fills it as it is (no converter)
        non_tensors = set(non_tensor_keys) - set(shapes)
        for original in sorted({*shapes, *non_tensors}, key=dot_natural_key):
            renamed, source_pattern = rename_source_key(original, renamings, converters, prefix, meta_state_dict)
            if renamed not in meta_state_dict and original in meta_state_dict:
                renamed, source_pattern = rename_source_key(
                    original, [], [], base_model_prefix=prefix, meta_state_dict=meta_state_dict
                )
            if renamed != original:
                sim.renamed[original] = renamed
            if original in non_tensors and renamed in meta_state_dict:
                # transformers materialises it as a tensor and fails (AttributeError): the weight does not load.
                sim.conversion_errors[renamed] = f"A's {original} is not a tensor"
                sim.non_tensor_targets.add(renamed)
                continue
            if renamed in meta_state_dict:
                if source_pattern is not None:
                    # Collected as transformers collects it (one converter per target key), with a meta tensor
                    # of the header's shape standing in for the data: converted below by transformers' own ops.
                    try:
                        stand_in = torch.empty(tuple(shapes[original]), device="meta")
                    except RuntimeError as exc:  # a header shape no tensor can have ("Stride calculation overflowed")
                        reason = " ".join(str(exc).split())
                        sim.conversion_errors[renamed] = (f"{original} has shape {list(shapes[original])}, which "
                                                          f"torch cannot make a tensor of: {reason}")
                        continue
                    # Copied only for a target not collected yet: setdefault's argument would deepcopy the
                    # converter once per source key (DeepSeek-V3's 44k expert weights: seconds) to throw it away.
                    mapping = to_convert.get(renamed)
                    if mapping is None:
                        mapping = to_convert[renamed] = copy.deepcopy(pattern_to_converter[source_pattern])
                        dequantize_memo.attach(mapping)
                    mapping.add_tensor(renamed, original, source_pattern, stand_in)
                    continue
                module_path, _, param_name = renamed.rpartition(".")
                module = model.get_submodule(module_path) if module_path else model
                if param_name != "_extra_state" and getattr(module, param_name, None) is None:
                    info.unexpected_keys.add(renamed)
                    sim.unexpected_sources[renamed] = original
                    continue
                info.missing_keys.discard(renamed)
                direct[renamed] = original
                expected = tuple(meta_state_dict[renamed].shape)
                if tuple(shapes[original]) != expected and param_name != "_extra_state":
                    info.mismatched_keys.add((renamed, tuple(shapes[original]), expected))
            elif source_pattern is not None:
                converter = pattern_to_converter[source_pattern]
                for target in converter.target_patterns:
                    key = renamed.replace(converter.target_patterns[0], target)
                    info.unexpected_keys.add(key)
                    sim.unexpected_sources[key] = original
            else:
                info.unexpected_keys.add(renamed)
                sim.unexpected_sources[renamed] = original
        # The converters' operations (experts stacked, gate and up projections concatenated, fused matrices
        # split) run on the meta tensors: the shapes they make are compared as `set_param_for_module` does.
        for first_name, mapping in to_convert.items():
            if first_name in sim.conversion_errors:  # one of its sources has no tensor shape: that error is the one
                continue
            if first_name in direct:
                # A holds the merged tensor itself and the tensors a converter merges into it (a half-converted
                # or merged checkpoint): transformers' loader fails on the pair (an AttributeError in 5.x).
                sim.conversion_errors[first_name] = (f"A holds {direct[first_name]} itself and also the tensors "
                                                     "its WeightConverter merges into it; from_pretrained fails on "
                                                     "the pair: keep one form")
                info.missing_keys.add(first_name)  # listed where the ragged-experts error is: it does not load
                continue
            # The model's experts: the first axis of the 3-D parameter the converter stacks them into.
            stacked = meta_state_dict.get(first_name)
            numbering, renumbered = _expert_numbering(mapping, first_name, stacked.shape[0] if stacked is not None
                                                      and stacked.dim() == 3 else None)
            if numbering:
                sim.misnumbered_experts[first_name] = numbering
            if renumbered is not None:
                sim.renumbered_experts[first_name] = renumbered
            try:
                # Without loading_info, transformers raises the op's own exception instead of logging it.
                realized = mapping.convert(first_name, model=model, config=model.config, hf_quantizer=None)
            except Exception as exc:  # noqa: BLE001 - any op's failure is a conversion error for transformers
                sim.conversion_errors[first_name] = " ".join(str(exc).split()) or type(exc).__name__
                continue
            for target, value in realized.items():
                value = value[0] if isinstance(value, list) else value
                module_path, _, param_name = target.rpartition(".")
                try:
                    module = model.get_submodule(module_path) if module_path else model
                except AttributeError:
                    info.unexpected_keys.add(target)
                    continue
                reference = getattr(module, param_name, None)
                if reference is None:
                    info.unexpected_keys.add(target)
                    continue
                info.missing_keys.discard(target)
                sim.converted.add(target)
                if tuple(value.shape) != tuple(reference.shape):
                    info.mismatched_keys.add((target, tuple(value.shape), tuple(reference.shape)))
        # transformers' own post-processing, as `_finalize_model_loading` runs it.
        model.tie_weights(missing_keys=info.missing_keys, recompute_mapping=False)
        model._adjust_missing_and_unexpected_keys(info)
    sim.missing, sim.unexpected, sim.mismatched = info.missing_keys, info.unexpected_keys, info.mismatched_keys
    return sim


def _expert_numbering(mapping: Any, target: str,
                      experts: int | None) -> tuple[str, tuple[tuple[str, str], ...] | None]:
    """Which of A's expert numbers a stacking WeightConverter (MergeModulelist) collected for `target` are not
    0 to N-1 for every projection, said with A's keys; "" where they are, or the converter stacks no experts. N is
    `experts`, the model's (the first axis of `target`), where known, else the most experts a projection holds.
    With it, where every projection lacks the same numbers and holds as many past N under one prefix (experts
    renumbered): (that prefix with a number past N, with a lacking one) for each, paired in the order of their
    numbers (the experts have the same shapes: nothing else pairs them), else None.

    transformers stacks the per-expert tensors in the order of their numbers and never reads the numbers
    themselves: a projection one expert lacks makes the merge raise (a bare "Sizes of tensors must match"), and a
    set of experts renumbered (0, 1, 3, 9 of four) loads without a word, each in the next free slot while the
    router still sends expert 2's tokens to slot 2. transformers 4, and load_state_dict, name those keys.

    Example: a Mixtral layer saved with experts 0, 1, 3, 9 gives "A's
    model.layers.1.block_sparse_moe.experts.*.w1.weight and ...experts.*.w3.weight hold experts 0, 1, 3, 9 (no 2;
    9 past the model's 4 experts): expert 3 fills slot 2, 9 fills slot 3".
    """
    try:
        from transformers.core_model_loading import MergeModulelist
    except ImportError:  # a transformers whose converters are not where 5.25 keeps them: not judged
        return "", None
    if not any(isinstance(op, MergeModulelist) for op in getattr(mapping, "operations", ())):
        return "", None
    sources = sorted(getattr(mapping, "layer_targets", {}).get(target, ()))
    # source pattern -> expert number -> A's key with that number as `*` (the same for every number)
    numbered: dict[str, dict[int, str]] = {}
    for pattern in mapping.source_patterns:
        if pattern.count("*.") != 1:  # one wildcard, the expert's number: another layout is not judged here
            return "", None
        head, tail = pattern.split("*.")
        # The wildcard as transformers compiles it (`.*\.`), its number captured; a pattern ends on a name boundary.
        regex = re.compile(f"{head}(\\d+)\\.{tail}" + ("(?!\\w)" if re.search(r"[a-zA-Z0-9]$", tail) else ""))
        numbered[pattern] = {}
        for key in sources:
            found = regex.search(key)
            if found is not None:
                start, end = found.span(1)
                numbered[pattern].setdefault(int(found.group(1)), key[:start] + "*" + key[end:])
    count = experts or max((len(numbers) for numbers in numbered.values()), default=0)
    expected = set(range(count))
    # The projections whose numbers are not 0 to N-1, those with the same numbers said together.
    families: dict[tuple[int, ...], list[str]] = {}
    for numbers in numbered.values():
        if numbers and set(numbers) != expected:
            families.setdefault(tuple(sorted(numbers)), []).append(next(iter(numbers.values())))
    said: list[str] = []
    moves: set[tuple[str, str]] = set()
    for numbers, names in families.items():
        lacking = sorted(expected - set(numbers))
        beyond = sorted(set(numbers) - expected)
        if len(lacking) == len(beyond) >= 1:
            for name in names:
                module = name.split("*", 1)[0]  # `...experts.` (the number was the key's one wildcard)
                moves.update((f"{module}{past}.", f"{module}{lacks}.") for past, lacks in zip(beyond, lacking,
                                                                                             strict=True))
        gaps = "; ".join(part for part in (f"no {_numbers(lacking, 4)}" if lacking else "",
                                           f"{_numbers(beyond, 4)} past the model's {count} experts" if beyond else "")
                         if part)
        text = f"A's {' and '.join(names)} hold{'' if len(names) > 1 else 's'} experts {_numbers(numbers, 8)} ({gaps})"
        # Where every projection has N experts, they stack: the ones after a gap fill the slots of other numbers.
        moved = [f"{number} fills slot {slot}" for slot, number in enumerate(numbers) if slot != number]
        if len(numbers) == count and moved:
            text += f": expert {_numbers(moved, 3)}"
        said.append(text)
    # One move for every projection of the layer; a projection renumbered otherwise (or not at all) gets none.
    # (All under one prefix: as many moves as numbers lacking.)
    whole = (len(families) == 1 and sum(map(len, families.values())) == len(numbered)
             and len({old.rstrip(".").rpartition(".")[0] for old, _ in moves}) == 1
             and len(moves) == len(expected - set(next(iter(families)))))
    ordered = tuple(sorted(moves, key=lambda move: int(move[0].rstrip(".").rpartition(".")[2])))
    return "; ".join(said), ordered if whole and moves else None


def _numbers(numbers: Sequence[int], most: int) -> str:
    """`0, 1, 3, 9`, the first `most` of them and `...` after."""
    return ", ".join(map(str, numbers[:most])) + (", ..." if len(numbers) > most else "")


def _adapter_base_config_hint(checkpoint: Checkpoint) -> str:
    """For a PEFT adapter without a config.json: the config to give, its base's, as from_pretrained(A) reads it
    (transformers loads adapter_config.json's base_model_name_or_path, then the adapter onto it); "" otherwise.
    The bare "pass --config" named nothing, where the adapter names its base."""
    if not checkpoint.tensors:
        return ""
    from weightdoctor.checkpoint.hub import looks_like_repo_id
    from weightdoctor.meta_model import shown_value
    from weightdoctor.paths import shell_word
    from weightdoctor.structure import adapter_summary

    adapter = adapter_summary(checkpoint)[0]
    base = adapter.get("base_model_name_or_path") if adapter is not None else None
    if not isinstance(base, str) or not base:
        return ""
    if looks_like_repo_id(base) or os.path.exists(os.path.expanduser(base)):
        return (f"; A is a PEFT adapter, whose model is its base's: --config {shell_word(base, argument=True)} "
                "(adapter_config.json's base_model_name_or_path, what from_pretrained(A) loads it onto)")
    return (f"; A is a PEFT adapter, whose model is its base's: give that model's config (adapter_config.json names "
            f"it {shown_value(base)}, neither a Hub repo id nor a path here)")


def load_config(config: str | None, checkpoint: Checkpoint, revision: str | None = None) -> dict[str, Any]:
    """The config to build the model from: `--config` (a config.json, a folder or a repo id), else A's own.

    Raises:
        UsageError: no config anywhere.
        SourceNotFound: `--config` names nothing readable.
    """
    if config is None:
        if checkpoint.config is None:
            from weightdoctor.structure import native_params_summary

            native = native_params_summary(checkpoint)[0] if checkpoint.tensors else None
            raise UsageError(
                "--model-class needs a config: A has no config.json next to it; pass --config"
                + ("; its params.json is Meta's / Mistral's own format, which transformers does not read, and its "
                   "weights carry their own names (tok_embeddings, attention.wq): transformers' "
                   "convert_llama_weights_to_hf.py or convert_mistral_weights_to_hf.py writes both the HF way"
                   if native is not None else _adapter_base_config_hint(checkpoint)))
        return dict(checkpoint.config)
    path = expand_user(config)
    from weightdoctor.paths import exists as path_exists

    if not path_exists(path):
        from weightdoctor.checkpoint.hub import (
            cached_typed_snapshot,
            hub_location,
            looks_like_repo_id,
            normalize_revision,
            resolve_repo_id,
            split_repo_subfolder,
            url_source_hint,
        )
        from weightdoctor.checkpoint.reader import PICKLE_SUFFIXES, dangling_link

        if path_exists(path, link=True):
            raise dangling_link(path, config)  # was looked up as a repo id, which suggested the link's own name
        revision = normalize_revision(revision)  # `--revision main/`, as open_checkpoint reads it for SOURCE
        inside = split_repo_subfolder(config.rstrip("/"))
        located = hub_location(config)  # `hf://org/name@v1`, a repo's page, `datasets/org/name`: as SOURCE takes them
        if located is not None:
            if located.revision is not None and revision is not None and located.revision != revision:
                # As SOURCE refuses the same: the address's revision was read and --revision dropped without a word.
                raise UsageError(f"--config {config} names revision {located.revision!r} and --revision "
                                 f"{revision!r}: give one")
            at, folder = located.revision or revision, located.path_in_repo
            folder = folder.rpartition("/")[0] if folder.endswith(".json") else folder  # a config named whole
            if located.repo_type != "model":
                path = cached_typed_snapshot(located, at, config) / located.path_in_repo
            else:
                path = resolve_repo_id(located.repo_id, at, weights=False, subfolder=folder or None)
                path = path / located.path_in_repo
        elif (url_hint := url_source_hint(config)) is not None:
            raise SourceNotFound(url_hint, path=config)  # a web address the Hub does not serve, as SOURCE says
        # A missing `my_config.json` is a mistyped file, as SOURCE says of one: not a repo id to look up.
        elif looks_like_repo_id(config.rstrip("/")) and not config.endswith((".json", ".safetensors",
                                                                             *PICKLE_SUFFIXES)):
            path = resolve_repo_id(config.rstrip("/"), revision, weights=False)
        elif inside is not None:  # `org/pipe/text_encoder`, as SOURCE takes it
            path = resolve_repo_id(inside[0], revision, weights=False, subfolder=inside[1]) / inside[1]
        else:
            from weightdoctor.checkpoint.reader import missing_path_message

            # with SOURCE's hints: a Windows path, an unexpanded $HOME, a name in another Unicode form
            raise SourceNotFound(missing_path_message(config), path=config)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise SourceNotFound("no config.json there", path=str(path))
    try:
        data = parse_json(path.read_text(encoding="utf-8"), max_depth=MAX_DEPTH)
    except (UnicodeDecodeError, ValueError) as exc:
        # `--config model.safetensors` (the weights beside the config, tab-completed): say what --config takes.
        weights = " (a weights file?)" if path.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt") else ""
        raise UsageError(f"not valid JSON ({exc}){weights}: --config takes a config.json, the folder holding one, "
                         "or a repo id", path=str(path)) from exc
    if not isinstance(data, dict):
        raise UsageError("config.json is not a JSON object", path=str(path))
    return data


def _tied_as_loaded(groups: Sequence[Sequence[str]], renames: Sequence[Rename],
                    loaded: Mapping[str, str]) -> list[list[str]]:
    """A's tied groups under the names the model reads them by: `--rename`s, then transformers' own renames."""
    out: list[list[str]] = []
    for group in groups:
        named = apply_renames(list(group), list(renames)) if renames else {name: name for name in group}
        out.append([loaded.get(named[name], named[name]) for name in group])
    return out


def diff_against_model(
    specs_a: Mapping[str, KeySpec],
    model: torch.nn.Module,
    renames: Sequence[Rename] = (),
    *,
    source_a: str = "A",
    model_class: str | None = None,
    tied_groups_a: Sequence[Sequence[str]] = (),
    non_tensor_keys: Mapping[str, str] | None = None,
    paths_a: Callable[[], tuple[str, str] | None] | None = None,
) -> DiffReport:
    """What `model_class.from_pretrained(A)` reports, with reasons, severities and a suggested fix.

    Args:
        specs_a: A's keys (name -> KeySpec).
        model: the meta-device model (see `simulate_from_pretrained`; it is modified).
        renames: `--rename`s applied to A's keys before transformers' own rules.
        source_a / model_class: for the report.
        tied_groups_a: names in A that share storage.
        non_tensor_keys: entries of A's state dict that are not tensors (name -> description): from_pretrained
            reads them as keys too, so they are unexpected.
        paths_a: gives A's file and a new folder beside it, for a conversion script a note names
            (`converters.conversion_paths`).
    """
    renamed_a = dict(specs_a)
    non_tensors = dict(non_tensor_keys or {})
    if renames:
        mapping = apply_renames([*specs_a, *non_tensors], list(renames))
        renamed_a = {mapping[old]: KeySpec(mapping[old], spec.shape, spec.dtype) for old, spec in specs_a.items()}
        non_tensors = {mapping[old]: what for old, what in non_tensors.items()}
    with _quiet_transformers():
        prepared = prepare_for_quantizer(model)  # B's keys as that quantizer's preprocessing makes them
        dequantized = dequantizes(prepared)
    meta_state_dict = model.state_dict()
    specs_b = {
        name: KeySpec(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))
        for name, t in meta_state_dict.items()
    }
    fresh_model_args = (type(model), model.config)
    quantization = quantization_method(config_quantization(model.config))
    # GGUF's quantizer packs only what it reads from a .gguf file; weights beside its config load as they are.
    gguf_config = quantization == "gguf"
    if gguf_config:
        quantization = None
    sim = simulate_from_pretrained(model, {n: s.shape for n, s in renamed_a.items()}, non_tensor_keys=list(non_tensors))
    # A's specs under the names transformers gave them, so reasons and shapes line up with B's keys.
    as_loaded = {sim.renamed.get(n, n): s for n, s in renamed_a.items()}
    as_loaded = {n: KeySpec(n, s.shape, s.dtype) for n, s in as_loaded.items()}
    common = [n for n in specs_b if n in as_loaded]
    missing = [n for n in specs_b if n in sim.missing]
    # In A's order, once each (a WeightConverter merges many of A's keys into one name).
    unexpected = list(dict.fromkeys(n for n in (sim.renamed.get(k, k) for k in renamed_a) if n in sim.unexpected))
    unexpected += sorted(sim.unexpected - set(unexpected))
    mismatched = sorted(sim.mismatched)
    not_tensors: dict[str, tuple[str, str, str]] = {}
    for name in sim.unexpected:
        source = sim.unexpected_sources.get(name)
        if source in non_tensors:
            not_tensors[name] = ("not-a-tensor", "info", f"not a tensor ({non_tensors[source]}): from_pretrained "
                                 "lists it and ignores it")
        elif source is not None and name not in as_loaded:
            as_loaded[name] = KeySpec(name, renamed_a[source].shape, renamed_a[source].dtype)

    suggestions: list[SuggestedRename] = []
    after: int | None = None
    fixed_by_renames: dict[str, int] = {}  # missing key -> the rename step after which it loads
    notes: list[str] = []
    layout_whys, layout_note = foreign_layout(unexpected, missing, paths_a=paths_a)
    adapter_whys, adapter_note = adapter_fit(as_loaded, specs_b, unexpected, missing)
    if adapter_whys:  # an adapter is not renamed into its base: its keys are told what they fit
        layout_whys, layout_note = adapter_whys, adapter_note
    elif bool(missing) != bool(unexpected) and (depth := _layer_count_whys()(as_loaded, specs_b, missing,
                                                                             unexpected))[0] \
            and not _any_tied(depth[0], _tied_as_loaded(tied_groups_a, renames, sim.renamed)):
        # A student against its teacher's config (another num_hidden_layers): said as diff-keys A B says it. Extra
        # "layers" that are more names of layer 0's storage are tied names, not a deeper model (as diff-keys A B).
        layout_whys = {**depth[0], **layout_whys}
        layout_note = "; ".join(filter(None, (layout_note, depth[1])))
    if layout_note:
        notes.append(layout_note)
    layout_whys = {**not_tensors, **layout_whys}
    for name, error in sim.conversion_errors.items():
        # transformers raises at the end of from_pretrained when a conversion failed: the load does not finish.
        numbering = sim.misnumbered_experts.get(name)
        why = (("not-a-tensor", "error", f"from_pretrained raises: {error}") if name in sim.non_tensor_targets else
               ("expert-numbering", "error", f"from_pretrained raises: {numbering}, and its WeightConverter stacks "
                f"every projection's experts into one tensor ({error})") if numbering else
               ("shape", "error", f"from_pretrained raises: its WeightConverter cannot build this from A's tensors "
                                  f"({error})"))
        layout_whys = {**layout_whys, name: why}
    mismatched_names = {name for name, _, _ in sim.mismatched}
    for name, numbering in sim.misnumbered_experts.items():
        if name in sim.conversion_errors or name in mismatched_names:  # listed already: raises, or another shape
            continue
        # from_pretrained loads it without a word, every expert in the next free slot: the weights are wrong.
        layout_whys = {**layout_whys, name: (
            "expert-numbering", "error", f"loads without a word, into the wrong slots: from_pretrained stacks the "
            f"experts in the order of their numbers, and {numbering}, while the router's row N still picks slot N")}
        if name not in missing:
            missing.append(name)
    # A's names before transformers' renames, for the keys of a known foreign layout: not renamed, converted.
    foreign_in_a = {sim.unexpected_sources.get(n, n) for n in layout_whys if n in sim.unexpected}
    if sim.unexpected and sim.missing and not adapter_whys:
        prefix = model.base_model_prefix
        targets = {n: s.shape for n, s in specs_b.items() if n not in layout_whys}
        if prefix:
            # The names transformers adds or strips the base-model prefix to reach, for the model's keys A does not
            # fill only: an alias of a key that loads is taken (a renumbered `model.layers.7.` was renamed onto
            # `layers.0.`, layer 0's alias, two keys for one weight, and the report said no rename helps).
            dotted = prefix + "."
            dropped: set[str] = set()
            if sum(name.startswith(dotted) for name in renamed_a) * 2 > len(renamed_a) and sum(
                    name.startswith(dotted) for name in specs_b) * 2 < len(specs_b):
                # Most of A's names carry the prefix and most of the model's do not (a base model's class:
                # `layers.1.`): the model's keys A fills through the prefix transformers strips are no target
                # either (A's `model.layers.0.` fills `layers.0.`, onto which a renumbered `model.layers.7.` was
                # renamed, and the report said no rename helps), and a missing key's target is its prefixed
                # name, so the rename keeps the checkpoint's names of one form (`model.layers.1.`). Only here:
                # elsewhere (a wrapper's prefix hiding the base-model prefix, DDP's `module.`) the rename search
                # finds its way through the keys that load.
                filled = set(specs_b) - sim.missing - {name for name, _, _ in sim.mismatched}
                for name in specs_b:
                    if not name.startswith(dotted) and f"{prefix}.{name}" not in specs_b and (
                            name in filled or name in sim.missing):
                        targets.pop(name, None)
                        dropped.add(name)
                        if name in sim.missing:
                            targets.setdefault(f"{prefix}.{name}", specs_b[name].shape)
            for name, spec in specs_b.items():
                if name in sim.missing:
                    for alias in (name.removeprefix(dotted), f"{prefix}.{name}"):
                        if alias not in dropped:
                            targets.setdefault(alias, spec.shape)
        # A's keys that load: none whose name, as transformers renames it, is unexpected (all the experts a
        # WeightConverter would merge into one unexpected name, not only the one recorded as its source).
        unexpected_sources = {sim.unexpected_sources.get(n, n) for n in sim.unexpected}
        ok = {n for n in renamed_a if n not in unexpected_sources and sim.renamed.get(n, n) not in sim.unexpected}
        # A quantizer's own names (torchao's `_weight_qdata`, shaped as the weight) are read by it, not renamed.
        quantizer_names = is_quantizer_name if quantization else (lambda name: False)
        suggestions = suggest_renames({n: s.shape for n, s in renamed_a.items()
                                       if n not in foreign_in_a and not quantizer_names(n)}, targets, already_ok=ok)
        if suggestions:
            # Re-check with transformers' rules on a fresh model after each step: keep a step only when it makes
            # more of the model load than the steps kept before it (transformers' own renames may make a step
            # needless: ViT's `vit.encoder.layer.` loads as it is once DDP's `module.` is gone; a lookalike step
            # may map keys onto weights that already load, which must not cost the steps after it).
            cls, config = fresh_model_args
            import torch

            def loaded_after(steps: Sequence[SuggestedRename]) -> tuple[int, set[str]]:
                """Keys of the model that load once `steps` are applied (-1 when two of A's keys would then fill
                one weight: a lookalike mapped onto a weight that already loads), and the keys still reported
                (missing or mismatched keys of the model; A's unexpected keys by the names the report gives)."""
                with torch.device("meta"):
                    fresh = cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
                fixed = apply_renames(renamed_a, [Rename(s.pattern, s.replacement) for s in steps])
                check = simulate_from_pretrained(fresh, {fixed[n]: s.shape for n, s in renamed_a.items()})
                filled = [check.renamed.get(fixed[n], fixed[n]) for n in renamed_a]
                still = check.missing | {name for name, _, _ in check.mismatched} | {
                    sim.renamed.get(n, n) for n, name in zip(renamed_a, filled, strict=True)
                    if name in check.unexpected}
                plain = [name for name in filled if name not in check.converted]
                if len(set(plain)) < len(plain):
                    return -1, still
                return len(specs_b) - len(check.missing) - len(check.mismatched), still

            loaded = len(specs_b) - len(sim.missing) - len(sim.mismatched)
            kept: list[SuggestedRename] = []
            still_reported: list[set[str]] = []  # after each kept step, the keys of the model that do not load
            for suggestion in suggestions:
                count, still = loaded_after([*kept, suggestion])
                if count > loaded:
                    kept, loaded = [*kept, suggestion], count
                    still_reported.append(still)
            if not kept:
                notes.append("no rename makes more of the model load with from_pretrained")
                suggestions, after = [], None
            else:
                suggestions, after = kept, loaded
                for name in [*missing, *unexpected]:
                    step = next((i for i, still in enumerate(still_reported) if name not in still), None)
                    if step is not None:
                        fixed_by_renames[name] = step
    if sim.renumbered_experts and not suggestions:
        # One expert of a layer saved under another number: the rename that gives it its number back, checked
        # as from_pretrained loads it (every expert in its slot once renamed).
        moves = sorted({move for pairs in sim.renumbered_experts.values() for move in pairs},
                       key=lambda move: (move[0].rstrip(".").rpartition(".")[0],
                                         int(move[0].rstrip(".").rpartition(".")[2])))
        fix = renumbering_renames(moves, list(renamed_a))
        cls, config = fresh_model_args
        import torch

        with torch.device("meta"):
            fresh = cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
        fixed = apply_renames(renamed_a, fix)
        check = simulate_from_pretrained(fresh, {fixed[n]: s.shape for n, s in renamed_a.items()})
        wrong = check.missing | set(check.misnumbered_experts) | {name for name, _, _ in check.mismatched}
        if not check.unexpected and not (wrong & set(sim.renumbered_experts)):
            flags = " ".join(rename.as_flag() for rename in fix)
            for name, pairs in sim.renumbered_experts.items():
                if name not in layout_whys:  # listed as mismatched, with its own detail
                    continue
                reason, severity, detail = layout_whys[name]
                olds = [old.rstrip(".").rpartition(".")[2] for old, _ in pairs]
                news = [new.rstrip(".").rpartition(".")[2] for _, new in pairs]
                if len(pairs) == 1:
                    told = f"{flags} gives A's {pairs[0][0].rstrip('.')} the number {news[0]} the model lacks"
                else:
                    told = (f"{flags} give A's {pairs[0][0].rstrip('.').rpartition('.')[0]} {', '.join(olds)} the "
                            f"numbers {', '.join(news)} the model lacks, in the order of their numbers: the experts "
                            "have the same shapes, so nothing in the checkpoint's names or shapes tells which is "
                            "which")
                layout_whys[name] = (reason, severity, f"{detail}; {told}")
            suggestions = [SuggestedRename(rename.pattern, rename.replacement, rename.as_flag(),
                                           sum(1 for n in renamed_a if fixed[n] != n and rename.apply(n) != n))
                           for rename in fix]
            after = len(specs_b) - len(wrong)
            fixed_by_renames.update(dict.fromkeys(sim.renumbered_experts, len(fix) - 1))
    if note := renumbering_note(suggestions):
        notes.append(note)
    if gguf_config:
        notes.append("the config's quantization_config is GGUF's (quant_method: gguf), which packs only weights read "
                     "from a .gguf file (from_pretrained's gguf_file=): from_pretrained loads A's weights as they are "
                     "stored, as compared here")
    if quantization and dequantized:
        stored = config_quantization(model.config)
        stored = stored if isinstance(stored, Mapping) else getattr(stored, "__dict__", {})
        # `dequantize: true` in the config dequantizes on any machine; else the quantizer chose it for this one.
        why = ("which from_pretrained dequantizes on any machine (its quantization_config sets dequantize: true)"
               if stored.get("dequantize") is True else "which from_pretrained dequantizes on this machine (its "
               "quantizer falls back to that without the GPU or kernels it needs)")
        notes.append(f"the config asks for {quantization} quantization, {why}: each weight loads with its scales "
                     "merged into it, as transformers' dequantizing WeightConverters merge them here")
    elif quantization and prepared is not None:
        built = sorted({type(module).__name__ for module in model.modules()
                        if type(module).__module__.startswith("transformers.integrations.")})
        notes.append(f"the config asks for {quantization} quantization, whose quantizer loads it on this machine as "
                     "it is stored: the meta model is prepared by it as from_pretrained prepares it"
                     + (f" ({', '.join(built[:3])} modules)" if built else "") + ", and A's keys compared with that")
    elif quantization:
        notes.append(f"the config asks for {quantization} quantization: the meta model is built unquantized, so "
                     "quantized weights and their side tensors are told apart by name and dtype")
        with _quiet_transformers():  # a quantizer logs what it falls back to (FP8 dequantized on CPU)
            cannot_load = quantizer_load_error(config_quantization(model.config)) or quantizer_prepare_error(model)
        if cannot_load:
            notes.append(cannot_load)
    # The dtype `from_pretrained` (dtype="auto") casts floating weights to: the config's `dtype`, in which
    # the meta model is built; with none, the checkpoint's first floating dtype, known here when A has one.
    if getattr(model.config, "dtype", None) is None:
        floating = {s.dtype for s in renamed_a.values() if s.dtype in FLOATING}
        expected = floating.pop() if len(floating) == 1 else None
        if expected is None and floating:
            notes.append("the config has no dtype and A mixes floating dtypes: dtypes are not compared")
        specs_b = {n: s._replace(dtype=expected) if s.dtype in FLOATING and expected else s
                   for n, s in specs_b.items()}
    else:
        expected = str(model.config.dtype).removeprefix("torch.")
    report = build_report(
        as_loaded, specs_b, missing, unexpected, mismatched, common, suggestions,
        source_a=source_a, source_b=f"{model_class or type(model).__name__} (meta device)",
        mode="model-class", model_class=model_class or type(model).__name__, renames_applied=renames,
        matched_after_renames=after, tied_groups_a=tied_groups_a, compare_dtypes=expected is not None,
        notes=notes, tie_embeddings=getattr(model.config, "tie_word_embeddings", None), quantization=quantization,
        # A's keys are read with the same config: an untied output layer A stores (a causal LM's lm_head loaded
        # into its ForSequenceClassification, as TRL's reward models start) is no tie to B's embeddings.
        tie_embeddings_a=getattr(model.config, "tie_word_embeddings", None),
        layout_whys=layout_whys, head_names=_head_names(model, missing),
        # Keys transformers would add or strip a prefix for are not unexpected here: a prefix left to fix is
        # one from_pretrained does not fix (Lightning's `model.` on BERT, whose base prefix is `bert.`).
        base_prefix_loads=False, loader_ran=True, fixed_by_renames=fixed_by_renames, saved_names_a=renamed_a,
    )
    report.converter_named = bool(layout_note) and not adapter_whys
    report.matched = len(specs_b) - len(sim.missing | set(sim.misnumbered_experts) | mismatched_names)
    report.total_a = len(specs_a)  # A's own tensors, not the names they become once experts are merged
    if sim.converted:
        numbering = {name: f"; {said}" for name, said in sim.misnumbered_experts.items()}
        report.mismatched = [
            dataclasses.replace(m, detail=f"{m.detail} (after transformers' WeightConverter merges A's tensors"
                                f"{numbering.get(m.name, '')})")
            if m.name in sim.converted else m for m in report.mismatched]
        report.notes.append(f"{counted(len(sim.converted), 'key')} {plural(len(sim.converted), 'is', 'are')} built "
                            "by transformers' WeightConverters (e.g. experts "
                            "merged into one tensor); their shapes are compared after the same conversion")

    return report


# What from_pretrained looks for in a model folder (transformers' SAFE_WEIGHTS_NAME, WEIGHTS_NAME and their
# indexes), in its order; without `variant=` nothing else.
_FROM_PRETRAINED_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                          "pytorch_model.bin.index.json")


def _state_dict_command(checkpoint: Checkpoint) -> str:
    """The `convert` that writes a training checkpoint's state dict where from_pretrained reads it: a folder A (or
    a repo id) converts to a folder (config copied, weights in model.safetensors), a file to model.safetensors."""
    from weightdoctor.paths import shell_word
    from weightdoctor.rewrite import default_output_name

    if checkpoint.path.is_dir():
        source = checkpoint.source.rstrip("/") or "/"
        if checkpoint.repo_id is not None:  # `org/name` (its snapshot folder): into `name-state-dict` here
            source = source.split("/")[-1]
        elif Path(source).name in ("", ".", ".."):
            # `.` or `..`: beside that folder, by its name (not a hidden `.-state-dict` inside the source)
            source = os.path.join(source, os.pardir, checkpoint.path.resolve().name)
        target = os.path.normpath(source) + "-state-dict"
        quoted_source, quoted_target = shell_word(checkpoint.source, argument=True), shell_word(target, argument=True)
        command = f"weightdoctor convert {quoted_source} -o {quoted_target}"
        weights = [f.relpath for f in checkpoint.files if f.role == "weights"]
        # convert keeps a file's stem (`checkpoint.pt` -> `checkpoint.safetensors`): from_pretrained reads no such name
        written = default_output_name(weights[0], "safetensors") if len(weights) == 1 else "model.safetensors"
        if written != "model.safetensors":
            command += (f" && mv {shell_word(f'{target}/{written}', argument=True)} "
                        f"{shell_word(f'{target}/model.safetensors', argument=True)}")
        return f"{command}, a folder from_pretrained reads"
    return f"weightdoctor convert {shell_word(checkpoint.source, argument=True)} -o model.safetensors"


def file_from_pretrained_skips(checkpoint: Checkpoint) -> str | None:
    """The weight file (or index) read from a model folder A that from_pretrained(A) does not look for, so that it
    raises (`model.pt`, `weights.safetensors`, `consolidated.safetensors`); None when it reads the same one."""
    if not checkpoint.path.is_dir():
        return None
    read = [f for f in checkpoint.files if f.role == "index"] or [f for f in checkpoint.files if f.role == "weights"]
    # By the name relative to the folder: the files' paths keep the source's spelling (relative, `./m`, a link).
    if not read or read[0].relpath in _FROM_PRETRAINED_FILES:
        return None
    from weightdoctor.checkpoint.reader import explicit_weights_name

    if read[0].relpath == explicit_weights_name(checkpoint.config):
        return None  # the config's `transformers_weights`: from_pretrained reads that file
    return read[0].relpath


def from_pretrained_skips_warning(checkpoint: Checkpoint) -> str | None:
    """What from_pretrained(folder) does with a transformers model folder whose weights are under a name it does not
    look for (`consolidated.safetensors` beside config.json, torchtune's `hf_model_0001_0.pt`): it raises. None
    otherwise: a dtype variant (variant= reads it, the reader says so), an adapter (PEFT loads it onto its base), a
    folder of another library (diffusers' `_class_name`, which reads its own names; a config.json with neither
    `model_type` nor `architectures`, as Coqui TTS writes beside best_model.pth), no config.json.

    Example:
        >>> from_pretrained_skips_warning(open_checkpoint("mistral-consolidated/"))  # doctest: +SKIP
        'from_pretrained(folder) looks for model.safetensors or pytorch_model.bin (or their sharded index) and raises
        here: the weights read are consolidated.safetensors'
    """
    config = checkpoint.config
    if not isinstance(config, Mapping) or "_class_name" in config:
        return None
    if not config.get("model_type") and not config.get("architectures"):
        return None  # not transformers' config: from_pretrained is not how that folder loads
    if checkpoint.gguf_headers():
        return None  # a folder of a split GGUF's parts: loaded with gguf_file= (merged first), as its own note says
    unread = file_from_pretrained_skips(checkpoint)
    from weightdoctor.checkpoint.reader import variant_of

    if unread is None or variant_of(unread) is not None or (checkpoint.path / "adapter_config.json").is_file():
        return None
    return (f"from_pretrained(folder) looks for model.safetensors or pytorch_model.bin (or their sharded index) and "
            f"raises here: the weights read are {unread}")


# How transformers reads the `format` a safetensors file's metadata names. transformers 4's from_pretrained went by it:
# "pt" (or no metadata) and "mlx" as PyTorch's, "tf" / "flax" converted on load (from_tf / from_flax, with that
# framework installed), anything else refused ("Incompatible safetensors file", or load_state_dict's "does not contain
# the valid metadata"). transformers 5 reads no metadata: it loads every file's names as they are.
_PYTORCH_FORMATS = ("", "pt", "mlx")
_FLAX_NAME = re.compile(r"\.(?:kernel|embedding|scale)$")


def safetensors_format_warning(checkpoint: Checkpoint) -> str | None:
    """What from_pretrained does with safetensors weights whose metadata `format` names another framework than
    PyTorch (a transformers 4 Flax model's save_pretrained: "flax"; PaddleNLP's unified checkpoints: "np"), or
    whose metadata holds no `format` at all; None for PyTorch's and MLX's, and for a file with no metadata.

    Example:
        >>> safetensors_format_warning(open_checkpoint("flax-bert/"))  # doctest: +SKIP
        'the safetensors metadata says format "flax" and 21 of the 39 tensors have Flax's names (...)'
    """
    framework = (checkpoint.metadata or {}).get("format", "")
    # Metadata without a `format` (save_file(state_dict, path, metadata={...}) by a merge or fine-tuning script) is
    # no PyTorch file to transformers 4 either: it raised "Incompatible safetensors file. File metadata is not
    # ['pt', 'tf', 'flax', 'mlx'] but None", and weightdoctor said nothing. A file with no metadata loads.
    # transformers 4 checks each shard's own (load_state_dict: "does not contain the valid metadata"): a shard
    # written without format beside one that says "pt" (a merge that rewrote one shard) is refused as well.
    unlabelled_file, unlabelled_meta = next(
        ((f.relpath, meta) for f in checkpoint.files
         # `is not None`: an empty `__metadata__` ({}, save_file(..., metadata={})) is metadata without a format to
         # transformers 4 too (it skips only None), refused as "... but None"; only no `__metadata__` at all loads.
         if (meta := checkpoint.safetensors_metadata(f.relpath)) is not None and not meta.get("format")),
        (None, None))
    unlabelled = unlabelled_meta is not None
    # `metadata` is the first shard's: a later shard saying "np" beside a first saying "pt" is refused by
    # load_state_dict all the same (tf / flax / mlx shards it loads as PyTorch's), and was not warned of.
    refused_file = None
    if checkpoint.sharded and framework in _PYTORCH_FORMATS and not unlabelled:
        refused_file, framework = next(
            ((f.relpath, fmt) for f in checkpoint.files if (fmt := (checkpoint.safetensors_metadata(f.relpath)
             or {}).get("format", "")) not in ("", "pt", "tf", "flax", "mlx")), (None, framework))
    if (framework in _PYTORCH_FORMATS and not unlabelled) or checkpoint.format != "safetensors":
        return None
    # The value is the file's own text, of any length: a 10 MB `format` made a 10 MB warning (twice that in --json).
    quoted = clip_middle(repr(framework), 200)
    flax = [t.name for t in checkpoint.tensors if _FLAX_NAME.search(t.name)]
    if framework == "flax" and flax:
        return (f"the safetensors metadata says format \"flax\" and {len(flax)} of the {len(checkpoint.tensors)} "
                f"tensors have Flax's names (.kernel, .embedding, .scale, e.g. {flax[0]}; a Dense kernel is [in, out], "
                "the transpose of nn.Linear's weight): transformers 4's from_pretrained converted such a file on load "
                "(flax installed); transformers 5 ignores the format and loads the names as they are, so these "
                "weights do not load (initialized at random); convert it with transformers 4 (from_pretrained(..., "
                "from_flax=True), then save_pretrained)")
    config = checkpoint.config
    if not isinstance(config, Mapping) or "_class_name" in config or not (
            config.get("model_type") or config.get("architectures")):
        return None  # not a transformers model's folder: from_pretrained is not how it loads
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    if unlabelled and (folder / "adapter_config.json").is_file():
        # A PEFT adapter beside its base model's config: PeftModel (and transformers' load_adapter) read it through
        # peft's load_peft_weights, safetensors' load_file, which looks at no format; nothing refuses it.
        return None
    if unlabelled:
        keys = ", ".join(clip_middle(key, 200) for key in sorted(unlabelled_meta or {})[:3])
        which = f" of {unlabelled_file}" if checkpoint.sharded else ""
        # One file: from_pretrained's own check; each shard: load_state_dict's, in other words.
        refusal = ("does not contain the valid metadata" if checkpoint.sharded else
                   "Incompatible safetensors file. File metadata is not ['pt', 'tf', 'flax', 'mlx'] but None")
        held = f"({keys}{', ...' if len(unlabelled_meta or {}) > 3 else ''})" if unlabelled_meta else "(empty, {})"
        return (f"the safetensors metadata{which} {held} holds no "
                f"format: transformers 4's from_pretrained refuses such a file (\"{refusal}\"), where a file with no "
                "metadata loads; "
                "transformers 5 reads no metadata; weightdoctor convert writes the weights with format \"pt\"")
    if framework in ("flax", "tf"):
        # transformers 4 refuses only the formats it does not know: a "flax" / "tf" file it takes for that
        # framework's and converts, whatever its names (PyTorch's, after a convert --rename of a Flax file, say).
        which = "Flax" if framework == "flax" else "TensorFlow"
        return (f"the safetensors metadata says format {quoted} though no tensor has {which}'s names: "
                f"transformers 4's from_pretrained takes the file for {which}'s and converts it on load "
                f"({'flax' if framework == 'flax' else 'TensorFlow'} must be installed, or it raises); transformers 5 "
                "ignores the format and loads the tensors under their names, as they are")
    if "paddlenlp_version" in config:
        # PaddleNLP's save_pretrained and unified checkpoints (ERNIEKit's too) write "np" beside a config.json that
        # always records paddlenlp_version; Paddle's nn.Linear holds its weight [in, out].
        which = f" of {refused_file}" if refused_file is not None else ""
        return (f"a PaddleNLP checkpoint (config.json records paddlenlp_version; safetensors format {quoted}{which}): "
                "its names are PaddleNLP's, and Paddle stores a Linear layer's weight as [in, out], the transpose of "
                "PyTorch's [out, in]: transformers 4's from_pretrained refuses the file (\"does not contain the valid "
                "metadata\"); transformers 5 ignores the format and loads the names as they are, the square Linear "
                "weights transposed without an error; a PyTorch model loads it only through a conversion that "
                "renames and transposes them")
    which = f" of {refused_file}" if refused_file is not None else ""
    return (f"the safetensors metadata{which} says format {quoted}, not PyTorch's \"pt\" (PaddleNLP's and mindone's "
            "checkpoints write \"np\"): transformers 4's from_pretrained refuses such a file (\"does not contain the "
            "valid metadata\"); transformers 5 ignores the format and loads the tensors under their names, as "
            "they are")


def _head_names(model: Any, names: Sequence[str]) -> set[str]:
    """Of `names`, those outside the model's base model: what a transformers task class adds to its base
    (`classifier`, `projector`, BART's `classification_head`, ELECTRA's `generator_predictions`, ...)."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or getattr(model, prefix, None) is None:  # a base model itself: everything is the base
        return set()
    return {name for name in names if not name.startswith(prefix + ".")}


def config_quantization(config: Any) -> Any:
    """A built config's `quantization_config`, or its text config's where it has none, as from_pretrained reads it
    (`get_hf_quantizer`: a composite model's, LLaVA's, may hold it in `text_config`); None when neither has one."""
    quantization_config = getattr(config, "quantization_config", None)
    get_text_config = getattr(config, "get_text_config", None)
    # `getattr(config, "quantization_config", None) or getattr(text_config, ...)`: an empty top-level one ({})
    # gives way to the text config's too, as in `quantized.config_quantization_settings`.
    if not quantization_config and callable(get_text_config):
        with contextlib.suppress(Exception):  # a config whose text config cannot be told (several candidates)
            quantization_config = getattr(get_text_config(decoder=True), "quantization_config", None)
    # An empty one (`{}`), or a value that is no quantization config at all (`[1, 2]`, `"gptq"`), asks for no
    # quantizer: from_pretrained fails on it, as the reader's warning says (`config_quantization_problem`), and
    # the weights were said to be of "unknown quantization".
    if isinstance(quantization_config, (Mapping, list, tuple, str, int, float)) and (
            not quantization_config or not isinstance(quantization_config, Mapping)):
        return None
    # One that names no quantizer (`{"bits": 4}`, no quant_method) too; mlx-lm's copy of its `quantization` is
    # mlx-lm's (`quantized.names_no_quantizer`).
    if isinstance(quantization_config, Mapping):
        own = getattr(config, "quantization", None)
        if names_no_quantizer(quantization_config, {"quantization": own} if isinstance(own, Mapping) else {}):
            return None
    return quantization_config


def quantization_method(quantization_config: Any) -> str | None:
    """A config's `quantization_config` in words ("bitsandbytes 4-bit", "gptq", ...); None when absent.

    Example:
        >>> quantization_method({"quant_method": "bitsandbytes", "load_in_4bit": True})
        'bitsandbytes 4-bit'
    """
    if quantization_config is None:
        return None
    if not isinstance(quantization_config, Mapping):
        to_dict = getattr(quantization_config, "to_dict", None)
        quantization_config = (to_dict() if callable(to_dict)
                               else vars(quantization_config) if hasattr(quantization_config, "__dict__") else None)
        if not isinstance(quantization_config, Mapping):
            # A config.json's `"quantization_config": [1, 2]` stays a list in the built config: no quantizer
            # can be told from it (vars() of it was an unexpected TypeError).
            return "unknown"
    method = str(quantization_config.get("quant_method") or "unknown")
    # load_in_4bit / load_in_8bit are bitsandbytes' whatever the quant_method (transformers 4.30 saved none).
    if method == "bitsandbytes" or quantization_config.get("load_in_4bit") or quantization_config.get("load_in_8bit"):
        if quantization_config.get("load_in_4bit"):
            return "bitsandbytes 4-bit"
        if quantization_config.get("load_in_8bit"):
            return "bitsandbytes 8-bit"
    return method


def concrete_class_name(config: dict[str, Any], model_class: str, **overrides: Any) -> str:
    """`model_class`, or for an Auto class (`AutoModelForCausalLM`) the class it picks for this config.

    Raises:
        UsageError: the Auto class has no model for this config's type.
    """
    if not model_class.startswith("Auto"):
        return model_class
    import transformers

    from weightdoctor.meta_model import auto_model_class, config_from_dict

    auto = getattr(transformers, model_class, None)
    mapping = getattr(auto, "_model_mapping", None)
    if mapping is None:
        raise UsageError(f"transformers has no auto class {model_class!r}")
    cfg = config_from_dict(config, **overrides)
    try:
        return auto_model_class(mapping, cfg).__name__
    except KeyError:
        raise UsageError(f"{model_class} has no model for model_type {cfg.model_type!r}") from None


def model_type_of_class(config: dict[str, Any], model_class: str) -> str | None:
    """The model type to read a config.json without one with: `model_class`'s own, as its from_pretrained reads it.

    Configs older transformers versions wrote have no `model_type`; `BertModel.from_pretrained` reads them with
    BertConfig all the same (only AutoConfig needs the field). None for an Auto class, an unknown class, or the
    config of another library (diffusers' `_class_name`, timm's and TensorRT-LLM's `architecture`, mamba_ssm's),
    which `config_from_dict` names when it refuses it.

    Example:
        >>> model_type_of_class({"hidden_size": 768}, "BertModel")
        'bert'
    """
    from weightdoctor.meta_model import is_mamba_ssm_config

    if (config.get("model_type") or model_class.startswith("Auto") or isinstance(config.get("_class_name"), str)
            or isinstance(config.get("architecture"), str) or is_mamba_ssm_config(config)):
        return None
    import transformers

    cls = getattr(transformers, model_class, None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        # Checked before config_class is read: a placeholder for a missing backend (a feature extractor needing
        # torchaudio) raises ImportError on any attribute; `concrete_class_name` names what is wrong with it.
        return None
    model_type = getattr(getattr(cls, "config_class", None), "model_type", None)
    return model_type if isinstance(model_type, str) and model_type else None



def _without_unbuildable_dtype(config: dict[str, Any], whose: str) -> tuple[dict[str, Any], str | None]:
    """`config` without a top-level dtype no model is built in ("auto", 5, "float128", "int8", a list) and the note
    that says so, else `config` and None.

    The keys a class holds do not depend on its dtype, and from_pretrained loads once the field is fixed (see
    plan_devices' `unbuildable_dtype_warning`); building with the field failed, each value with an error of its own
    ("'int' object has no attribute 'is_floating_point'"). A sub-config's "auto" is left to fail.

    Example:
        >>> _without_unbuildable_dtype({"model_type": "bert", "dtype": 5}, "A")[0]
        {'model_type': 'bert'}
    """
    from weightdoctor.meta_model import auto_dtype_field, shown_value, unbuildable_dtype_field

    field = auto_dtype_field(config) or unbuildable_dtype_field(config)
    if field is None:
        return config, None
    return {k: v for k, v in config.items() if k != field}, (
        f'{whose}\'s config.json sets "{field}": {shown_value(config[field])}, which is no dtype transformers builds a '
        "model in (from_pretrained fails on it): these keys are those of the model built without it (the dtype "
        f'changes no key); set "{field}" to the weights\' dtype in config.json (or remove it) to load it')


def diff_checkpoint_against_model(
    checkpoint: Checkpoint,
    model_class: str,
    config: str | None = None,
    num_labels: int | None = None,
    renames: Sequence[Rename] = (),
    revision: str | None = None,
) -> DiffReport:
    """`diff_against_model` for an opened checkpoint and a class name (built on the meta device)."""
    from weightdoctor.converters import conversion_paths
    from weightdoctor.meta_model import build_meta_model, is_foreign_config
    from weightdoctor.quantized import mlx_not_loadable, mlx_quantization, quantizer_transformers_lacks

    config_dict = load_config(config, checkpoint, revision)
    mlx = mlx_quantization(checkpoint.tensors, checkpoint.config if config is None else config_dict)
    if mlx is not None:
        # Every packed weight was "mismatched", its biases "unknown: will not load", all "by the unknown quantizer".
        raise UsageError(f"A is {mlx_not_loadable(mlx, f'it into {model_class}')}; diff-keys A B compares it with "
                         "another checkpoint", path=checkpoint.source)
    lacks = quantizer_transformers_lacks(checkpoint.config if config is None else config_dict, checkpoint.tensors)
    if lacks is not None:
        # Every packed tensor "unexpected", every weight "missing", all "unknown: will not load".
        raise UsageError(f"A's {lacks}; diff-keys A B compares it with another checkpoint", path=checkpoint.source)
    if skipped_quantizer(config_dict, checkpoint.tensors) is not None:
        # Plain float weights beside a quant_method transformers has no quantizer for: from_pretrained skips it and
        # builds the model unquantized, not "the meta model ... of foo quantization" (the reader's warning says so).
        config_dict = without_quantization_config(config_dict)
    overrides: dict[str, Any] = {}
    if num_labels is not None:
        if num_labels < 1:
            raise UsageError(f"--num-labels {num_labels}: must be at least 1")
        overrides["num_labels"] = num_labels
        config_dict.pop("id2label", None)
        config_dict.pop("label2id", None)
    own_type = model_type_of_class(config_dict, model_class)
    if own_type is not None:
        config_dict["model_type"] = own_type
    config_dict, dtype_note = _without_unbuildable_dtype(config_dict, "--config" if config else "A")
    try:
        model = build_meta_model(config_dict, concrete_class_name(config_dict, model_class, **overrides),
                                 foreign_config=True, **overrides)
    except UsageError as exc:
        exc.path = exc.path or config or checkpoint.source  # name the config the model was built from
        raise
    foreign = is_foreign_config(model.config)
    report = diff_against_model(
        specs_from_tensors(checkpoint.tensors), model, renames,
        source_a=checkpoint.source, model_class=model_class, tied_groups_a=checkpoint.alias_groups(),
        # from_pretrained reads a file's top level: there, entries that are no tensors are keys like any other.
        non_tensor_keys=checkpoint.non_tensor_keys if checkpoint.nested_key is None else None,
        paths_a=functools.partial(conversion_paths, checkpoint),
    )
    report.revision_a, report.resolved_a = checkpoint.revision, checkpoint.location
    from weightdoctor.plan_devices import quantized_experts_not_loaded

    if (experts := quantized_experts_not_loaded(model, checkpoint)) is not None:
        # The fused experts read as missing for "no known cause", the per-expert qweights as side tensors (info).
        report.notes.append(experts)
    if foreign:
        if report.matched == 0:
            # None of A's weights would load, into a class A's own config cannot build either (BertModel on a
            # GPT-2 checkpoint): say which class fits rather than list every key as missing and unexpected.
            try:
                build_meta_model(config_dict, type(model).__name__, **overrides)
            except UsageError as exc:
                exc.path = exc.path or config or checkpoint.source
                raise
        report.notes.append(
            f"{type(model).__name__} is no {model.config.model_type!r} model: from_pretrained builds its "
            f"{type(model.config).__name__} from the {model.config.model_type!r} config's values (and warns), "
            "as this report does")
    if dtype_note is not None:
        report.notes.append(dtype_note)
    if own_type is not None:
        report.notes.append(
            f"{'--config' if config else 'A'}'s config.json has no model_type (older transformers versions wrote "
            f"none): from_pretrained reads it with {type(model.config).__name__}, as this report does")
    flax_said = any(key.reason == "foreign-layout" for key in report.unexpected) and \
        (checkpoint.metadata or {}).get("format") == "flax"  # the layout's note says it all
    if not flax_said and (other_framework := safetensors_format_warning(checkpoint)) is not None:
        report.notes.append(f"A: {other_framework}")
    unread = file_from_pretrained_skips(checkpoint)
    if unread is not None and (checkpoint.path / "adapter_config.json").is_file():
        # from_pretrained(adapter folder) loads the base adapter_config.json names and this adapter onto it through
        # peft (transformers 5.25 measured): "raises here (no such file): rename it so" sent the LoRA's file to be
        # read as a whole model.
        unread = None
    report.from_pretrained_reads_a = checkpoint.nested_key is None and unread is None
    if checkpoint.nested_key is not None:
        # from_pretrained reads the file's top-level dict as the state dict: `state_dict`, `epoch`... are its keys.
        # Renamed to pytorch_model.bin, such a file still fails: the convert below is the fix either way.
        where = (f"from_pretrained(A) does not look for {unread} in a folder (only model.safetensors or "
                 "pytorch_model.bin, or their sharded index), and renaming it would not do: ") if unread else ""
        report.notes.append(
            f"{where}A is a training checkpoint: its state dict sits under {checkpoint.nested_key!r}, and this report "
            "is what loading that state dict gives; from_pretrained(A) itself reads the file's top level, so it "
            "loads none of these weights (or raises): " + (
                "its keys are in another layout, so writing the state dict on its own would not do: convert it as "
                "the note above says" if report.converter_named else
                f"write the state dict on its own first ({_state_dict_command(checkpoint)})"))
    elif unread is not None:
        # Keys of another code base's layout (LitGPT's lit_model.pth beside the config.json it copies) load under no
        # file name: "rename it so" would send the user to a second failure.
        foreign = any(key.reason == "foreign-layout" for key in [*report.missing, *report.unexpected])
        report.notes.append(
            f"from_pretrained(A) looks for model.safetensors or pytorch_model.bin (or their sharded index) in a "
            f"folder and raises here (no such file): this report is what loading {unread} gives; "
            + ("its keys are in another layout, so renaming the file would not do: convert it as the note above "
               "says" if foreign else "rename it so, or write it with save_pretrained"))
    name_side_b_in(report)  # B is the model built here: every sentence says so
    return report
