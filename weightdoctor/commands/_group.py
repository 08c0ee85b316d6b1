"""The root command group: Click's usage errors become one line on stderr and exit 2, like every other error."""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from weightdoctor.errors import typed_words

try:  # Typer vendors Click (as typer._click) in its newer releases; these are what it raises
    from typer._click import core as click_core
    from typer._click import exceptions as click_exceptions
except ImportError:  # older Typer (0.12 ...) runs on the Click package itself
    from click import core as click_core  # type: ignore[no-redef]
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

# Click 8.2+ raises NoArgsIsHelpError for a bare `weightdoctor`; an older Click (under Typer 0.15) prints the help and
# exits 0 itself, and has no such class to catch.
_NO_ARGS_IS_HELP: Any = getattr(click_exceptions, "NoArgsIsHelpError", ())


def usage_line(exc: click_exceptions.UsageError, command_path: str | None = None, args: Sequence[str] = ()) -> str:
    """`error: weightdoctor inspect: Invalid value for '--sample': ... (see --help)`, on one line.

    `command_path` names the command when the error carries no context (Click's parser raises "Option
    '--gpu' requires an argument" without one); `args` are the command's own arguments, as typed.
    """
    where = exc.ctx.command_path if exc.ctx is not None else command_path or "weightdoctor"
    from weightdoctor.errors import on_one_line

    message = on_one_line(exc.format_message())
    if isinstance(exc, click_exceptions.NoSuchOption) and exc.ctx is not None:
        elsewhere = (_json_meant(exc.ctx, exc.option_name, args) or _option_in_lower_case(exc.ctx, exc.option_name)
                     or _option_elsewhere(exc.ctx, exc.option_name) or _max_memory_here(exc.ctx, exc.option_name, args))
        if elsewhere:
            # Click's own guess for an option of another command misled (`inspect --target`: "Possible options:
            # --stats", `convert --format`: "--force"); what takes it, or what this command calls it, does not.
            return f"error: {where}: No such option: {exc.option_name}; {elsewhere} (see {where} --help)"
    if isinstance(exc, click_exceptions.MissingParameter) and exc.ctx is not None:
        output = _output_given_as_argument(exc.ctx, args) or _output_to_name(exc.ctx, message, args)
        if output:
            return f"error: {where}: {output} (see {where} --help)"
    if message.startswith("Got unexpected extra argument") and exc.ctx is not None:
        split = (_size_split_in_two(exc.ctx, message, args) or _max_memory_split_in_words(exc.ctx, args)
                 or _dtype_given_as_argument(exc.ctx, args) or _several_sources(exc.ctx, message))
        if split:
            return f"error: {where}: {split} (see {where} --help)"
    return f"error: {where}: {message} (see {where} --help)"


def _output_given_as_argument(ctx: click_core.Context, args: Sequence[str]) -> str:
    """For `convert model.bin model.safetensors` (the output given as a second argument, as cp takes it; Click said
    only "Missing option '--output' / '-o'"): the command line with -o before it; "" for any other missing option."""
    param = next((p for p in ctx.command.params if "--output" in getattr(p, "opts", ())), None)
    if param is None or not param.required or ctx.params.get(param.name or "") is not None:
        return ""
    words = list(args)
    positional = _positional_indexes(ctx, words)
    if len(positional) != 2:
        return ""
    at = positional[1]
    output = words.pop(at)
    # After `--` every word is an argument: `-o OUT` goes before it (`convert -- a.bin -o b` read -o as a source).
    at = words.index("--") if "--" in words[:at] else at
    words[at:at] = ["-o", output]
    return (f"{ctx.info_name} takes its output as -o OUTPUT, not as a second argument: "
            f"{ctx.command_path} {_pasted(words)}")


def _dtype_given_as_argument(ctx: click_core.Context, args: Sequence[str]) -> str:
    """For `check-dtype model fp16` / `convert model -o out fp16` (a dtype typed as a second argument; Click said
    only "Got unexpected extra argument(s) (fp16)"): the command line with the option that takes it (`--target`,
    `--dtype`) before it; "" where no extra argument is a dtype name."""
    from weightdoctor.check_dtype import TARGETS
    from weightdoctor.dtypes import ALIASES

    option = next((opt for p in ctx.command.params if p.param_type_name == "option"
                   for opt in p.opts if opt in ("--target", "--dtype")), None)
    words = list(args)
    positional = _positional_indexes(ctx, words)
    if option is None or len(positional) < 2:
        return ""
    dtypes = [at for at in positional[1:] if words[at].lower() in {*ALIASES, *TARGETS, *TARGETS.values()}]
    if len(dtypes) != 1:
        return ""
    at = dtypes[0]
    typed = words[at]
    # After `--` every word is an argument: the option goes before it, as -o does.
    words.pop(at)
    at = words.index("--") if "--" in words[:at] else len(words) if at >= len(words) else at
    words[at:at] = [option, typed]
    return (f"{ctx.info_name} takes a dtype as {option} {typed}, not as an argument: {ctx.command_path} "
            f"{_pasted(words)}")


