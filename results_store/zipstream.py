"""A ZIP writer that streams: every call returns the bytes to send next.

Unlike ``zipfile`` it keeps nothing per entry in memory: entries are written with
a data descriptor (sizes and CRC after the data, so the data can be produced in
chunks), and the central directory records go to a spooled temporary file (1 MiB
in memory, then disk) until ``finish``. ZIP64 end records are written when the
archive has more than 65,535 entries or passes 4 GiB; a single entry must stay
under 4 GiB (result data and files are far smaller).

    zs = ZipStream()
    out = zs.begin("a/data.txt", mtime)
    out += zs.write(b"...")
    out += zs.end()
    ...
    for piece in zs.finish(): ...
"""

from __future__ import annotations

import struct
import tempfile
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime

LIMIT_32 = 0xFFFFFFFF
LIMIT_16 = 0xFFFF
FLAGS = 0x08 | 0x800          # sizes in a data descriptor; names are UTF-8
VERSION_MADE_BY = (3 << 8) | 45   # Unix, spec 4.5
MODE = 0o100644 << 16          # a regular file, rw-r--r--
COPY_CHUNK = 1024 * 1024


def _dos_time(moment: datetime | None) -> tuple[int, int]:
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    if moment.year < 1980:
        return 0, (0 << 9) | (1 << 5) | 1
    if moment.year > 2107:
        moment = moment.replace(year=2107)
    time = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    date = ((moment.year - 1980) << 9) | (moment.month << 5) | moment.day
    return time, date


class ZipStream:
    def __init__(self, compresslevel: int = 6) -> None:
        self.compresslevel = compresslevel
        self.offset = 0
        self.entries = 0
        self._central = tempfile.SpooledTemporaryFile(max_size=COPY_CHUNK)
        self._current: tuple[bytes, int, int, int] | None = None  # name, time, date, offset
        self._compressor: zlib._Compress | None = None
        self._crc = 0
        self._size = 0
        self._compressed = 0
        self.finished = False

    def _out(self, data: bytes) -> bytes:
        self.offset += len(data)
        return data

    def begin(self, name: str, mtime: datetime | None = None) -> bytes:
        """Start an entry (deflated); answer its local header."""
        if self._current is not None or self.finished:
            raise RuntimeError("end the current entry first")
        name = name.lstrip("/")
        encoded = name.encode("utf-8")
        if len(encoded) > LIMIT_16:
            raise ValueError("entry name too long")
        time, date = _dos_time(mtime)
        self._current = (encoded, time, date, self.offset)
        self._compressor = zlib.compressobj(self.compresslevel, zlib.DEFLATED, -15)
        self._crc = 0
        self._size = 0
        self._compressed = 0
        header = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, FLAGS, 8, time, date, 0, 0, 0,
                             len(encoded), 0) + encoded
        return self._out(header)

    def write(self, data: bytes) -> bytes:
        """Add data to the current entry; answer the compressed bytes ready so far."""
        if self._compressor is None:
            raise RuntimeError("begin an entry first")
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        out = self._compressor.compress(data)
        self._compressed += len(out)
        return self._out(out)

    def end(self) -> bytes:
        """Finish the current entry; answer its last compressed bytes and data descriptor."""
        if self._current is None or self._compressor is None:
            raise RuntimeError("no entry to end")
        tail = self._compressor.flush()
        self._compressed += len(tail)
        if self._size >= LIMIT_32 or self._compressed >= LIMIT_32:
            raise ValueError("a zip entry of 4 GiB or more is not supported")
        descriptor = struct.pack("<IIII", 0x08074B50, self._crc, self._compressed, self._size)
        name, time, date, offset = self._current
        extra = b""
        header_offset = offset
        if offset >= LIMIT_32:
            extra = struct.pack("<HHQ", 0x0001, 8, offset)
            header_offset = LIMIT_32
        self._central.write(struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, VERSION_MADE_BY, 45 if extra else 20, FLAGS, 8,
            time, date, self._crc, self._compressed, self._size, len(name), len(extra), 0, 0, 0,
            MODE, header_offset) + name + extra)
        self.entries += 1
        self._current = None
        self._compressor = None
        return self._out(tail + descriptor)

    def entry(self, name: str, data: bytes, mtime: datetime | None = None) -> bytes:
        """A whole entry at once."""
        return self.begin(name, mtime) + self.write(data) + self.end()

    def finish(self) -> Iterator[bytes]:
        """The central directory and end records, in pieces."""
        if self._current is not None:
            raise RuntimeError("end the current entry first")
        self.finished = True
        start = self.offset
        self._central.seek(0)
        while piece := self._central.read(COPY_CHUNK):
            yield self._out(piece)
        self._central.close()
        size = self.offset - start
        zip64 = self.entries > LIMIT_16 or start >= LIMIT_32 or size >= LIMIT_32
        if zip64:
            record_at = self.offset
            yield self._out(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, VERSION_MADE_BY, 45, 0, 0,
                                        self.entries, self.entries, size, start))
            yield self._out(struct.pack("<IIQI", 0x07064B50, 0, record_at, 1))
        yield self._out(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(self.entries, LIMIT_16),
                                    min(self.entries, LIMIT_16), min(size, LIMIT_32),
                                    min(start, LIMIT_32), 0))
