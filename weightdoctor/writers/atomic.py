"""Atomic outputs: write into a temporary sibling, fsync, then rename (files) or swap (directories).

A file destination appears whole or not at all: bytes go to `.NAME.wdtmp-<pid>-<token>` beside it and
are renamed over `NAME` only after they are fsynced and verified. A directory destination is built in a
staging sibling (`.NAME.wdstage-<pid>-<token>`) and swapped in with one `renameat2(RENAME_EXCHANGE)`, so
the files of an earlier save stay in place until the new set is complete; they are deleted last. Temp
siblings left by a process that was killed (its pid no longer runs) are removed by the next run.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import mmap
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from weightdoctor.errors import OutputError

TEMP_MARK = ".wdtmp-"
STAGE_MARK = ".wdstage-"
OLD_MARK = ".wdold-"
# DOTALL: a name may hold a newline (`-o $'a\nb.safetensors'`), whose siblings were then never found again.
_SIBLING_RE = re.compile(r"^\.(?P<name>.+)\.(?:wdtmp|wdstage|wdold)-(?P<pid>\d+)-[0-9a-f]+\Z", re.DOTALL)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def resolve_output(path: Path, shown: str | None = None) -> Path:
    """`path` with its links resolved, for comparing an output with the inputs.

    Raises:
        OutputError: `path` is a loop of symbolic links (pathlib raises RuntimeError, or OSError on newer Pythons,
            which was an unexpected error line).
    """
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:
        raise OutputError(f"output is a symbolic link that does not resolve ({exc}); choose another path",
                          path=shown or str(path)) from exc


def is_one_of(path: Path, others: list[Path]) -> bool:
    """Whether `path` is, by device and inode, one of `others`: the same file under another path (a bind mount of
    its folder, a hard link), which comparing resolved paths does not see. False where `path` does not exist."""
    try:
        mine = os.stat(path)
    except OSError:
        return False
    for other in others:
        try:
            found = os.stat(other)
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (mine.st_dev, mine.st_ino):
            return True
    return False


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (directories: so that a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def named(dest: Path) -> Path:
    """`dest` with a last component to name siblings after: `.`, `..` (and `a/..`) made absolute and normal.

    The temp file or staging folder is a sibling of `dest`: `Path(".").with_name(...)` raises, and a sibling of
    `..` named relatively lies in the current folder, inside `..`, so carrying the earlier files over copied the
    staging folder into itself.

    Example:
        >>> named(Path("out")), named(Path("/a/b/..")), named(Path("/a/b"))
        (PosixPath('out'), PosixPath('/a'), PosixPath('/a/b'))
    """
    return Path(os.path.abspath(dest)) if dest.name in ("", "..") else dest


# A file name's limit in bytes (NAME_MAX on Linux and macOS), and what a sibling adds to the name it stands for:
# the dot, the longest mark, a pid of up to 7 digits (Linux's pid_max), a dash and 8 hex digits.
_NAME_MAX = 255
_SIBLING_EXTRA = 1 + len(STAGE_MARK) + 7 + 1 + 8


def _sibling_stem(name: str) -> str:
    """What a sibling's name holds of `name`: all of it, or, where the sibling's name would pass NAME_MAX (an output
    named with some 232 to 255 bytes, legal itself, failed with "File name too long" about the temporary), a shortened
    prefix and a hash of the whole name, so that the stale siblings of one destination are still told apart.

    Example:
        >>> _sibling_stem("model.safetensors"), len(_sibling_stem("x" * 250).encode())
        ('model.safetensors', 229)
    """
    encoded = os.fsencode(name)
    if len(encoded) + _SIBLING_EXTRA <= _NAME_MAX:
        return name
    digest = "~" + hashlib.sha256(encoded).hexdigest()[:8]
    stem = name
    while len(os.fsencode(stem + digest)) + _SIBLING_EXTRA > _NAME_MAX:
        stem = stem[:-1]
    return stem + digest


def _sibling(dest: Path, mark: str) -> Path:
    return dest.with_name(f".{_sibling_stem(dest.name)}{mark}{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_siblings(dest: Path) -> list[Path]:
    """The temp files and staging folders for `dest` left behind by runs that were killed: only siblings named by
    this module for this exact destination, whose process no longer runs."""
    try:
        items = list(dest.parent.iterdir())
    except OSError:
        return []  # no folder there (or a name of 256 bytes on the way): nothing was left in it
    found: list[Path] = []
    for item in items:
        match = _SIBLING_RE.match(item.name)
        if match and match.group("name") == _sibling_stem(dest.name) and not _pid_alive(int(match.group("pid"))):
            found.append(item)
    return found


def remove_stale_siblings(dest: Path) -> list[Path]:
    """Remove what `stale_siblings` finds."""
    removed = stale_siblings(dest)
    for item in removed:
        remove_path(item)
    return removed


def remove_path(path: Path) -> None:
    """Remove a file or folder if it exists (never follows a symlink into its target)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except FileNotFoundError:
        pass


