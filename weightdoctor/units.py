"""Byte sizes: parsing the size strings users type and formatting byte counts for people."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from weightdoctor.errors import UsageError, clip_middle

_DECIMAL = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}
_BINARY = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50}
# The number is whatever Python's float() reads before the unit, as accelerate and huggingface_hub read it
# ("1e3MB", " 24 GB"); "inf" / "nan" have no digits before their letters, so they end up as unknown units.
_SIZE_RE = re.compile(r"^\s*(.*?)\s*([A-Za-z]*)\s*$")
# Every refusal of a unit lists the units read, and how: any case, but a decimal unit's b in capitals (kb, Gb: bits
# to accelerate).
_UNITS_HELP = ("(decimal: KB MB GB TB PB; binary: KiB MiB GiB TiB PiB; any case, but KB..PB with a capital B; a bare "
               "number is bytes)")
_POWERS = {"K": 3, "M": 6, "G": 9, "T": 12, "P": 15}
# Units spelled out, as people type them (`200bytes`, `200Megabytes`, `2 gibibytes`): one reading each, the one of the
# abbreviation it spells (a megabyte is an MB, 10^6 bytes, as IEC and SI define it; the 2^20 one is the mebibyte).
_SPELLED = {f"{prefix}BYTE{plural}": unit for prefix, unit in (
    ("", "B"), ("KILO", "KB"), ("MEGA", "MB"), ("GIGA", "GB"), ("TERA", "TB"), ("PETA", "PB"), ("KIBI", "KIB"),
    ("MEBI", "MIB"), ("GIBI", "GIB"), ("TEBI", "TIB"), ("PEBI", "PIB")) for plural in ("", "S")}
_CANONICAL = {"B": "B", **{unit: unit for unit in ("KB", "MB", "GB", "TB", "PB")},
              **{unit: unit[0] + "i" + unit[2] for unit in ("KIB", "MIB", "GIB", "TIB", "PIB")}}


def _split_size(text: str) -> tuple[str, str] | None:
    """`" 1.5 GB"` -> `("1.5", "GB")`, a unit spelled out as its abbreviation (`"200 Megabytes"` -> `("200",
    "MB")`); None when there is no number in front of the unit."""
    match = _SIZE_RE.match(text)
    if not match or not match.group(1):
        return None
    unit = _SPELLED.get(match.group(2).upper())
    return match.group(1), _CANONICAL[unit] if unit else match.group(2)


def parse_size(text: str | int, option: str | None = None) -> int:
    """Parse a size such as `"24GB"`, `"200MiB"` or `"1.5 TB"` into bytes.

    Decimal units (KB, MB, GB, TB) are powers of 1000 and binary units (KiB, MiB, GiB, TiB) powers of
    1024, and the product is truncated, exactly as accelerate's `convert_file_size_to_int` and
    huggingface_hub's `parse_size_to_int` compute it (`"4.1GB"` is 4099999999 bytes, `"1.005KB"` 1004).
    A bare number is bytes. A lowercase `b` after a decimal prefix (`"24Gb"`) is refused: accelerate reads
    it as bits (3x10^9 bytes), most people as bytes.

    Example:
        >>> parse_size("200MB"), parse_size("200MiB"), parse_size("4.1GB")
        (200000000, 209715200, 4099999999)

    `option` is the command-line option the size was given to (`--max`, `--gpu`): a refusal names it, as Click's own
    "Invalid value for '--batch'" lines do, so that a command with several sizes says which one is wrong.

    Raises:
        UsageError: the text is not a number followed by a known unit (the message quotes it), a bit unit,
            or a positive size under one byte (it would truncate to 0, which callers read as "no limit").
    """
    if option is None:
        return _read_size(text)
    try:
        return _read_size(text)
    except UsageError as refused:
        raise UsageError(f"invalid value for '{option}': {refused}") from None


def _read_size(text: str | int) -> int:
    """`parse_size` without the option's name in its refusals."""
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"size must not be negative: {text}")
        return text
    parts = _split_size(text)
    if parts is None:
        raise UsageError(f"cannot parse size {text!r}: expected a number and a unit such as 200MB or 2GiB")
    digits, written = parts
    unit = written.upper()
    if unit in _DECIMAL and written.endswith("b"):
        raise UsageError(
            f"size {text!r} is ambiguous: a lowercase b means bits to accelerate (it reads 8Gb as 1GB), bytes to "
            f"most people; write {digits}{unit} for bytes {_UNITS_HELP}"
        )
    if unit in ("K", "M", "G", "T", "P"):
        # Read as decimal by some tools and binary by others (Docker), refused by accelerate: said, not guessed.
        raise UsageError(f"size {text!r} is ambiguous: write {digits}{unit}B ({unit}B = 10^{_POWERS[unit]} bytes) "
                         f"or {digits}{unit}iB (2^{_POWERS[unit] * 10 // 3} bytes) {_UNITS_HELP}")
    if unit in _DECIMAL:
        factor = _DECIMAL[unit]
    elif unit in _BINARY:
        factor = _BINARY[unit]
    else:
        raise UsageError(f"cannot parse size {text!r}: unknown unit {written!r} {_UNITS_HELP}")
    try:
        number = float(digits)
    except ValueError:
        if (comma := _comma_reading(digits, written)) is not None:
            raise UsageError(f"cannot parse size {text!r}: {comma}") from None
        raise UsageError(f"cannot parse size {text!r}: {digits!r} is not a number") from None
    if not math.isfinite(number):
        # `inf` and `nan` are refused above as no number: this is a number past float's range (1e400, 5,000 nines),
        # which was told "a size is a finite number of bytes, not negative", as if it were neither.
        raise UsageError(f"cannot parse size {text!r}: the number is too large for a size (more bytes than any "
                         "machine holds)")
    if number < 0:
        raise UsageError(f"cannot parse size {text!r}: a size is a finite number of bytes, not negative")
    size = int(number * factor)  # truncated, as both libraries do
    if number == 0 and _nonzero(digits):
        number = math.ulp(0)  # `1e-400` reads as the float 0: a size under one byte, not "0 means none"
    if number > 0 and size == 0:
        raise UsageError(f"size {text!r} is under one byte: give at least 1 byte (0 means none)")
    return size