def _output_to_name(ctx: click_core.Context, message: str, args: Sequence[str]) -> str:
    """For `convert pytorch_model.bin` with no -o (Click said only "Missing option '--output' / '-o'", and the user
    had to guess whether it wants a file or a folder): the command line with an -o that does not exist yet, beside
    the input and in the format written, as Hugging Face's own conversion names it (pytorch_model.bin ->
    model.safetensors, what from_pretrained reads first); "" where the source cannot be told from the words."""
    import os

    param = next((p for p in ctx.command.params if "--output" in getattr(p, "opts", ())), None)
    if param is None or not param.required or ctx.params.get(param.name or "") is not None:
        return ""
    words = list(args)
    positional = _positional_indexes(ctx, words)
    if len(positional) != 1 or ctx.info_name not in ("convert", "shard"):
        return ""
    source = words[positional[0]]
    to = ctx.params.get("to") if ctx.info_name == "convert" else None
    name = _output_name_for(source, ctx.info_name, to if isinstance(to, str) else None,
                            ctx.params.get("dtype") if isinstance(ctx.params.get("dtype"), str) else None)
    if name is None:
        return ""
    # Put where the source was typed, so that a source after `--` keeps its place and -o goes before the `--`.
    at = words.index("--") if "--" in words[:positional[0]] else positional[0] + 1
    words[at:at] = ["-o", name]
    # A repo id converts to a folder, as a model folder does (its name offered is one: `name-safetensors`).
    repo = not os.path.exists(source) and _repo_name(source) is not None
    what = "a folder" if ctx.info_name == "shard" or os.path.isdir(source) or repo else "a file"
    return (f"{message.rstrip('.')}: {ctx.info_name} writes {what} that is not there yet and never over the input, "
            f"for example: {ctx.command_path} {_pasted(words)}")


def _positional_indexes(ctx: click_core.Context, words: Sequence[str]) -> list[int]:
    """Where the arguments (not options, not their values) are among `words`, as Click would read them."""
    takes_value = {opt for p in ctx.command.params if p.param_type_name == "option"
                   and not getattr(p, "is_flag", False) and not getattr(p, "count", False)
                   for opt in (*p.opts, *p.secondary_opts)}
    positional: list[int] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            positional += range(index + 1, len(words))
            break
        if word.startswith("-") and word != "-":
            index += 2 if word in takes_value and "=" not in word else 1
            continue
        positional.append(index)
        index += 1
    return positional


def _output_name_for(source: str, command: str | None, to: str | None, dtype: str | None) -> str | None:
    """An output name beside `source` that does not exist yet: a file's as convert names the files of a folder
    (`default_output_name`: `model.safetensors` for `pytorch_model.bin`, `x.safetensors` for `x.pt`,
    `pytorch_model.bin` for `model.safetensors --to bin`), `x-fp16.safetensors` for a cast in the same format,
    `DIR-safetensors` / `DIR-fp16` for a folder, `X-sharded` for a shard; a number
    added where that name is taken. A Hub repo id (`org/name`, `org/name@v1.0`) gets a folder in the current
    directory named for the repo (`name-safetensors`, `name-sharded`): it converts to a folder, and beside it is
    the Hub cache. None for anything else that is no local path."""
    import os

    trimmed = source.rstrip("/\\") or source
    if not os.path.exists(trimmed):
        repo = _repo_name(source)
        if repo is None:
            return None
        trimmed = repo
    folder, base = os.path.split(trimmed)
    is_dir = os.path.isdir(trimmed) or trimmed != source.rstrip("/\\")
    stem, suffix = (base, "") if is_dir else os.path.splitext(base)
    if command == "shard":
        candidate, tail = stem + "-sharded", ""
    elif is_dir:
        candidate, tail = f"{stem}-{dtype or (to or 'safetensors').lower()}", ""
    else:
        target = (to or "").lower()
        if target not in ("bin", "safetensors"):
            target = "bin" if suffix.lower() == ".safetensors" and to else "safetensors"
        if suffix.lower() == ".safetensors" and target == "safetensors" and not dtype:
            return None  # the same format, nothing asked of it: no name to offer
        from weightdoctor.errors import UsageError
        from weightdoctor.rewrite import default_output_name, parse_dtype

        try:
            full = parse_dtype(dtype)
        except UsageError:
            full = None  # a --dtype it cannot read is said when the command is run
        # The name convert gives each file of a folder (transformers', open_clip's and diffusers' names kept).
        renamed = default_output_name(base, target, full)
        if renamed == base:
            renamed = f"{stem}-{dtype}{suffix}"
        renamed = renamed.removesuffix("." + target)
        candidate, tail = renamed, "." + target
    for number in range(1, 100):
        name = candidate + ("" if number == 1 else f"-{number}") + tail
        path = os.path.join(folder, name)
        if not os.path.lexists(path):
            return path
    return None


