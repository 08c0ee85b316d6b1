"""What `weightdoctor diff-keys` does once its arguments are parsed, without Typer.

Both the Typer command (`weightdoctor.commands.diff_keys`) and the fast path (`weightdoctor.commands._fast`)
call `run_diff_keys`, so a run prints the same whichever parsed its arguments.
"""

from __future__ import annotations

import re

from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.diff_keys import DiffReport, diff_checkpoints, exit_code
from weightdoctor.errors import UsageError, choose
from weightdoctor.renames import Rename, parse_rename

FAIL_ON_CHOICES = ("info", "warn", "error")


def loader_renames(report: DiffReport) -> list[Rename]:
    """The suggested renames when every one is the base-model prefix that from_pretrained adds or strips itself
    (a `BertModel` checkpoint against its fine-tuned `BertForSequenceClassification`): `--values` compares the
    tensors under them, as they load; without them no name is common and nothing would be compared."""
    if report.matched or not report.suggested_renames:
        return []
    loader_flags = {issue.detail for issue in (*report.missing, *report.unexpected)
                    if issue.reason == "base-model-prefix" and issue.severity == "warn"}
    if any(s.flag not in loader_flags for s in report.suggested_renames):
        return []
    return [Rename(s.pattern, s.replacement) for s in report.suggested_renames]

# A transformers model class's name (BertForSequenceClassification, LlamaModel, GPT2LMHeadModel); no Hub repo id is
# one, since an id without an owner is an old lower-case name (gpt2, bert-base-uncased).
_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9]*(?:Model|For[A-Z][A-Za-z0-9]*)")
_CLASS_NAME_CHARS = 200


def _refuse_class_as_checkpoint(source_a: str, source_b: str, *, key: str | None, revision: str | None) -> None:
    """Refuse a model class given as B (`diff-keys ./ckpt BertForSequenceClassification`, the check that answers
    from_pretrained's "Some weights ... were not initialized"): it was looked up as a repo id, "not a local path and
    not in the Hugging Face cache", which did not say that a class goes to --model-class.

    Raises:
        UsageError: naming the command that compares A with the class.
    """
    import os

    # A class name is a few dozen characters: _CLASS_NAME's two runs of letters backtrack against each other on a
    # B that fails it (`A` + `ForA` * 32,000 + `!`, a 128 KB argument: 17 s; a megabyte: hours).
    if len(source_b) > _CLASS_NAME_CHARS or not _CLASS_NAME.fullmatch(source_b) or os.path.lexists(source_b):
        return
    from weightdoctor.paths import shell_word

    words = ["weightdoctor diff-keys", shell_word(source_a, argument=True), "--model-class", source_b]
    words += [f"--key {shell_word(key)}"] if key is not None else []
    words += [f"--revision {shell_word(revision)}"] if revision is not None else []
    raise UsageError(f"B {source_b!r} is a transformers class, not a checkpoint: to see what "
                     f"{source_b}.from_pretrained(A) loads, give it as --model-class: {' '.join(words)}")


# The most labels `--num-labels` builds a head for: 10 million took 15 s and 2 GB (a label name each).
MAX_NUM_LABELS = 1_000_000


