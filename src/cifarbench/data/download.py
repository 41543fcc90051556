"""Downloading with an MD5 check, and tar extraction that cannot write outside its folder.

Why our own extraction: ``tarfile.extractall`` trusts member names, so a crafted archive can
write anywhere (``../x``, ``/etc/x``, or a symlink to ``/`` followed by a file "inside" it).
Python's extraction filters only exist from 3.11.4/3.12, and we want one clear message naming
the member. Only regular files and folders are extracted; links are skipped (the CIFAR archives
have none) and refused when they point outside; device files and FIFOs are refused.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from cifarbench import log
from cifarbench.errors import CifarbenchError

CHUNK = 1 << 20


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: str | os.PathLike) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None = None, place_hint: str | None = None, timeout: float = 60) -> Path:
    """Fetch ``url`` into ``dest`` through a temporary file in the same folder, checking ``md5``.

    On a network failure raises one ``CifarbenchError`` that says what to place where
    (``place_hint`` overrides the "what"); on an MD5 mismatch deletes the file and raises.
    ``dest`` only appears once it is complete and verified.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    h = hashlib.md5(usedforsecurity=False)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                bar = log.Progress(total // CHUNK + 1, desc=f"download {dest.name}")
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    bar.update()
                bar.close()
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            what = place_hint or dest.name
            raise CifarbenchError(f"cannot download {dest.name} from {url} ({reason}); "
                                  f"place {what} in {dest.parent}") from None
        if md5 is not None and h.hexdigest() != md5:
            raise CifarbenchError(f"downloaded {dest.name} from {url} has MD5 {h.hexdigest()}, expected {md5} "
                                  f"(corrupt or changed download); deleted it")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _link_escapes(member: tarfile.TarInfo) -> bool:
    """True when a symlink or hardlink member points outside the extraction folder."""
    target = member.linkname
    if target.startswith("/") or posixpath.isabs(target):
        return True
    if member.issym():  # relative to the link's own folder; hardlinks are relative to the archive root
        target = posixpath.join(posixpath.dirname(member.name), target)
    target = posixpath.normpath(target)
    return target == ".." or target.startswith("../")


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Raise a CifarbenchError naming ``member`` if extracting it could escape or create a special file."""
    name = member.name
    if name.startswith("/") or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise CifarbenchError(f"{archive}: refusing member {name!r}: absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise CifarbenchError(f"{archive}: refusing member {name!r}: '..' in its path")
    if (member.issym() or member.islnk()) and _link_escapes(member):
        kind = "symlink" if member.issym() else "hardlink"
        raise CifarbenchError(f"{archive}: refusing member {name!r}: {kind} to {member.linkname!r} points outside the folder")
    if member.isdev():  # character / block devices and FIFOs
        raise CifarbenchError(f"{archive}: refusing member {name!r}: device or FIFO file")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract the regular files and folders of a tar archive into ``dest``; returns the top-level paths.

    Extraction goes to a temporary folder inside ``dest`` first and is moved into place only
    when every member passed the checks, so a refused or truncated archive leaves nothing behind.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    check_member(member, archive)
                    target = tmp / member.name
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                    elif member.isfile():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with tar.extractfile(member) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, CHUNK)
                    # links inside the folder: skipped, see the module docstring
        except (tarfile.TarError, EOFError, OSError) as e:
            raise CifarbenchError(f"{archive}: not a readable tar archive ({e})") from None
        tops = []
        for entry in sorted(os.listdir(tmp)):
            final = dest / entry
            if final.exists():
                raise CifarbenchError(f"cannot extract {archive}: {final} already exists")
            os.replace(tmp / entry, final)
            tops.append(final)
        return tops
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