def _repo_name(source: str) -> str | None:
    """The name part of a Hub repo id typed as a source (`name` of `org/name`, of `org/name@v1.0`), or None where
    `source` reads as no repo id (a path, a weight file's name: `model.bin` is a missing file, not a repo)."""
    from weightdoctor.checkpoint.hub import looks_like_repo_id

    repo_id = source.split("@", 1)[0]
    if not looks_like_repo_id(repo_id) or repo_id.lower().endswith(_WEIGHT_SUFFIXES):
        return None
    return repo_id.rsplit("/", 1)[-1]


# A name ending so is a weight file's (`pytorch_model.bin` mistyped), not a repo's, though the Hub's names allow it.
_WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".pkl", ".gguf", ".json", ".h5", ".msgpack")


def _size_split_in_two(ctx: click_core.Context, message: str, args: Sequence[str] = ()) -> str:
    """For `--gpu 24 GB` (the shell splits it: `24` went to --gpu, `GB` was left over as an extra argument), the
    size as one word; "" for any other extra argument. With `--gpu 24 GB -- model`, `GB` took the source's place
    and the model was the extra argument: the words as typed (`args`) show the split."""
    import re

    from weightdoctor.units import _BINARY, _DECIMAL, _SPELLED

    units = {*_DECIMAL, *_BINARY, *_SPELLED} - {""}
    words = list(args)
    options = {opt: max(p.opts, key=len) for p in ctx.command.params if p.param_type_name == "option"
               for opt in p.opts}
    for at in range(len(words) - 2):
        if words[at] == "--":
            break
        option, given, unit = words[at:at + 3]
        if option in options and re.fullmatch(r"\d+(\.\d+)?", given.strip()) and unit.upper() in units:
            return (f"{options[option]} {given} {unit}: a size is one word, {options[option]} "
                    f"{_joined_size(given, unit)} (the shell split it in two)")
    extra = re.search(r"\(([^()]*)\)$", message)
    unit = extra.group(1).split()[0] if extra and extra.group(1).split() else ""
    if unit.upper() not in units:
        return ""
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name or "") is not click_core.ParameterSource.COMMANDLINE:
            continue  # a default (`--reserve 0`) was not typed
        value = ctx.params.get(param.name or "")
        for given in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(given, str) and re.fullmatch(r"\d+(\.\d+)?", given.strip()) and param.opts:
                option = max(param.opts, key=len)
                return (f"{option} {given} {unit}: a size is one word, {option} {_joined_size(given, unit)} (the "
                        f"shell split it in two)")
    return ""


def _joined_size(number: str, unit: str) -> str:
    """`number` and `unit` as one size that parse_size reads: `24 Gb` joined as written is 24Gb, refused as bits
    (accelerate's reading), so a decimal unit is upper-cased (24GB, the bytes meant); 2 GiB stays as typed."""
    from weightdoctor.errors import UsageError
    from weightdoctor.units import parse_size

    for candidate in (f"{number}{unit}", f"{number}{unit.upper()}"):
        try:
            parse_size(candidate)
        except UsageError:
            continue
        return candidate
    return f"{number}{unit}"  # neither parses (a size under one byte): parse_size says why when it is typed


