"""Reader for the IDX format used by (Fashion-)MNIST, with clear errors for damaged files."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from miascale.errors import MiascaleError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(raw: bytes, name: str) -> np.ndarray:
    """Parse IDX content (already decompressed); ``name`` is used in error messages."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise MiascaleError(f"{name} is not an IDX file (bad magic number); the file is corrupt.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MiascaleError(f"{name} is truncated: its header is incomplete.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise MiascaleError(
            f"{name} is truncated or corrupt: header promises shape {shape} ({expected} bytes) "
            f"but the file holds {len(raw)} bytes. Delete it and fetch the data again."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """Read a (possibly gzipped) IDX file."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise MiascaleError(
            f"Cannot read {path}: {exc}. The file is truncated or corrupt; delete it and fetch the "
            "data again."
        ) from None
    return read_idx_bytes(data, str(path))