_WRITE_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (disk quota or file-size limit reached)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "the output folder does not exist",
    errno.ENOTDIR: "a part of the output's path is a file, not a folder",
    errno.ENAMETOOLONG: "a name on the output's path is too long (255 bytes at most)",
    errno.EBUSY: "device or resource busy (a mount point, which cannot be replaced, or a file in use)",
}


def output_error(exc: OSError, path: Path) -> OutputError:
    """An OSError met while writing, as one line that says what happened (disk full, read-only, ...)."""
    reason = _WRITE_REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    if exc.errno == errno.ENAMETOOLONG:
        from weightdoctor.paths import too_long

        # A path past PATH_MAX whose every name is short was said to hold a name "too long (255 bytes at most)".
        reason = too_long(os.path.abspath(path)) or reason
    if exc.errno == errno.ENOENT and str(path.parent) not in ("", ".") and not path.parent.exists():
        # `-o newdir/` for one file: the folder is not made (as `cp` does not make it); say which, and how.
        from weightdoctor.paths import shell_word

        make = shell_word(str(path.parent), argument=True)
        reason = f"the output folder does not exist (create it first: mkdir -p {make})"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR) and (dangling := _dangling_link_reason(path)) is not None:
        # A folder output (`StagingDir`) meets the link as ENOTDIR, said "a part of the output's path is a file".
        reason = dangling
    if exc.errno in (errno.EPERM, errno.EACCES):
        reason += _unwritable_folder(path)
    if exc.errno == errno.ENOMEM:
        # Memory (a map of the bytes being copied or compared), not the output, was refused: "cannot write the
        # output: Cannot allocate memory" sent the reader to the disk.
        reason = f"the system refused the memory to copy or verify it (Cannot allocate memory){_limits_set()}"
    return OutputError(f"cannot write the output: {reason}; nothing was left behind", path=str(path))


def _dangling_link_reason(path: Path) -> str | None:
    """Why `path` cannot be written where a folder above it is a link to nothing, with the folder to make; None
    where none is, or where the links lead back to themselves (no folder to make ends that)."""
    if (link := _dangling_link_above(path)) is None:
        return None
    from weightdoctor.paths import shell_word

    # `mkdir -p` stops at a link to nothing ("File exists"), so the folder to make is the one at the end of the
    # links: realpath follows a link to a link (`mkdir -p` of the next link failed the same way) and resolves the
    # link's own folder's links as the system does (joining its text to the link's folder by hand did not).
    target = os.path.realpath(link)
    if os.path.lexists(target):  # a loop: realpath stops at a link
        return None
    # With the folders between the link and the output (`-o link/x/out.bin`): a file's folder is not made.
    below = os.path.relpath(os.path.abspath(path.parent), link)
    make = target if below == "." else os.path.join(target, below)
    return (f"the output folder is under {link}, a link to {target}, which does not exist (create it first: "
            f"mkdir -p {shell_word(make, argument=True)})")


def first_existing(folder: Path, *, stop_at_links: bool = False) -> Path:
    """The first of `folder` and the folders above it that exists (or, with `stop_at_links`, is a link to nothing,
    where `mkdir -p` stops), walked as the kernel walks the path: not made absolute first, which undoes `..`
    lexically. `-o missing/../out` is reached through `missing`, which is not there, and `-o link/../out` lands beside
    the link's target; both were looked for beside `link` and `missing`, where the write never goes.

    Example:
        >>> first_existing(Path("/nonexistent/a/b"))
        PosixPath('/')
    """
    for candidate in (folder, *folder.parents):
        if os.path.exists(candidate) or stop_at_links and os.path.islink(candidate):
            return candidate
    return candidate


