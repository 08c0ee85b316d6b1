"""fix70: small message and budget bugs (tied twins' runner, FSDP commands' quoting, GGUF notes, IQ budgets)."""

from __future__ import annotations

from weightdoctor.plan_devices import _tied_gpu_split


def test_tied_gpu_split_names_the_model_for_a_top_level_twin() -> None:
    # "shared" (a parameter of the model itself) sorts after "decoder.embed.weight", so it is the twin re-tied to
    # the copy on cuda:0 while its hook runs on cuda:1: the message must name who runs, not an empty module path.
    message = _tied_gpu_split(["shared", "decoder.embed.weight"], {"decoder": 0, "shared": 1})
    assert "so  runs" not in message
    assert "so the model itself (which holds shared) runs on cuda:1 with its weight on cuda:0" in message


def test_tied_gpu_split_still_names_the_module_of_a_nested_twin() -> None:
    message = _tied_gpu_split(["transformer.wte.weight", "lm_head.weight"], {"transformer": 1, "lm_head": 0})
    assert "so transformer.wte runs on cuda:1 with its weight on cuda:0" in message