def run_diff_keys(
    source_a: str,
    source_b: str | None = None,
    *,
    model_class: str | None = None,
    config: str | None = None,
    num_labels: int | None = None,
    renames: list[str] | None = None,
    values: bool = False,
    fail_on: str = "error",
    show_all: bool = False,
    json_output: bool = False,
    key: str | None = None,
    revision: str | None = None,
    revision_b: str | None = None,
) -> int:
    """Diff A against B (or `model_class`), print the report (tables, or JSON with `json_output`), return
    the exit code (0, or 1 when a difference reaches `fail_on`). Bad input raises; the caller reports it.
    """
    fail_on = choose("--fail-on", fail_on, FAIL_ON_CHOICES)
    if (source_b is None) == (model_class is None):
        raise UsageError("give either a second checkpoint B or --model-class CLASS (not both, not neither)")
    if model_class is None and (config is not None or num_labels is not None):
        raise UsageError("--config and --num-labels only apply with --model-class")
    from weightdoctor.checkpoint.hub import check_revision

    # Both before anything is read, each by its own name: B's blank revision was refused as "--revision is empty".
    check_revision(revision)
    check_revision(revision_b, "--revision-b", "B to take --revision (or main)")
    if revision_b is not None and model_class is not None:
        raise UsageError("--revision-b is B's revision; with --model-class, --revision applies to --config")
    if values and model_class is not None:
        raise UsageError("--values compares two checkpoints; it cannot be used with --model-class")
    if model_class is not None and not model_class.strip():
        # `--model-class ""` (an unset variable) was taken as "no class given" and A's own config class was built.
        raise UsageError("--model-class is empty: give a transformers class, e.g. BertForSequenceClassification")
    if num_labels is not None and not 1 <= num_labels <= MAX_NUM_LABELS:
        # transformers' config names every label (id2label, label2id): --num-labels 10**12 filled the memory.
        raise UsageError(f"--num-labels {num_labels}: give 1 to {MAX_NUM_LABELS:,} labels")
    if source_b is not None:
        _refuse_class_as_checkpoint(source_a, source_b, key=key, revision=revision)
    parsed = [parse_rename(spec) for spec in renames or []]

    # Headers only unless --values: an uncached repo id is read from its remote headers, no weights fetched.
    with open_checkpoint(source_a, revision=revision, key=key, structure_only=not values) as checkpoint_a:
        if model_class is not None:
            from weightdoctor.load_simulation import diff_checkpoint_against_model

            report = diff_checkpoint_against_model(
                checkpoint_a, model_class, config=config, num_labels=num_labels, renames=parsed, revision=revision
            )
            report.warnings = [f"A: {warning}" for warning in checkpoint_a.warnings]
        else:
            assert source_b is not None
            with open_checkpoint(source_b, revision=revision if revision_b is None else revision_b,
                                 structure_only=not values) as checkpoint_b:
                report = diff_checkpoints(checkpoint_a, checkpoint_b, parsed, key=key)
                # The reader's warnings (a file left unread, --revision ignored on a local path, an index that
                # disagrees with its shards) say which files were compared: as the other commands show them.
                # B was read at --revision-b where given: the reader's "--revision REV ignored" names that option.
                typed_b = (f"--revision {revision_b} ignored", f"--revision-b {revision_b} ignored")
                report.warnings = [f"A: {w}" for w in checkpoint_a.warnings] + \
                    [f"B: {w.replace(*typed_b, 1) if revision_b is not None else w}" for w in checkpoint_b.warnings]
                if values:
                    from weightdoctor.cast_rounding import cast_rounding_note
                    from weightdoctor.diff_keys import compare_values, value_pairs
                    from weightdoctor.render.console import progress

                    value_renames = parsed or loader_renames(report)
                    if value_renames and not parsed:
                        flags = " ".join(s.flag for s in report.suggested_renames)
                        report.notes.append(
                            f"values compared as from_pretrained loads A into B: under {flags} (the base-model prefix "
                            "it adds or strips itself)")
                    dequantized: set[str] = set()
                    with progress(report.matched_after_renames if value_renames and not parsed else report.matched,
                                  "comparing values") as advance:
                        rows, layers = compare_values(
                            value_pairs(checkpoint_a, checkpoint_b, report, value_renames, advance, dequantized))
                    report.values, report.layers_changed_most = rows, layers
                    if rounding := cast_rounding_note(rows):
                        report.notes.append(rounding)
                    from weightdoctor.diff_keys import check_paca_indices, paca_indices_note

                    if paca := paca_indices_note(checkpoint_a, checkpoint_b, rows, value_renames):
                        report.notes.append(paca)
                    check_paca_indices(report, checkpoint_a, checkpoint_b)
                    from weightdoctor.changed_projections import changed_projections, changed_projections_note

                    shapes_b = {info.name: info.shape for info in checkpoint_b.tensors}
                    report.changed_projections = changed_projections(rows, shapes_b, dequantized)
                    if report.changed_projections is not None:
                        report.notes.append(changed_projections_note(report.changed_projections))
                    if not rows and report.suggested_renames and not value_renames:
                        flags = " ".join(s.flag for s in report.suggested_renames)
                        report.notes.append(f"no tensor has the same name in A and B, so no values were compared: "
                                            f"add the suggested fix ({flags}) to compare them under it")

    report.recheck_args = _recheck_args(source_a, source_b, model_class=model_class, config=config,
                                        num_labels=num_labels, key=key, revision=revision, revision_b=revision_b)
    report.convert_args = _convert_args(source_a, key=key)
    code = exit_code(report, fail_on)
    if json_output:
        from weightdoctor.gcpause import gc_paused
        from weightdoctor.render.diff_keys_json import report_json
        from weightdoctor.render.json import write_json_text

        with gc_paused():
            text = report_json(report)
        write_json_text(text)
    else:
        from weightdoctor.render.console import stdout
        from weightdoctor.render.diff_keys import render_diff_keys

        render_diff_keys(report, stdout, show_all=show_all)
        if report.warnings:
            from weightdoctor.render.console import warn

            for warning in report.warnings:
                warn(warning)
    return code


def _convert_args(source_a: str, *, key: str | None) -> str:
    """`weightdoctor convert` arguments that write A, a local weights folder or file, beside itself as safetensors
    under `-renamed` (shell-quoted, --rename flags apart); "" for any other source (a repo id, an index file).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp()) / "ddp run"
        >>> folder.mkdir()
        >>> _convert_args(str(folder), key=None).endswith("/ddp run' -o '" + str(folder) + "-renamed'")
        True
    """
    import os

    from weightdoctor.paths import expand_user, shell_word

    path = expand_user(source_a)
    typed = source_a.rstrip("/") or source_a
    if path.is_dir():
        output = f"{typed}-renamed"
    elif path.is_file() and path.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt"):
        output = f"{os.path.splitext(typed)[0]}-renamed.safetensors"
    else:
        return ""
    words = [shell_word(source_a, argument=True), "-o", shell_word(output, argument=True)]
    if key is not None:
        words.append(f"--key {shell_word(key)}")
    return " ".join(words)


def _recheck_args(source_a: str, source_b: str | None, *, model_class: str | None, config: str | None,
                  num_labels: int | None, key: str | None, revision: str | None, revision_b: str | None) -> str:
    """This run's own arguments, shell-quoted, less its --rename flags (the fix panel adds them with its own).

    Example:
        >>> _recheck_args("train ckpt.pt", None, model_class="BertModel", config="base", num_labels=None,
        ...               key="model", revision=None, revision_b=None)
        "'train ckpt.pt' --model-class BertModel --config base --key model"
    """
    from weightdoctor.paths import shell_word

    words = [shell_word(source_a, argument=True)]
    if model_class is not None:
        words.append(f"--model-class {shell_word(model_class)}")
        if config is not None:
            words.append(f"--config {shell_word(config)}")
        if num_labels is not None:
            words.append(f"--num-labels {num_labels}")
    elif source_b is not None:
        words.append(shell_word(source_b, argument=True))
    for flag, value in (("--key", key), ("--revision", revision), ("--revision-b", revision_b)):
        if value is not None:
            words.append(f"{flag} {shell_word(value)}")
    return " ".join(words)
