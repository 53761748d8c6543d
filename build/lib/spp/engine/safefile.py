"""Creating and opening files in shared places (``/tmp``, a capture directory) without being fooled.

SPP's pcap files live at fixed names in ``/tmp`` and the processes often run as root, so anyone
could plant ``/tmp/spp-tx0.pcap -> /etc/shadow`` and have root clobber the target. Every file we
write is therefore created exclusively (``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600 unless said
otherwise): an existing entry is replaced only when it is a regular file of this process's own
user; a symbolic link, a device, a FIFO or someone else's file is refused with a message naming
the path and what is wrong with it. Files we only read may be symbolic links made by our own user
(or root), never links planted by someone else, and must be regular files (a FIFO would block).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

PRIVATE = 0o600

WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFileError(OSError):
    """A path that we refuse to write or read; ``str()`` says which and why."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.strerror = f"{why}"
        self.filename = str(path)


def _owners() -> tuple[int, int]:
    return os.geteuid(), 0


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def create_exclusive(path: str | os.PathLike[str], mode: int = PRIVATE, *, dir_fd: int | None = None) -> int:
    """A new, empty file at ``path`` opened for writing; returns the descriptor.

    An existing regular file of our own user is removed first (SPP overwrote these files); any
    other entry is refused with :class:`UnsafeFileError`. ``path`` is relative to ``dir_fd``
    when given (a directory opened once, so a later swap of its path cannot redirect us).
    """
    try:
        return os.open(path, WRITE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass
    st = os.lstat(path, dir_fd=dir_fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(path, f"exists and is {_kind(st.st_mode)}; refusing to write through it")
    if st.st_uid != os.geteuid():
        raise UnsafeFileError(
            path, f"exists and belongs to uid {st.st_uid}, not to this process's user ({os.geteuid()})"
        )
    os.unlink(path, dir_fd=dir_fd)
    try:
        return os.open(path, WRITE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        raise UnsafeFileError(path, "was re-created by someone else while being replaced") from None


def open_for_reading(path: str | os.PathLike[str]) -> int:
    """A descriptor for reading ``path``: a regular file, reached through no link of a stranger."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in _owners():
            raise UnsafeFileError(path, f"is a symbolic link made by uid {st.st_uid}; refusing to follow it")
    fd = os.open(path, READ_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(path, f"is {_kind(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def link_no_replace(src: str, dst: str, dir_fd: int) -> None:
    """Give the file ``src`` its final name ``dst`` (both in ``dir_fd``) unless ``dst`` exists.

    ``rename`` would silently replace whatever sits at ``dst``; a hard link fails instead
    (FileExistsError). File systems without hard links get a rename after a last look.
    """
    try:
        os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.lstat(dst, dir_fd=dir_fd)
            raise FileExistsError(dst) from None
        os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    os.unlink(src, dir_fd=dir_fd)


def open_append(path: str | os.PathLike[str], mode: int = 0o640) -> int:
    """A log file opened for appending: created if missing, else our own regular file only."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeFileError(path, "is a symbolic link; refusing to write through it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(path, f"is {_kind(st.st_mode)}, not a regular file")
        if st.st_uid != os.geteuid():
            raise UnsafeFileError(path, f"belongs to uid {st.st_uid}, not to this process's user")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_own_directory(path: str | os.PathLike[str]) -> None:
    """``path`` must be a directory (no link) of our own user or root, not writable by others.

    Files we create inside such a directory cannot be replaced by links behind our back.
    """
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFileError(path, f"is {_kind(st.st_mode)}, not a directory")
    if st.st_uid not in _owners():
        raise UnsafeFileError(path, f"belongs to uid {st.st_uid}, not to this process's user")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise UnsafeFileError(path, "is writable by other users")


def open_directory(path: str | os.PathLike[str]) -> int:
    """A descriptor of the directory ``path`` (following links the user gave on purpose)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return fd


__all__ = [
    "PRIVATE",
    "UnsafeFileError",
    "check_own_directory",
    "create_exclusive",
    "link_no_replace",
    "open_append",
    "open_directory",
    "open_for_reading",
]