def shown_folder(folder: Path) -> Path:
    """`folder` absolute, for a message: its links followed where it holds `..`, which `abspath` would undo past a
    link or a missing folder, so that the folder named is the one the kernel reached."""
    return Path(os.path.realpath(folder) if ".." in folder.parts else os.path.abspath(folder))


def _dangling_link_above(path: Path) -> str | None:
    """The nearest folder above `path` that is a symbolic link to nothing, or None: the first name up the path that
    is there at all (a folder or a link) decides."""
    for parent in Path(os.path.abspath(path)).parents:
        if os.path.lexists(parent):
            return str(parent) if os.path.islink(parent) and not os.path.exists(parent) else None
    return None


def _limits_set() -> str:
    """`: this process's data limit, ulimit -d, is set` (the limits of this process a private map counts against,
    where set), or "" where none is."""
    from weightdoctor.checkpoint.safetensors_format import private_map_limits

    limits = private_map_limits()
    return f": {' and '.join(limits)}, {'are' if len(limits) > 1 else 'is'} set" if limits else ""


def _unwritable_folder(path: Path) -> str:
    """`: the folder /x is immutable (chattr +i)` (or not writable) for the folder a new output would be made in:
    "operation not permitted" alone did not say which folder (the working directory, for `-o out`) or why."""
    # `-o a/b/out`: the first folder that exists is the one the rest is made in (os.path.exists: Path.exists raised
    # PermissionError for a folder inside one that cannot be entered, and the line became "permission denied:
    # [Errno 13] ...", of that folder, as if the message had not been written).
    folder = shown_folder(first_existing(path.parent))
    words = _flag_words(folder)
    if words is None and os.geteuid() != 0 and not os.access(folder, os.X_OK):
        return f": the folder {folder} cannot be entered (no search permission)"
    if words is None and os.geteuid() != 0 and not os.access(folder, os.W_OK | os.X_OK):
        words = "not writable"
    return f": the folder {folder} is {words}" if words else ""


def report_error(exc: OSError) -> OutputError:
    """An OSError met while writing the report to stdout (`> /dev/full`, a full disk, `ulimit -f`), as one line
    that names stdout, and the outputs already committed whole: it said "cannot read or write: [Errno 28] No space
    left on device", which named no file, and after convert or shard read as if their output had failed too."""
    reason = _WRITE_REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    done = f"; {', '.join(map(str, COMMITTED))} was written whole" if COMMITTED else ""
    return OutputError(f"cannot write the report: {reason}{done}", path="stdout")


# Linux inode flags (FS_IOC_GETFLAGS): an immutable or append-only file or folder cannot be renamed or deleted, even
# by root; chattr sets them, lsattr shows them.
_FS_IOC_GETFLAGS = 0x80086601
_FLAGS = ((0x00000010, "immutable (chattr +i)"), (0x00000020, "append-only (chattr +a)"))


def _inode_flags(path: Path) -> int:
    """The inode flags of `path` (0 where the system or the file system does not say)."""
    import array
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return 0
    try:
        buffer = array.array("l", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buffer, True)
        return int(buffer[0])
    except OSError:
        return 0
    finally:
        os.close(fd)


def _flag_words(path: Path) -> str | None:
    flags = _inode_flags(path)
    return next((words for bit, words in _FLAGS if flags & bit), None)


def _mount_points() -> list[Path] | None:
    """Every mount point this process sees (/proc/self/mountinfo's fifth field, its octal escapes undone); None where
    the system does not say (no /proc: macOS). `os.path.ismount` compares devices, and a bind mount of a folder of
    the same file system is on the same device: it is not seen that way."""
    try:
        lines = Path("/proc/self/mountinfo").read_bytes().splitlines()
    except OSError:
        return None
    unescape = re.compile(rb"\\([0-7]{3})")
    points = []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            points.append(Path(os.fsdecode(unescape.sub(lambda m: bytes([int(m[1], 8)]), fields[4]))))
    return points