def _comma_reading(digits: str, written: str) -> str | None:
    """What a number written with commas is to be typed as: a decimal comma (`1,5GB`, as much of Europe writes
    it) as a decimal point, thousands separators (`200,000`) left out; both where a group of three digits can be
    either (`1,500MB`). None for any other number that does not parse.

    Example:
        >>> _comma_reading("1,5", "GB"), _comma_reading("200,000", "")
        ('a comma is no decimal point here: write 1.5GB', 'write 200000 (no thousands separators)')
    """
    if re.fullmatch(r"\d+,\d+", digits.strip()) and not re.fullmatch(r"\d{1,3},\d{3}", digits.strip()):
        return f"a comma is no decimal point here: write {digits.strip().replace(',', '.')}{written}"
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", digits.strip()):
        whole = f"write {digits.strip().replace(',', '')}{written} (no thousands separators)"
        if digits.count(",") == 1 and written:
            # One group of three after a unit: 1,500MB is 1500 MB to some, 1.5 MB to others.
            return f"{whole}, or {digits.strip().replace(',', '.')}{written} if the comma is a decimal point"
        return whole
    return None


def _nonzero(digits: str) -> bool:
    """Whether the number written is not zero, where float() rounds it to 0 (`1e-400`)."""
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(digits.strip()) != 0
    except (InvalidOperation, ValueError):
        return False


def refuse_unitless_size(option: str, text: str) -> None:
    """Refuse a size typed without a unit that comes to under 1024 bytes (`--gpu 24`, `--gpu 24.5`): meant as
    GB by a person, read as bytes by accelerate, and no model fits in 1 KB anyway. A size that does not parse
    is left to `parse_size` to name.

    Raises:
        UsageError: the size has no unit and is between 1 and 1023 bytes.
    """
    parts = _split_size(text)
    if parts is None or parts[1]:
        return
    size = parse_size(text, option)
    if 0 < size < 1024:
        number = parts[0]
        raise UsageError(f"{option} {number} is {size} byte{'s' if size != 1 else ''}: give a unit, e.g. "
                         f"{number}GB (decimal) or {number}GiB (binary)")


