"""A small reader for MATLAB v5 ``.mat`` files (numeric arrays and cells), enough for blur-kernel banks.

Avoids a SciPy dependency just to read kernel files.  Format facts used (MathWorks "MAT-File Format"):
128-byte header with an endianness indicator at bytes 126–127; then data elements, each an 8-byte tag
(type, byte count) or a 4-byte "small element" tag with the data packed into the same 8 bytes; elements
are padded to 8 bytes; type 15 (miCOMPRESSED) wraps a zlib stream holding one element; type 14 (miMATRIX)
holds array flags, dimensions, name and then the data (column-major) or, for cells, one miMATRIX per
cell.  MATLAB v7.3 files are HDF5 and are read with ``h5py`` when it is installed.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from diffir.install import pip_extra

_NUMERIC = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_CLASS_CELL, _CLASS_STRUCT, _CLASS_CHAR = 1, 2, 4


class MatFormatError(ValueError):
    pass


def _elements(buf: bytes, endian: str):
    """Yield (type, payload bytes) for each data element in ``buf``."""
    pos = 0
    while pos + 8 <= len(buf):
        first, second = struct.unpack_from(endian + "II", buf, pos)
        if first >> 16:  # small data element: size in the upper half, data in the next 4 bytes
            dtype, nbytes = first & 0xFFFF, first >> 16
            yield dtype, buf[pos + 4 : pos + 4 + nbytes]
            pos += 8
            continue
        dtype, nbytes = first, second
        payload = buf[pos + 8 : pos + 8 + nbytes]
        pos += 8 + nbytes
        if dtype != _MI_COMPRESSED:
            pos += (-nbytes) % 8
        yield dtype, payload


def _parse_matrix(payload: bytes, endian: str) -> tuple[str, Any]:
    parts = list(_elements(payload, endian))
    if len(parts) < 3:
        return "", np.zeros((0, 0))
    flags = struct.unpack_from(endian + "I", parts[0][1])[0]
    mclass = flags & 0xFF
    dims = tuple(np.frombuffer(parts[1][1], dtype=endian + _NUMERIC[parts[1][0]]).astype(int))
    name = parts[2][1].decode("latin-1")
    if mclass == _CLASS_CELL:
        cells = [_parse_matrix(p, endian)[1] for t, p in parts[3:] if t == _MI_MATRIX]
        arr = np.empty(len(cells), dtype=object)
        arr[:] = cells
        return name, arr.reshape(dims, order="F")
    if mclass == _CLASS_STRUCT:
        raise MatFormatError("MATLAB structs are not supported by this reader")
    dtype_code, raw = parts[3]
    if dtype_code not in _NUMERIC:
        raise MatFormatError(f"unsupported MAT data type {dtype_code}")
    data = np.frombuffer(raw, dtype=endian + _NUMERIC[dtype_code])
    if mclass == _CLASS_CHAR:
        return name, "".join(map(chr, data))
    arr = data.astype(np.float64).reshape(dims, order="F")
    if len(parts) > 4 and flags & 0x0800:  # complex flag: imaginary part follows
        imag = np.frombuffer(parts[4][1], dtype=endian + _NUMERIC[parts[4][0]]).reshape(dims, order="F")
        arr = arr + 1j * imag
    return name, arr


def read_mat(path: str | Path) -> dict[str, Any]:
    """Top-level variables of a v5 MAT file (numeric arrays as float64, cells as object arrays)."""
    data = Path(path).read_bytes()
    if data[:4] == b"\x89HDF" or b"MATLAB 7.3" in data[:128]:
        return _read_v73(path)
    if len(data) < 128 or not data.startswith(b"MATLAB"):
        raise MatFormatError(f"{path} is not a MATLAB v5 MAT file")
    endian = "<" if data[126:128] == b"IM" else ">"
    out: dict[str, Any] = {}
    for dtype, payload in _elements(data[128:], endian):
        if dtype == _MI_COMPRESSED:
            dtype, payload = next(_elements(zlib.decompress(payload), endian))
        if dtype == _MI_MATRIX:
            name, value = _parse_matrix(payload, endian)
            out[name] = value
    return out


def _read_v73(path: str | Path) -> dict[str, Any]:
    try:
        import h5py
    except ImportError as exc:
        raise MatFormatError(f"{path} is a MATLAB v7.3 (HDF5) file; install h5py to read it "
                             f"(pip install h5py, or {pip_extra('train')})") from exc

    def convert(f, obj):
        if obj.dtype == object or obj.dtype.kind == "O" or h5py.check_dtype(ref=obj.dtype) is not None:
            refs = obj[()]
            cells = np.empty(refs.shape, dtype=object)
            for idx in np.ndindex(refs.shape):
                cells[idx] = np.asarray(f[refs[idx]][()], dtype=np.float64).T  # HDF5 stores MATLAB arrays transposed
            return cells.T
        return np.asarray(obj[()], dtype=np.float64).T

    with h5py.File(path, "r") as f:
        return {k: convert(f, v) for k, v in f.items() if isinstance(v, h5py.Dataset) and not k.startswith("#")}