def is_mount(path: Path) -> bool:
    """Whether `path` is a mount point, a bind mount of a folder of the same file system included (which
    `os.path.ismount`, comparing devices, does not see: swapping it failed with "Device or resource busy")."""
    if os.path.ismount(path):
        return True
    points = _mount_points()
    return points is not None and Path(os.path.realpath(path)) in points


def mount_inside(path: Path) -> Path | None:
    """The first mount point inside the folder `path` (not `path` itself), a bind mount included, without looking
    into it; None for none, or for what is no folder.

    Example:
        >>> mount_inside(Path("/nonexistent")) is None
        True
    """
    if not path.is_dir() or path.is_symlink():
        return None
    points = _mount_points()
    if points is not None:
        real = Path(os.path.realpath(path))
        # A mount listed under a folder since covered by another mount (a file system mounted over the output's
        # parent) is not in the output: its path there is none, and --force was refused for a mount point that the
        # message named and `ls` did not show. A mount point that is seen always has a path.
        inside = sorted(point for point in points if real in point.parents and os.path.lexists(point))
        return path / inside[0].relative_to(real) if inside else None
    for root, names, _ in os.walk(path):
        for name in names:
            if os.path.ismount(Path(root) / name):
                return Path(root) / name
    return None


def removal_blocker(path: Path) -> str | None:
    """Why `path` (a file, or a folder with everything in it) cannot be renamed or deleted, as words for a
    message; None when nothing is seen to stop it (writing may still fail, with its own error).

    A replaced output is renamed (a file) or swapped and then deleted (a folder): an immutable file in an earlier
    save left the staging folder, holding that save, behind, hidden, after a --force that said all was replaced.
    """
    if path.is_dir() and not path.is_symlink() and is_mount(path):
        return f"{path} is a mount point, which cannot be renamed: write into a folder inside it"
    if path.is_file() and not path.is_symlink() and is_mount(path):
        return f"{path} is a mount point (a file mounted there), which cannot be replaced: choose another path"
    if (mounted := mount_inside(path)) is not None:
        # Carried over, its files were copied (no hard link crosses a mount), and then deleted with the earlier save:
        # a bind mount of the input folder in the output left the input empty, and the staging folder behind.
        return (f"{mounted} is a mount point inside it, whose files would be deleted with the earlier save: unmount "
                "it, or write elsewhere")
    folders = [path.parent]
    if path.is_dir() and not path.is_symlink():
        folders += [Path(root) / name for root, names, _ in os.walk(path) for name in names]
        folders.insert(1, path)
    for folder in folders:
        words = _flag_words(folder)
        if words is not None:
            return f"the folder {folder} is {words}: nothing in it can be renamed or deleted"
        if os.geteuid() != 0 and not os.access(folder, os.W_OK | os.X_OK):
            return f"the folder {folder} is not writable: nothing in it can be renamed or deleted"
    entries = [path]
    if path.is_dir() and not path.is_symlink():
        entries += [Path(root) / name for root, _, names in os.walk(path) for name in names]
    for entry in entries:
        words = None if entry.is_symlink() else _flag_words(entry)
        if words is not None:
            return f"{entry} is {words}: it cannot be renamed or deleted"
    return None


def replace_error(exc: OSError | None, dest: Path, blocker: str | None) -> OutputError:
    """Why an existing output could not be replaced, as one line that says it was left as it was."""
    why = blocker or (output_error(exc, dest).message if exc is not None else "it cannot be replaced")
    why = why.removeprefix("cannot write the output: ").removesuffix("; nothing was left behind")
    return OutputError(f"cannot replace the existing output: {why}; it was left as it is, and nothing was left "
                       "behind", path=str(dest))