def refuse_size_list(option: str, text: str) -> None:
    """Refuse several sizes given to an option that takes one (`--gpu 24GB,24GB`, `--gpu 2x24GB`, as other tools
    write a machine's GPUs): parse_size said "'24GB,24' is not a number", which hid that the option repeats.

    Raises:
        UsageError: naming the option and the repeated form that says the same.
    """
    decimal = re.fullmatch(r"\s*(\d+),(\d+\s*[A-Za-z]+)\s*", text)
    if decimal is not None:
        # `1,5GB`, `7,5 GiB`: a decimal comma, as many locales write 1.5, not a 1-byte GPU and a 5 GB one.
        raise UsageError(f"{option} {text!r}: a size takes a decimal point ({decimal.group(1)}.{decimal.group(2)}); "
                         f"for several GPUs, repeat {option} with one size each")
    parts = [part for part in re.split(r"[,;]", text) if part.strip()]
    count = len(parts)
    times = re.fullmatch(r"\s*(\d+)\s*[x\u00d7*]\s*(\S.*?)\s*", text)
    digits = times.group(1).lstrip("0") if times is not None else ""
    if times is not None and digits and _split_size(times.group(2)) is not None:
        # Only the first few are built: `1000000000x24GB` built a list of 10^9 sizes (MemoryError), and a count
        # past what an index holds ended in an OverflowError. The digits are measured before int() reads them.
        count = int(digits) if len(digits) <= 12 else 10 ** 12
        parts = [times.group(2)] * min(count, 5)
    if count < 2:
        return
    if count > _MAX_GPUS:
        shown_count = f"{count:,}" if count < 10 ** 12 else "over 10^12"
        raise UsageError(f"{option} {clip_middle(text, 120)!r} holds {shown_count} sizes: plan-devices plans at most "
                         f"{_MAX_GPUS:,} GPUs, one {option} each")
    shown = " ".join(f"{option} {part.strip()}" for part in parts[:4]) + (" ..." if count > 4 else "")
    raise UsageError(f"{option} {text!r} holds {count} sizes: {option} takes one, repeat it for each "
                     f"({shown})")


# plan-devices' most GPUs (commands/plan_devices.py's MAX_GPUS); a max_memory of as many, with its cpu and disk entries.
_MAX_GPUS = 1024
_MAX_MEMORY_ENTRIES = _MAX_GPUS + 2