def _several_sources(ctx: click_core.Context, message: str) -> str:
    """For more checkpoints than the command reads (`inspect model-*.safetensors`, which the shell expands to every
    shard): what reads them together; "" when the extra argument is not a path that exists."""
    import os
    import re

    extra = re.search(r"\(([^()]*)\)$", message)
    extras = extra.group(1).split() if extra else []
    if not extras or not os.path.lexists(os.path.expanduser(extras[0])):
        return ""
    name = ctx.info_name or ""
    if name == "diff-keys":
        return f"diff-keys compares two checkpoints, A and B, not {2 + len(extras)}"
    return (f"{name} reads one checkpoint, not {1 + len(extras)} (a shell glob?): the folder or the index JSON reads "
            "every shard of a sharded checkpoint; diff-keys A B compares two")


# An option that another command names differently from this one: (command, option typed) -> this command's name.
_SAME_OPTION_HERE = {
    ("check-dtype", "--dtype"): "--target",
    ("convert", "--target"): "--dtype", ("shard", "--target"): "--dtype", ("plan-devices", "--target"): "--dtype",
    ("convert", "--format"): "--to", ("shard", "--to"): "--format",
    # save_pretrained's and huggingface_hub's max_shard_size, as people bring it (Click guessed nothing).
    ("shard", "--max-shard-size"): "--max", ("shard", "--max_shard_size"): "--max", ("shard", "--shard-size"): "--max",
    # from_pretrained's torch_dtype, as people bring it (Click guessed `--dtype, --force`, or nothing for check-dtype).
    **{(command, option): "--dtype" for command in ("convert", "shard", "plan-devices")
       for option in ("--torch-dtype", "--torch_dtype")},
    ("check-dtype", "--torch-dtype"): "--target", ("check-dtype", "--torch_dtype"): "--target",
}


# An option asking for what the command always does. Click guessed `inspect --security` meant --verify: zip CRCs,
# which say nothing of whether the pickle runs code.
_SECURITY_SCAN = ("inspect always runs the security scan (static: nothing is unpickled): see its security line, "
                  "\"security\" in --json; --verify checks zip CRCs and hashes, not safety")
_DONE_BY_DEFAULT = {("inspect", option): _SECURITY_SCAN
                    for option in ("--security", "--scan", "--safety", "--security-scan", "--check-security",
                                   "--safe", "--pickle-scan", "--scan-pickle")}
# from_pretrained's device_map, as people bring it: its strings are --strategy, a map of one's own is checked by --map.
_DONE_BY_DEFAULT[("plan-devices", "--device-map")] = (
    "plan-devices takes from_pretrained's device_map strings as --strategy (auto, balanced, balanced_low_0, "
    "sequential), and checks a hand-written device map with --map FILE")

# `check-dtype m -o report.json`: the report is what these commands write, to stdout; convert and shard's -o names
# the weights they write, which is not what was meant.
for _command in ("check-dtype", "inspect", "diff-keys"):
    for _option in ("-o", "--output", "--out"):
        _DONE_BY_DEFAULT[(_command, _option)] = (
            f"{_command} writes no file: it prints its report, and --json > report.json puts the JSON one in a file "
            "(-o is convert's and shard's, for the weights they write)")

# How from_pretrained, accelerate and vLLM-style scripts spell the memory budget plan-devices takes as --gpu / --cpu.
_MAX_MEMORY_NAMES = ("--max-memory", "--max_memory", "--maxmemory", "--max-mem", "--max_mem")


# One `device: size` entry of a max_memory, as a word of its own (`1:20GiB`, `cpu=64GB`, `"cuda:1":"20GiB"`).
_MAX_MEMORY_ENTRY = re.compile(r"""["']?(?:cuda:|gpu:)?(?:\d+|cpu|disk)["']?[:=]["']?\d+(?:\.\d+)?[A-Za-z]*["']?,?""",
                               re.IGNORECASE)


def _max_memory_here(ctx: click_core.Context, option: str, args: Sequence[str]) -> str:
    """For `plan-devices --max-memory 0=20GiB` (from_pretrained's max_memory, pasted; Click guessed nothing): the
    --gpu / --cpu options that say what every --max-memory typed says; "" for another option or command."""
    if ctx.info_name != "plan-devices" or option not in _MAX_MEMORY_NAMES:
        return ""
    from weightdoctor.units import max_memory_options

    values: list[str] = []
    words = iter(args)
    pending = False
    for word in words:
        name, equals, value = word.partition("=")
        if name in _MAX_MEMORY_NAMES:
            values.append(value if equals else next(words, ""))
            pending = True
        elif pending and _MAX_MEMORY_ENTRY.fullmatch(word):
            # The shell's brace expansion: `--max-memory {"0":"20GiB","cpu":"64GiB"}` unquoted reaches us as
            # `--max-memory 0:20GiB cpu:64GiB`, each entry a word of its own.
            values.append(word)
        else:
            pending = False
    options = max_memory_options(",".join(values)) if values and all(values) else None
    said = f": {_pasted(options)}" if options else " (e.g. --gpu 20GiB --gpu 20GiB --cpu 64GB)"
    return f"plan-devices takes max_memory as --gpu SIZE once per GPU, in device order, and --cpu SIZE for RAM{said}"