@contextlib.contextmanager
def atomic_file(dest: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temp sibling of `dest` to write; on normal exit it is fsynced and renamed to `dest`.

    Any exception (or Ctrl-C) removes the temp file and leaves `dest` as it was.

    Example:
        >>> with atomic_file(Path("out/model.safetensors")) as tmp:  # doctest: +SKIP
        ...     tmp.write_bytes(data)

    Raises:
        OutputError: `dest` exists and `replace` is False, or the file cannot be written.
    """
    dest = named(dest)
    refuse_existing_file(dest, replace=replace)
    try:
        remove_stale_siblings(dest)
    except OSError as exc:  # a name of 256 bytes on the way (exists() lets ENAMETOOLONG through)
        raise output_error(exc, dest) from exc
    tmp = _sibling(dest, TEMP_MARK)
    try:
        try:
            try:
                yield tmp
            except OutputError as err:
                # The temp file beside an existing output could not be made: an immutable or read-only folder,
                # which also keeps the output from being replaced; said so, not only "operation not permitted".
                cause = err.__cause__
                if replace and isinstance(cause, OSError) and cause.errno in (errno.EPERM, errno.EACCES) and \
                        (dest.exists() or dest.is_symlink()) and (blocker := removal_blocker(dest)) is not None:
                    raise replace_error(cause, dest, blocker) from cause
                raise
            fsync_path(tmp)
            from weightdoctor.writers import hooks

            hooks.reached("before-rename")
            if replace:
                try:
                    os.replace(tmp, dest)
                except OSError as exc:
                    if not (dest.exists() or dest.is_symlink()):
                        raise
                    raise replace_error(exc, dest, removal_blocker(dest)) from exc
            else:
                _place_new(tmp, dest)
            COMMITTED.append(dest)
            fsync_path(dest.parent)
        except OSError as exc:
            raise output_error(exc, dest) from exc
    finally:
        remove_path(tmp)


def refuse_existing_file(dest: Path, *, replace: bool) -> None:
    """Refuse what `atomic_file` will not write over: a device, folder or link to one (never), any existing
    output unless `replace` (--force), or one that cannot be replaced (`removal_blocker`: an immutable file, a file
    mounted there). Checked before anything is written, and by `--dry-run` (`write_refusal`).

    Raises:
        OutputError: naming `dest` and what is there.
    """
    try:
        # What --force never replaces (a device, a folder) is said first: "pass --force" would not help there.
        refuse_special(dest)
        exists = dest.exists() or dest.is_symlink()
        if exists and not replace:
            raise OutputError("output exists; pass --force to replace it", path=str(dest))
        # What keeps the file from being replaced (chattr +i, a file mounted there) is said before the whole output
        # is written beside it, as a folder's is: `--force` onto an immutable file wrote it all, then failed its
        # rename, and `--dry-run` said the write would go ahead.
        blocker = removal_blocker(dest) if exists else None
    except OSError as exc:  # a name of 256 bytes on the way (exists() lets ENAMETOOLONG through)
        raise output_error(exc, dest) from exc
    if blocker is not None:
        raise replace_error(None, dest, blocker)
    if not exists:
        refuse_locked_folder(dest, folder=False)


def refuse_locked_folder(dest: Path, *, folder: bool) -> None:
    """Refuse a new output where its folder's inode flags stop it: an append-only folder (chattr +a) takes the
    temporary file or staging folder but lets it be neither renamed into place nor removed, and an immutable one
    (chattr +i) takes nothing. Into an append-only folder `convert` wrote the file, then failed removing its
    temporary ("permission denied: [Errno 1] ...", exit 2, the temporary left beside the output), and `shard` left
    its staging folder of whole shards behind, saying "nothing was left behind"; `--dry-run` said both would go ahead.

    Raises:
        OutputError: naming `dest` and the folder.
    """
    made_in = first_existing(dest.parent, stop_at_links=folder)
    if not os.path.isdir(made_in) or made_in != dest.parent and not folder:
        return  # a file where a folder must be, or a file's folder missing: the write says so itself
    words = _flag_words(made_in)
    if words is None:
        return
    if words.startswith("immutable"):
        raise output_error(OSError(errno.EPERM, os.strerror(errno.EPERM)), dest)
    if made_in == dest.parent:  # folders this run makes below an append-only one are not append-only
        raise OutputError(f"cannot write the output: the folder {shown_folder(made_in)} is {words}: what is written "
                          "in it can be neither renamed into place nor removed; nothing was left behind",
                          path=str(dest))


def refuse_existing_folder(dest: Path, *, replace: bool) -> bool:
    """Refuse what `StagingDir` will not swap a folder in for: an existing file or device (never), an existing
    folder unless `replace` (--force), or one whose files cannot be removed. Checked before anything is written,
    and by `--dry-run` (`write_refusal`). Returns whether `dest` exists (to be replaced).

    Raises:
        OutputError: naming `dest` and what is there.
    """
    try:
        exists = dest.exists() or dest.is_symlink()
    except OSError as exc:  # a name of 256 bytes on the way (exists() lets ENAMETOOLONG through)
        raise output_error(exc, dest) from exc
    if not exists:
        refuse_locked_folder(dest, folder=True)
        return False
    # A file (or a device) is never replaced by a folder, --force or not: said before "pass --force".
    if not dest.is_dir():
        raise OutputError("output exists and is not a folder", path=str(dest))
    if not replace:
        raise OutputError(f"output exists; pass --force to replace it, or choose a new path"
                          f"{_folder_contents(dest)}", path=str(dest))
    # Said before anything is written (and checked again before the swap): what is carried over is copied
    # first, a mounted folder's files whole.
    if (blocker := removal_blocker(dest)) is not None:
        raise replace_error(None, dest, blocker)
    return True


def write_refusal(dest: Path, *, folder: bool, replace: bool) -> str | None:
    """Why a write to `dest` would be refused before anything is written, as the one line the write would print
    (`PATH: why`), or None when it would go ahead: what `--dry-run` says in place of writing.

    Example:
        >>> write_refusal(Path("/tmp"), folder=False, replace=True)
        '/tmp: output exists and is a folder; give a file name'
    """
    dest = named(dest)
    if folder:
        with contextlib.suppress(OSError):
            if dest.is_symlink() and dest.is_dir():
                dest = Path(os.path.realpath(dest))  # as `StagingDir` writes into the folder a link names
    try:
        (refuse_existing_folder if folder else refuse_existing_file)(dest, replace=replace)
    except OutputError as err:
        return _as_foreseen(err)
    # Where the output (a file, or a folder's staging sibling) is made: a single file's folder must exist (it is not
    # made, as `cp` does not make it), and the first folder that exists must take new entries.
    # A folder's missing parents are made (`StagingDir`), which stops at a link to nothing as at a file.
    parent = dest.parent
    existing = first_existing(parent, stop_at_links=folder)
    if not os.path.isdir(existing):
        # `-o notes.txt/out`: the write meets a file where a folder must be (ENOTDIR, exit 2); the dry run said the
        # write would go ahead (a folder) or that the folder "does not exist" (a file), which creating it cannot fix.
        return _as_foreseen(output_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), dest))
    if not folder and existing != parent:
        return _as_foreseen(output_error(OSError(errno.ENOENT, os.strerror(errno.ENOENT)), dest))
    if not os.access(existing, os.W_OK | os.X_OK):
        # access() says no for a read-only mount as for a permission, root included: the dry run said "permission
        # denied" where the write says "read-only file system", which no chmod or sudo changes.
        code = errno.EROFS if _read_only_mount(existing) else errno.EACCES
        return _as_foreseen(output_error(OSError(code, os.strerror(code)), dest))
    return None


def _read_only_mount(folder: Path) -> bool:
    """Whether `folder` is on a file system mounted read-only (statvfs's ST_RDONLY)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _as_foreseen(err: OutputError) -> str:
    """The line a write refused with, for a write that has not happened: without "nothing was left behind"."""
    # `replace_error` ends ", and nothing was left behind", `output_error` "; nothing was left behind".
    return err.one_line().removesuffix("; nothing was left behind").removesuffix(", and nothing was left behind")


def refuse_special(dest: Path) -> None:
    """Refuse to replace anything but a file or a link: `--force` replaces an earlier output, never a device,
    FIFO or socket (`-o /dev/null --force` as root would otherwise put a regular file in /dev/null's place)."""
    try:
        mode = os.lstat(dest).st_mode
    except OSError:
        return  # nothing there (or nothing we may look at: writing fails with its own message)
    if stat.S_ISDIR(mode):
        raise OutputError("output exists and is a folder; give a file name", path=str(dest))
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OutputError("output exists and is not a regular file (a device, FIFO or socket); it is never replaced",
                          path=str(dest))
    if stat.S_ISLNK(mode):
        # `--force` replaces a link itself, not what it points to: `-o /dev/stdout --force` (as root) put a regular
        # file in the place of the system's `/dev/stdout -> /proc/self/fd/1`. A link to a device, FIFO or socket,
        # or into /proc (whatever fd 1 is at the moment), is refused as the device itself is.
        try:
            target_mode = os.stat(dest).st_mode
            into_proc = os.readlink(dest).startswith("/proc/")
        except OSError:
            return  # a dangling link (or a loop): nothing of the system's is behind it
        if stat.S_ISDIR(target_mode):
            # As a folder is: `-o link-to-runs --force` put a file in the link's place, where `cp` and `mv` write
            # into the folder it names; which of the two the user meant is theirs to say.
            raise OutputError(f"output exists and is a link to a folder ({os.readlink(dest)}); give a file name, "
                              "in it or elsewhere", path=str(dest))
        if into_proc or not (stat.S_ISREG(target_mode) or stat.S_ISDIR(target_mode)):
            raise OutputError("output exists and is a link to a device, FIFO, socket or /proc (such as /dev/stdout); "
                              "it is never replaced", path=str(dest))


# Outputs committed in this process: a Ctrl-C that lands after the commit can then say they are complete.
COMMITTED: list[Path] = []

APPEARED = "output appeared while this one was written (another run?); it was left as it is: pass --force to replace it"


def _place_new(tmp: Path, dest: Path) -> None:
    """Give `tmp` the name `dest` only if nothing has it: a hard link is created or fails atomically, where a
    rename would silently replace what a concurrent run wrote since the check at the start."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise OutputError(APPEARED, path=str(dest)) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        # A file system without hard links: the check and the rename are as close together as can be.
        if dest.exists() or dest.is_symlink():
            raise OutputError(APPEARED, path=str(dest)) from None
        os.replace(tmp, dest)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where the system lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _link_tree(src: Path, dst: Path) -> None:
    """Recreate `src` under `dst` with hard links (no data copied); falls back to copies across devices."""
    if src.is_dir() and not src.is_symlink():
        dst.mkdir()
        for item in src.iterdir():
            _link_tree(item, dst / item.name)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def _folder_contents(folder: Path) -> str:
    """`: it is a folder holding config.json, model.safetensors, ...`, or "" for what is no readable folder: an
    existing output is most often another model's folder, which its file names show before --force is typed."""
    try:
        if not folder.is_dir() or folder.is_symlink():
            return ""
        # scandir's is_dir reads the entry's type from the listing: an output named at a folder of 100,000s of
        # files (a dataset's) is not stat()ed file by file for the five names shown.
        with os.scandir(folder) as entries:
            names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in entries)
    except OSError:
        return ""
    if not names:
        return ": it is an empty folder"
    return f": it is a folder holding {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"


# The data room held back, while a folder is staged, for removing it: reading a folder to remove it takes memory
# (glibc's opendir buffer of 32 KiB, the entries), which a data limit's room spent by the failed run refused
# (ENOMEM, which rmtree ignores), and the unfinished output stayed beside the destination (mem8: shard under
# `ulimit -d` with 9 MiB of room, its verification's scan of the stage refused).
_REMOVAL_RESERVE = 256 << 10


def _removal_reserve() -> mmap.mmap | None:
    """`_REMOVAL_RESERVE` bytes of private writable memory (counted against `ulimit -d` and `ulimit -v`, never
    touched, so no RAM), or None where even that is refused."""
    try:
        return mmap.mmap(-1, _REMOVAL_RESERVE, flags=mmap.MAP_PRIVATE)
    except (OSError, ValueError, AttributeError):  # AttributeError: no MAP_PRIVATE (Windows)
        return None


class StagingDir:
    """A staging folder beside a destination folder, swapped in whole by `commit`.

    Example:
        >>> with StagingDir(Path("out"), replace=True, drop_old=is_old_weight_file) as stage:  # doctest: +SKIP
        ...     write_shards(stage.path)
        ...     stage.commit()

    Files of an existing destination that `drop_old(name)` does not claim (a README, training logs) are
    carried over by hard links; the rest of the earlier save is deleted only after the swap.
    """

    def __init__(self, dest: Path, *, replace: bool = False, drop_old: object = None) -> None:
        dest = named(dest)
        with contextlib.suppress(OSError):
            if dest.is_symlink() and dest.is_dir():
                # `-o ~/llama` where ~/llama links to a folder on a larger disk: the new save goes into that folder,
                # as `cp -r` writes into it. Swapped for the link, it landed on the link's disk (the earlier files
                # copied over, across devices), the link was gone and the target kept the old weights.
                dest = Path(os.path.realpath(dest))
        self.dest = dest
        self.replace = replace
        self.drop_old = drop_old
        self.path = _sibling(dest, STAGE_MARK)
        self.carried: list[str] = []
        self.dropped: list[str] = []
        self.committed = False
        # Folders above `dest` that this run made (deepest first): removed again when nothing is committed, so that
        # a write that fails (a cast that would overflow, a full disk, Ctrl-C) leaves no empty `a/b/` behind.
        self._made: list[Path] = []
        self._reserve: mmap.mmap | None = None  # `_removal_reserve`, held while the folder is staged

    def __enter__(self) -> StagingDir:
        self._reserve = _removal_reserve()
        try:
            remove_stale_siblings(self.dest)
        except OSError as exc:  # a name of 256 bytes on the way (exists() lets ENAMETOOLONG through)
            raise output_error(exc, self.dest) from exc
        exists = refuse_existing_folder(self.dest, replace=self.replace)
        for parent in (self.dest.parent, *self.dest.parent.parents):
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    # mkdir(parents=True) said "File exists" of it, which did not say which or why.
                    raise output_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), self.dest)
                break
            self._made.append(parent)
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self.path.mkdir()
        except OSError as exc:
            self._remove_made()
            if exists:  # the new folder is built beside the old one, in its parent
                raise replace_error(exc, self.dest, removal_blocker(self.dest)) from exc
            raise output_error(exc, self.dest) from exc
        return self

    def _remove_stage(self) -> None:
        """Remove the staging folder, with the memory held for it given back first."""
        if self._reserve is not None:
            self._reserve.close()
            self._reserve = None
        remove_path(self.path)

    def _remove_made(self) -> None:
        """Remove the folders above `dest` that this run made, as long as they are empty."""
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                break

    def commit(self) -> None:
        """fsync every staged file, carry unrelated files of the old destination over, and swap."""
        from weightdoctor.writers import hooks

        try:
            for root, _folders, names in os.walk(self.path):
                for name in names:
                    fsync_path(Path(root) / name)
                if root != str(self.path):
                    fsync_path(Path(root))
            if not self.replace and (self.dest.exists() or self.dest.is_symlink()):
                raise OutputError(APPEARED, path=str(self.dest))
            if self.replace and self.dest.is_dir():
                for item in sorted(self.dest.iterdir()):
                    if (self.path / item.name).exists() or (callable(self.drop_old) and self.drop_old(item.name)):
                        self.dropped.append(item.name)
                        continue
                    _link_tree(item, self.path / item.name)
                    self.carried.append(item.name)
            fsync_path(self.path)
            if self.replace and self.dest.is_dir():
                # After the swap the earlier save is deleted: what cannot be would stay, hidden, in the staging folder.
                blocker = removal_blocker(self.dest)
                if blocker is not None:
                    raise replace_error(None, self.dest, blocker)
            hooks.reached("before-swap")
            if self.replace and self.dest.is_dir():
                if not _exchange(self.path, self.dest):
                    # No atomic exchange here: move the old folder aside first (nothing is deleted yet).
                    old = _sibling(self.dest, OLD_MARK)
                    os.rename(self.dest, old)
                    os.rename(self.path, self.dest)
                    os.rename(old, self.path)
            else:
                try:
                    os.rename(self.path, self.dest)  # fails if a folder with content took the name meanwhile
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                        raise OutputError(APPEARED, path=str(self.dest)) from None
                    raise
            COMMITTED.append(self.dest)
            fsync_path(self.dest.parent)
            self.committed = True
            hooks.reached("after-swap")
        except OSError as exc:
            raise output_error(exc, self.dest) from exc
        finally:
            # After a swap self.path holds the earlier save; before it, the unfinished new one.
            self._remove_stage()

    def __exit__(self, *exc: object) -> None:
        self._remove_stage()
        if not self.committed:
            self._remove_made()