def max_memory_options(text: str) -> list[str] | None:
    """The plan-devices options that say what a `max_memory` value says, as people paste it from
    from_pretrained or accelerate: `0=20GiB`, `cuda:0=20GB,cpu=64GB`, `{"0": "20GiB", "cpu": "64GB"}`,
    `{0: '20GiB'}`, its entries as a dict writes them (`0:20GiB`, `"cpu": "64GB"`; `{0:20GiB}`, the dict the
    shell took the quotes out of) or a plain list of GPU sizes `20GiB,20GiB`; None for text that is none of these, or
    whose GPU indices leave a gap (accelerate gives a GPU missing from max_memory nothing, which --gpu cannot say).

    Example:
        >>> max_memory_options('{"0": "20GiB", "cpu": "64GB"}')
        ['--gpu', '20GiB', '--cpu', '64GB']
    """
    import ast
    import json

    text = text.strip()
    entries: list[tuple[str, str]] = []
    parsed: Any = None
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                # Text nested thousands deep: json recursed past Python's limit, and the parser ran out of its own
                # stack (MemoryError) or recursed building the tree; a set of dicts or a dict keyed by a list
                # (`{{0:1}}`, `{[1]:2}`) is unhashable (TypeError, which read "unexpected TypeError" naming the
                # source); no max_memory is written so. A dict the shell
                # took the quotes out of (`{"0":"20GiB"}` unquoted reaches us as `{0:20GiB}`) is read as pairs below.
                if text.count("{") != 1 or not text.endswith("}"):
                    return None
                text = text[1:-1]
        if parsed is not None and not isinstance(parsed, dict):
            return None
        if isinstance(parsed, dict):
            entries = [(str(key), str(value)) for key, value in parsed.items()]
    if parsed is None:
        # `0: 20GiB` and `"cpu":"64GiB"`, as a Python or JSON max_memory writes each entry, read as `0=20GiB`.
        text = re.sub(r"\s*([:=])\s*", r"\1", text)
        parts = [part.strip() for part in re.split(r"[,;\s]+", text) if part.strip()]
        if not parts:
            return None
        if not any("=" in part or ":" in part for part in parts):
            # A list of sizes, one per GPU in order (`20GiB,20GiB`), as --gpu repeated says it.
            entries = [(str(index), part) for index, part in enumerate(parts)]
        else:
            for part in parts:
                # `cuda:0=20GiB` keeps its colon in the device; `cuda:0:20GiB` and `0:20GiB` end in the size.
                key, equals, value = part.rpartition("=") if "=" in part else part.rpartition(":")
                if not equals or not key or not value:
                    return None
                entries.append((key, value))
    if len(entries) > _MAX_MEMORY_ENTRIES:
        return None  # more GPUs than plan-devices plans for: a million entries took seconds to say so
    gpus: dict[int, str] = {}
    cpu: list[str] = []
    disk: list[str] = []
    for key, value in entries:
        device = key.strip().strip("'\"").lower()
        device = device.removeprefix("cuda:").removeprefix("cuda").removeprefix("gpu:").removeprefix("gpu")
        size = value.strip().strip("'\"")
        if not re.fullmatch(r"\d+(?:\.\d+)?\s*[A-Za-z]*", size):
            return None  # not a size (`--max-memory lots`): no options to print
        if device.isdecimal():
            # isdecimal, not isdigit: int() refuses a superscript ², which isdigit takes. An index of thousands of
            # digits is past int()'s limit too, and past any machine's GPUs: a gap, as one missing would be.
            if len(device) > 9:
                return None
            gpus[int(device)] = size
        elif device == "cpu":
            cpu = ["--cpu", size]
        elif device == "disk":
            disk = ["--disk"]  # accelerate's "disk" entry lets the rest go to disk, as --disk does
        else:
            return None
    if sorted(gpus) != list(range(len(gpus))) or not (gpus or cpu or disk):
        return None
    return [word for index in sorted(gpus) for word in ("--gpu", gpus[index])] + cpu + disk


def refuse_max_memory_value(option: str, text: str) -> None:
    """Refuse a `max_memory` entry given to --gpu or --cpu (`--gpu 0=20GiB`, `--gpu '{"0": "20GiB"}'`, `--cpu
    cpu=64GB`): parse_size said "'0=20' is not a number", which did not say that these options take a size only.

    Raises:
        UsageError: naming the options that say the same.
    """
    if "=" not in text and ":" not in text and not text.lstrip().startswith("{"):
        return
    options = max_memory_options(text)
    if options is None:
        return
    import shlex

    raise UsageError(f"{option} {text!r} is written as a max_memory entry (device=size): {option} takes one size, "
                     f"--gpu once per GPU in device order and --cpu for RAM: {shlex.join(options)}")


# The largest device size plan-devices takes: 2^53 bytes (9 PB), past any GPU's or machine's memory and the last
# integer a float holds exactly. accelerate reads max_memory as int(float(number) * unit) (convert_file_size_to_int)
# and so did this planner: `--gpu 1e20GB` was planned as 99999999999999991433150857216 bytes, not the 10^29 typed.
MAX_DEVICE_BYTES = 2**53


def refuse_beyond_any_device(option: str, text: str) -> int:
    """The bytes of `text`, a device size given to `option`, refused past `MAX_DEVICE_BYTES`.

    Example:
        >>> refuse_beyond_any_device("--gpu", "80GB")
        80000000000
        >>> refuse_beyond_any_device("--gpu", "1e20GB")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        weightdoctor.errors.UsageError: --gpu 1e20GB is more memory than any device holds (over 9 PB, 2^53 bytes, past
        which a size read as a float, as accelerate reads max_memory, is no longer exact): give the device's own size

    Raises:
        UsageError: the size does not parse (as `parse_size` says), or is over 2^53 bytes.
    """
    size = parse_size(text, option)
    if size > MAX_DEVICE_BYTES or _typed_bytes(text) > MAX_DEVICE_BYTES:
        raise UsageError(f"{option} {text.strip()} is more memory than any device holds (over 9 PB, 2^53 bytes, past "
                         "which a size read as a float, as accelerate reads max_memory, is no longer exact): give the "
                         "device's own size")
    return size