def _max_memory_split_in_words(ctx: click_core.Context, args: Sequence[str]) -> str:
    """For `plan-devices m --gpu {"0":"20GiB","1":"20GiB"}` unquoted: the shell's brace expansion hands it over as
    `--gpu 0:20GiB 1:20GiB`, and Click said only "Got unexpected extra argument(s) (1:20GiB)". The command line with
    --gpu once per GPU and --cpu for RAM, as typed otherwise; "" for any other extra argument."""
    if ctx.info_name != "plan-devices":
        return ""
    from weightdoctor.units import max_memory_options

    words = list(args)
    for at, word in enumerate(words):
        if word == "--":
            break
        if word not in ("--gpu", "--cpu"):
            continue
        end = at + 1
        while end < len(words) and _MAX_MEMORY_ENTRY.fullmatch(words[end]):
            end += 1
        entries = words[at + 1:end]
        if len(entries) < 2:
            continue
        options = max_memory_options(",".join(entry.rstrip(",") for entry in entries))
        if options is None:
            continue
        typed = " ".join(words[at:end])
        fixed = [*words[:at], *options, *words[end:]]
        return (f"{typed} is a max_memory dict the shell split into words (unquoted, its braces and quotes are taken "
                f"out); {word} takes one size: --gpu once per GPU in device order and --cpu for RAM: "
                f"{ctx.command_path} {_pasted(fixed)}")
    return ""


# How other tools ask for JSON output (`--format json`, `-o json`, `--output-format=json`): Click guessed another
# command's option (`inspect --format json`: "--format is an option of shard", whose --format is a file format).
_FORMAT_OPTIONS = ("--format", "--output-format", "--output_format", "--out-format", "--fmt", "-f", "--output", "-o",
                   "--to", "--out")
_JSON_FLAGS = ("-j", "--as-json", "--to-json", "--json-output", "--json_output", "--output-json")


def _json_meant(ctx: click_core.Context, option: str, args: Sequence[str]) -> str:
    """For `inspect model --format json` and the like (another tool's way to ask for JSON): the --json flag every
    command takes, in the command line to type; "" for another option or value."""
    words = list(args)
    name, equals, value = option.partition("=")
    at = next((i for i, word in enumerate(words) if word == option or word.startswith(option + "=")), None)
    if at is None:
        return ""
    typed = words[at]
    if name in _JSON_FLAGS:
        end = at + 1
    elif name in _FORMAT_OPTIONS:
        value = typed.partition("=")[2] if "=" in typed else (words[at + 1] if at + 1 < len(words) else "")
        if value.strip().lower().lstrip(".") != "json":
            return ""
        end = at + 1 if "=" in typed else at + 2
    else:
        return ""
    rest = [*words[:at], *words[end:]]
    if "--json" not in rest:
        # Before a `--`, after which every word is an argument (`inspect -- m --json`: "unexpected extra argument").
        at = rest.index("--") if "--" in rest else len(rest)
        rest[at:at] = ["--json"]
    return (f"{ctx.info_name} prints its report as one JSON object on stdout with --json: "
            f"{ctx.command_path} {_pasted(rest)}")


def _option_in_lower_case(ctx: click_core.Context, option: str) -> str:
    """For `--JSON`, `--Dtype` (Click matches case exactly and guessed nothing): the option meant; "" otherwise."""
    name, equals, value = option.partition("=")
    if name == name.lower():
        return ""
    for param in ctx.command.params:
        if name.lower() in (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())):
            return f"options are written in lower case: {name.lower()}{equals}{value}"
    return ""


