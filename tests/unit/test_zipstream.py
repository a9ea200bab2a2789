"""The streaming ZIP writer: readable by zipfile and unzip, entries in chunks, ZIP64
end records past 65,535 entries, constant memory for the central directory."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from results_store.zipstream import ZipStream


def build(entries: dict[str, list[bytes]], when: datetime | None = None) -> bytes:
    archive = ZipStream()
    out = bytearray()
    for name, chunks in entries.items():
        out += archive.begin(name, when)
        for chunk in chunks:
            out += archive.write(chunk)
        out += archive.end()
    for piece in archive.finish():
        out += piece
    assert archive.offset == len(out)
    return bytes(out)


def test_entries_in_chunks_read_back() -> None:
    noise = os.urandom(300_000)
    when = datetime(2024, 5, 17, 13, 45, 30, tzinfo=UTC)
    data = build({"study_result_1/comp_result_1/data.txt": [b'{"a": 1}'],
                  "study_result_1/comp_result_1/files/noise.bin": [noise[:100], noise[100:]],
                  "empty.txt": [], "ünïcode/名前.txt": [b"x" * 10_000]}, when)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert archive.read("study_result_1/comp_result_1/data.txt") == b'{"a": 1}'
    assert archive.read("study_result_1/comp_result_1/files/noise.bin") == noise
    assert archive.read("empty.txt") == b""
    assert archive.read("ünïcode/名前.txt") == b"x" * 10_000
    info = archive.getinfo("empty.txt")
    assert info.date_time == (2024, 5, 17, 13, 45, 30)
    assert info.compress_type == zipfile.ZIP_DEFLATED


def test_empty_archive() -> None:
    archive = zipfile.ZipFile(io.BytesIO(build({})))
    assert archive.namelist() == []


def test_more_than_65535_entries_use_zip64_end_records() -> None:
    count = 70_000
    stream = ZipStream(compresslevel=1)
    out = bytearray()
    for i in range(count):
        out += stream.entry(f"r{i}/data.txt", str(i).encode())
    for piece in stream.finish():
        out += piece
    archive = zipfile.ZipFile(io.BytesIO(bytes(out)))
    names = archive.namelist()
    assert len(names) == count and archive.read("r69999/data.txt") == b"69999"


@pytest.mark.skipif(shutil.which("unzip") is None, reason="no unzip on PATH")
def test_unzip_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "results.zip"
    path.write_bytes(build({"a/data.txt": [b"hello\n"], "a/files/b.bin": [os.urandom(5000)]}))
    done = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and "No errors detected" in done.stdout


def test_misuse_is_refused() -> None:
    stream = ZipStream()
    with pytest.raises(RuntimeError):
        stream.write(b"x")
    stream.begin("a")
    with pytest.raises(RuntimeError):
        stream.begin("b")
    with pytest.raises(RuntimeError):
        list(stream.finish())
