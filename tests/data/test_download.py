"""Safe tar extraction (no path traversal, no links out, no devices) and the MD5-checked download."""
import hashlib
import io
import os
import tarfile

import pytest

from cifarbench.data.download import download, md5_file, safe_extract
from cifarbench.errors import CifarbenchError


def make_tar(path, members):
    """members: (name, kind, payload) with kind file | dir | sym | hard | chr | fifo."""
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            tar.addfile(info)
    return path


def test_extracts_files_and_folders(tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", [("pkg", "dir", None), ("pkg/a.bin", "file", b"abc"),
                                                ("pkg/sub/b.bin", "file", b"xyz")])
    dest = tmp_path / "dest"
    assert safe_extract(archive, dest) == [dest / "pkg"]
    assert (dest / "pkg" / "a.bin").read_bytes() == b"abc"
    assert (dest / "pkg" / "sub" / "b.bin").read_bytes() == b"xyz"
    assert os.listdir(dest) == ["pkg"]  # the temporary folder is gone


@pytest.mark.parametrize("members, why", [
    ([("pkg/../../evil.txt", "file", b"x")], "'..' in its path"),
    ([("../evil.txt", "file", b"x")], "'..' in its path"),
    ([("/tmp/cifarbench-evil.txt", "file", b"x")], "absolute path"),
    ([("pkg/link", "sym", "../../outside")], "symlink to '../../outside' points outside the folder"),
    ([("pkg/link", "sym", "/etc")], "symlink to '/etc' points outside the folder"),
    ([("pkg/hard", "hard", "../x")], "hardlink to '../x' points outside the folder"),
    ([("pkg/tty", "chr", None)], "device or FIFO file"),
    ([("pkg/pipe", "fifo", None)], "device or FIFO file"),
])
def test_refuses_dangerous_members_and_leaves_nothing(tmp_path, members, why):
    # a good file first: a refused archive must not leave it behind either
    archive = make_tar(tmp_path / "bad.tar.gz", [("pkg/good.bin", "file", b"ok")] + members)
    dest = tmp_path / "dest"
    with pytest.raises(CifarbenchError) as e:
        safe_extract(archive, dest)
    assert str(e.value) == f"{archive}: refusing member {members[0][0]!r}: {why}"
    assert os.listdir(dest) == []
    assert not (tmp_path / "evil.txt").exists() and not os.path.exists("/tmp/cifarbench-evil.txt")


def test_links_inside_are_skipped(tmp_path):
    archive = make_tar(tmp_path / "l.tar.gz", [("pkg/a", "file", b"a"), ("pkg/l", "sym", "a"),
                                               ("pkg/h", "hard", "pkg/a")])
    safe_extract(archive, tmp_path / "dest")
    assert sorted(os.listdir(tmp_path / "dest" / "pkg")) == ["a"]


def test_not_a_tar(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(CifarbenchError, match="bad.tar.gz: not a readable tar archive"):
        safe_extract(bad, tmp_path / "dest")


def test_truncated_tar_leaves_nothing(tmp_path):
    archive = make_tar(tmp_path / "t.tar.gz", [("pkg/a", "file", os.urandom(200_000))])
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CifarbenchError, match="not a readable tar archive"):
        safe_extract(archive, tmp_path / "dest")
    assert os.listdir(tmp_path / "dest") == []


def test_existing_target_is_not_overwritten(tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", [("pkg/a", "file", b"new")])
    (tmp_path / "dest" / "pkg").mkdir(parents=True)
    with pytest.raises(CifarbenchError, match="already exists"):
        safe_extract(archive, tmp_path / "dest")


def test_md5_file(tmp_path):
    blob = os.urandom(3_000_000)
    (tmp_path / "f").write_bytes(blob)
    assert md5_file(tmp_path / "f") == hashlib.md5(blob).hexdigest()


def test_download_file_url_and_md5(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    dest = tmp_path / "out" / "x.bin"
    download(src.as_uri(), dest, md5=hashlib.md5(src.read_bytes()).hexdigest())
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(CifarbenchError, match="has MD5 .* expected 0+ .*; deleted it"):
        download(src.as_uri(), tmp_path / "out" / "y.bin", md5="0" * 32)
    assert sorted(os.listdir(tmp_path / "out")) == ["x.bin"]


def test_download_unreachable_is_one_line(tmp_path):
    with pytest.raises(CifarbenchError) as e:
        download("http://127.0.0.1:9/x.tar.gz", tmp_path / "x.tar.gz", timeout=5)
    msg = str(e.value)
    assert msg.startswith("cannot download x.tar.gz from http://127.0.0.1:9/x.tar.gz (")
    assert msg.endswith(f"place x.tar.gz in {tmp_path}") and "\n" not in msg
    assert os.listdir(tmp_path) == []