def _option_elsewhere(ctx: click_core.Context, option: str) -> str:
    """For an option this command lacks: this command's name for it, else the other commands that take it
    (`--gpu is an option of plan-devices`); "" when none does."""
    group = ctx.parent.command if ctx.parent is not None else None
    name = ctx.info_name or ""
    if (name, option) in _SAME_OPTION_HERE:
        return f"{name} calls it {_SAME_OPTION_HERE[(name, option)]}"
    if option in ("--version", "-V", "-v"):
        # `-V` / `-v`, as python and pip spell it; `inspect --version`, the program's option given to a command.
        program = ctx.parent.command_path if ctx.parent is not None else ctx.command_path
        if option == "--version":
            return f"--version is an option of {program} itself: {program} --version"
        if ctx.parent is None:
            return f"{program} --version prints the version"
    if (name, option.replace("_", "-")) in _DONE_BY_DEFAULT:
        return _DONE_BY_DEFAULT[(name, option.replace("_", "-"))]
    commands = getattr(group, "commands", None)
    if not isinstance(commands, Mapping):
        return ""
    owners = [other for other in commands if other != name
              and any(option in (*param.opts, *param.secondary_opts) for param in commands[other].params)]
    if not owners:
        return ""
    listed = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} and {owners[-1]}"
    return f"{option} is an option of {listed}"


def _refuse_repeated_options(command: click_core.Command, args: Sequence[str],
                             help_names: Sequence[str] = ()) -> None:
    """Refuse an option that takes one value given twice with different values (`--filter a --filter b`): Click
    keeps the last one without a word, so the first was silently ignored. Options that collect several values
    (`--gpu`, `--rename`) and flags are left to Click; so is a run that asks for help (`help_names`), which
    Click answers before any value.

    The tokens are read as Click's parser reads them: every option that takes a value takes the next token
    whatever it looks like (`--metadata --output=x` gives --metadata the text `--output=x`), and `-oDIR` is -o
    with DIR.

    Raises:
        click.UsageError: naming the option and both values.
    """
    single: dict[str, str] = {}
    params: dict[str, click_core.Parameter] = {}
    takes_value: set[str] = set()
    names = {opt for param in command.params if param.param_type_name == "option"
             for opt in (*param.opts, *param.secondary_opts)}
    for param in command.params:
        if param.param_type_name != "option" or getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        for opt in (*param.opts, *param.secondary_opts):
            takes_value.add(opt)
            if not param.multiple:
                single[opt] = param.opts[0]
                params[param.opts[0]] = param
    seen: dict[str, str] = {}
    repeated = ""
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            break
        if token in help_names:
            return
        if token.startswith("--"):
            option, has_value, value = token.partition("=")
        elif token[:2] in takes_value:  # a short option, its value attached or the next token
            option, has_value, value = token[:2], len(token) > 2, token[2:]
        else:
            _refuse_typographic_dash(token, names)
            continue
        if option not in takes_value:
            continue
        if not has_value:
            value = next(tokens, "")
        name = single.get(option)
        if name is None:
            continue
        if name in seen and not repeated and not _same_value(params[name], seen[name], value):
            repeated = f"{name} is given twice ({seen[name]!r}, then {value!r}); it takes one value: give it once"
        seen[name] = value
    if repeated:
        raise click_exceptions.UsageError(repeated)


def _same_value(param: click_core.Parameter, first: str, second: str) -> bool:
    """Whether two typed values of `param` mean the same once its type converts them (`--sample 5` and
    `--sample 05` are both 5; a case-insensitive choice's `FP16` and `fp16` one choice). A value the type
    refuses is compared as typed: Click reports the bad value itself once the repetition passes."""
    if first == second:
        return True
    try:
        return bool(param.type.convert(first, param, None) == param.type.convert(second, param, None))
    except (click_exceptions.BadParameter, ValueError, TypeError):
        return False


# Dashes a word processor or a chat client puts in place of `--` or `-` (en and em dash, minus sign, ...).
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"


def _refuse_typographic_dash(token: str, options: set[str]) -> None:
    """Refuse a word that is one of `options` but for a typographic dash in place of its hyphens (`—json`, pasted
    from a page that set `--json` as an em dash): Click took it for a source, and said `—json: no such file`, or,
    beside the real source, `inspect reads one checkpoint, not 2 (a shell glob?)`.

    Raises:
        click.UsageError: naming the word, its dash and the option meant.
    """
    stripped = token.lstrip(_DASHES + "-")
    if not stripped or token[0] not in _DASHES:
        return
    name, _, _value = stripped.partition("=")
    meant = next((opt for opt in (f"--{name}", f"-{name}") if opt in options), None)
    if meant is None:
        return
    import os
    import unicodedata

    if os.path.lexists(token):
        return  # a file of that name, given as the source
    dash = token[0]
    raise click_exceptions.UsageError(
        f"{token!r} starts with {unicodedata.name(dash, 'a dash').lower()} (U+{ord(dash):04X}), not hyphens: "
        f"type {meant}" + (f"={_value}" if _ else "") + " (text pasted from a document or chat often has its -- "
        "turned into a dash)")