def _typed_bytes(text: str) -> Decimal:
    """The bytes `text` says, exactly (`parse_size` reads the number as a float: `9007199254740993`, 2^53 + 1, was
    read as 2^53, and taken as one of the sizes it holds exactly); 0 where Decimal does not read it as float does."""
    parts = _split_size(text)
    if parts is None:
        return Decimal(0)
    factor = _DECIMAL.get(parts[1].upper()) or _BINARY.get(parts[1].upper()) or 1
    try:
        return Decimal(parts[0]) * factor
    except ArithmeticError:  # decimal.InvalidOperation
        return Decimal(0)


def size_is_binary(text: str) -> bool:
    """True when a size string uses a binary unit (KiB, MiB, ...), for messages that say which was used."""
    parts = _split_size(text)
    return parts is not None and parts[1].upper() in _BINARY


def size_unit(text: str) -> str:
    """The unit a size string was typed with, as typed (`"400 KB"` -> `"KB"`); "" for a bare number of bytes (`"1e5"`).

    Example:
        >>> size_unit("400 KB"), size_unit("0.4MB"), size_unit("1e5")
        ('KB', 'MB', '')
    """
    parts = _split_size(text)
    return parts[1] if parts is not None else ""


def unit_family(text: str) -> str | None:
    """The family of the unit a size was typed in, "binary" (KiB, MiB, ...) or "decimal" (KB, MB, ...); None for a
    number of bytes, bare or in `B` (`2097152B`), which is as much one family's as the other's.

    Example:
        >>> unit_family("1.7GiB"), unit_family("2GB"), unit_family("2097152B"), unit_family("1e9")
        ('binary', 'decimal', None, None)
    """
    if size_unit(text).upper() in ("", "B"):
        return None
    return "binary" if size_is_binary(text) else "decimal"


def binary_family(texts: Iterable[str]) -> bool:
    """Whether sizes the user typed are all in binary units, at least one of them with a unit: the family a report
    echoes sizes in (`--gpu 1.7GiB` is said back as `1.70 GiB`, not `1.83 GB`); a number of bytes (`1e9`,
    `2097152B`) takes no side.

    Example:
        >>> binary_family(["1.7GiB", "512MiB"]), binary_family(["1.7GiB", "2GB"]), binary_family(["1.7GiB", "512B"])
        (True, False, True)
    """
    families = {unit_family(text) for text in texts} - {None}
    return families == {"binary"}


def format_bytes(num_bytes: int | float, binary: bool = False) -> str:
    """Format a byte count for people: `format_bytes(1_500_000)` is `"1.50 MB"`."""
    base = 1024.0 if binary else 1000.0
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"] if binary else ["B", "KB", "MB", "GB", "TB", "PB"]
    if isinstance(num_bytes, int) and abs(num_bytes) >= 10**300:
        # Past a float (`--kv-cache --batch 10**400`): float() raised OverflowError halfway through a report.
        digits = str(abs(num_bytes))
        return f"{'-' if num_bytes < 0 else ''}{digits[0]}.{digits[1:3]}e+{len(digits) - 1} B"
    value = float(num_bytes)
    for unit in units:
        if abs(value) < base or unit == units[-1]:
            if unit == "B":
                return f"{int(value)} B"
            # Thousands of PB and more (`--seq-len 10**30`) in powers of ten, not in 40 digits.
            return f"{value:.2f} {unit}" if abs(value) < 10**6 else f"{value:.3g} {unit}"
        value /= base
    raise AssertionError("unreachable")


def format_count(count: int) -> str:
    """Format a parameter count for people: 110_000_000 -> "110.0M"."""
    for factor, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(count) >= factor:
            return f"{count / factor:.1f}{suffix}"
    return str(count)