# Command names people bring from other tools (picklescan's `scan`, `info`, `plan`), and the command that answers
# what they ask: Click's close-name guess found none of them ("No such command 'scan'." and nothing more).
_COMMAND_MEANT = {
    **dict.fromkeys(("scan", "security", "safety", "safe", "audit", "verify", "picklescan"),
                    ("inspect", "scans a pickle for code before it reads anything (its security line; an unsafe "
                                "file exits 2)")),
    **dict.fromkeys(("info", "show", "summary", "describe", "ls", "list", "stats"),
                    ("inspect", "shows what a checkpoint holds")),
    **dict.fromkeys(("plan", "device-map", "devices", "fit", "memory"),
                    ("plan-devices", "plans where each module lands on your GPUs, CPU and disk")),
    "split": ("shard", "writes a checkpoint as shards of a size you choose"),
    "compare": ("diff-keys", "compares the keys (and with --values the values) of two checkpoints"),
    "cast": ("convert", "casts with --dtype (check-dtype says first what a cast loses)"),
}


def _command_meant(ctx: click_core.Context, args: Sequence[str]) -> str:
    """For a command name of another tool (`weightdoctor scan model.pt`) or a checkpoint given with no command: the
    command that answers it, as the line to type; "" otherwise."""
    import os

    # A word of another tool that is also a file here (`weightdoctor scan` beside ./scan) is that file when only
    # options follow it: the command suggested for it had no file to read (`weightdoctor inspect`, or `inspect
    # --json` for `scan --json`). A word after `--` is a file, even one written -x.
    only_options = all(arg.startswith("-") and arg != "--" for arg in args[1:])
    if (args and (args[0] not in _COMMAND_MEANT or only_options)
            and os.path.lexists(os.path.expanduser(args[0]))):
        # `weightdoctor model.pt`: the checkpoint given with no command before it. A path `-x` (given after `--`)
        # is written ./-x, or the command pasted reads it as an option.
        from weightdoctor.paths import shell_word

        return (f"{args[0]!r} is a path, not a command: name the command first, e.g. {ctx.command_path} inspect "
                f"{' '.join([shell_word(args[0], argument=True), _pasted(args[1:])]).rstrip()} "
                f"(commands: {', '.join(ctx.command.list_commands(ctx))})")
    if args and args[0] in ("help", "version") and not os.path.lexists(args[0]):
        # git's and pip's `help COMMAND`, and `version`: options here.
        if args[0] == "version":
            return f"No such command 'version': {ctx.command_path} --version prints it"
        named = [arg for arg in args[1:2] if ctx.command.get_command(ctx, arg) is not None]  # type: ignore[attr-defined]
        return (f"No such command 'help': {ctx.command_path} {named[0]} --help shows its help" if named else
                f"No such command 'help': {ctx.command_path} --help lists the commands, {ctx.command_path} COMMAND "
                "--help shows one")
    if not args or args[0] not in _COMMAND_MEANT:
        return ""

    command, does = _COMMAND_MEANT[args[0]]
    return f"No such command {args[0]!r}; {command} {does}: {ctx.command_path} {_pasted([command, *args[1:]])}"


def _pasted(words: Sequence[str]) -> str:
    """`words` as a shell reads them back, for a command line a message prints to be pasted."""
    from weightdoctor.paths import shell_word

    return " ".join(shell_word(word) for word in words)


class OneLineErrorsGroup(TyperGroup):
    """A TyperGroup whose bad-usage errors (missing argument, bad option value, unknown option) print one
    line instead of Typer's multi-line usage panel. Help (including a bare `weightdoctor`) is unchanged."""

    _subcommand_path: str | None = None  # "weightdoctor plan-devices" once the subcommand is known
    _subcommand_args: tuple[str, ...] = ()  # its arguments, as typed

    def resolve_command(
        self, ctx: click_core.Context, args: list[str]
    ) -> tuple[str | None, click_core.Command | None, list[str]]:
        meant = _command_meant(ctx, args) if args and self.get_command(ctx, args[0]) is None else ""
        if meant:
            raise click_exceptions.UsageError(meant, ctx)
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None:
            self._subcommand_path = f"{ctx.command_path} {name}"
            self._subcommand_args = tuple(rest)
        if command is not None:
            _refuse_repeated_options(command, rest, ctx.help_option_names)
        return name, command, rest

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        # Each command measures the memory available afresh (several run in one test process); a process that has
        # not imported the reader yet holds no measure, and --help is not made to import it.
        reader = sys.modules.get("weightdoctor.checkpoint.safetensors_format")
        if reader is not None:
            reader.forget_memory_room()
        # The words this run was given (Click reads sys.argv where no args are passed): a line printed leaves the paths
        # among them whole (errors.clip_message), in-process runs (CliRunner) as the program's own.
        typed = typed_words(sys.argv[1:] if args is None else [str(arg) for arg in args])
        if not standalone_mode:
            with typed:
                return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            with typed:
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except SystemExit as exc:
            # Typer answers a closed stdout (`weightdoctor inspect x --json | head -c 1`, `--help | true`) by
            # wrapping the streams in Click's PacifyFlushWrapper and exiting 1, which callers read as "findings":
            # exit as the fast path does (141, 128 + SIGPIPE, nothing printed).
            # Rich answers it the same way while printing `--help` (`weightdoctor inspect --help | head -1`):
            # SystemExit(1) raised while handling the BrokenPipeError.
            if exc.code == 1 and (type(sys.stdout).__name__ == "PacifyFlushWrapper"
                                  or isinstance(exc.__context__, BrokenPipeError)):
                from weightdoctor.entry import exit_on_closed_pipe

                exit_on_closed_pipe()
            raise
        except _NO_ARGS_IS_HELP as exc:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)  # the help text, as Typer shows it
            sys.exit(exc.exit_code)
        except click_exceptions.UsageError as exc:
            # stderr on a full disk or closed by its reader: the line is lost, the exit code is not (it was 1).
            with contextlib.suppress(OSError):
                from weightdoctor.errors import clip_middle

                # Cut as every error line is (render.console.error): a command name of a megabyte, or a max_memory
                # of a million entries, made a line of megabytes that echoed it.
                typer.echo(clip_middle(usage_line(exc, self._subcommand_path, self._subcommand_args)), err=True)
            sys.exit(2)
        except click_exceptions.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        if self.no_args_is_help and not (sys.argv[1:] if args is None else list(args)):
            # Click before 8.2 prints the help of a bare `weightdoctor` and returns 0 (8.2+ raises NoArgsIsHelpError,
            # above): naming no command is a usage error (exit 2) on every Click.
            sys.exit(2)
        # Without standalone mode Click returns the exit code of a typer.Exit, or the command's result.
        sys.exit(result if isinstance(result, int) else 0)


class LazyCommands(Mapping[str, Any]):
    """The subcommands of a group, each built (and its module imported) the first time it is looked up.

    `specs` maps a command name to "module:function" (in the order `--help` lists them). A run of one command
    imports and builds that command only; `--help`, which shows every command's one-line help, builds them all.
    Each is built exactly as `app.command(name)(function)` would have registered it.
    """

    def __init__(self, specs: dict[str, str], rich_markup_mode: Any) -> None:
        self._specs = specs
        self._rich_markup_mode = rich_markup_mode
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        command = self._built.get(name)
        if command is None:
            module_name, _, function_name = self._specs[name].partition(":")  # KeyError: no such command
            holder = typer.Typer()
            holder.command(name)(getattr(importlib.import_module(module_name), function_name))
            command = typer.main.get_command_from_info(
                holder.registered_commands[0],
                pretty_exceptions_short=holder.pretty_exceptions_short,
                rich_markup_mode=self._rich_markup_mode,
            )
            self._built[name] = command
        return command

    def __contains__(self, name: object) -> bool:
        return name in self._specs  # without building it

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


class LazyOneLineErrorsGroup(OneLineErrorsGroup):
    """A OneLineErrorsGroup whose subcommands come from `lazy_commands` ("name" -> "module:function"), built
    only when looked up, so that `weightdoctor diff-keys ...` neither imports nor builds the other commands."""

    lazy_commands: dict[str, str] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.lazy_commands, self.rich_markup_mode)  # type: ignore[assignment]

    def list_commands(self, ctx: click_core.Context) -> list[str]:
        return list(self.commands)  # the names only: TyperGroup's version would build every command
