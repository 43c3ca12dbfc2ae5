"""OpenZFS ``receive_resume_token``: decoded, so that a replication resumes only its own stream.

A token is ``<version>-<checksum>-<length>-<hex>``: version 1; ``hex`` is a zlib-compressed packed
nvlist of ``length`` bytes; ``checksum`` is the first word of the Fletcher-4 checksum of the compressed
bytes (``zc_word[0]``: the sum of its 32-bit words, in the writer's byte order). The nvlist names what
``zfs send -t`` will send: ``toguid``/``toname`` (the snapshot), ``fromguid`` (the incremental's base,
absent for a full stream), ``object``/``offset``/``bytes`` (where it stopped), and flags.

The kernel packs it in its native encoding (``NV_ENCODE_NATIVE``, its own byte order: a token
captured on x86 is little-endian, see ``tests/unit/zfs/data``); ``nvlist_unpack`` also reads XDR
(``NV_ENCODE_XDR``, module/nvpair/nvpair.c), and so does this decoder. Only what a resume check needs
is decoded (integers, strings, booleans); other pairs are skipped by their recorded size. Anything
malformed (bad checksum, size, encoding, a pair running off the end) is a ``ParseError``: a token is
input from another node, never trusted. zfs-fuse has no tokens.

``encode_resume_token`` writes the same format (both encodings): the in-memory node model of the tests
and fakes builds tokens with it.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from .parse import ParseError

__all__ = ["ResumeToken", "decode_resume_token", "encode_resume_token"]

TOKEN_VERSION = 1
#: the longest packed nvlist accepted (a real one is a few hundred bytes; this bounds decompression)
MAX_PACKED = 1 << 16
_TOKEN_RE = re.compile(
    rf"([0-9]{{1,3}})-([0-9a-f]{{1,16}})-([0-9a-f]{{1,8}})-((?:[0-9a-f]{{2}}){{1,{MAX_PACKED}}})"
)

# data_type_t (sys/nvpair.h)
_BOOLEAN, _INT32, _UINT32, _INT64, _UINT64, _STRING, _BOOLEAN_VALUE = 1, 5, 6, 7, 8, 9, 21
_ENCODE_NATIVE, _ENCODE_XDR = 0, 1
_MASK64 = (1 << 64) - 1

Value = int | str | bool


@dataclass(frozen=True)
class ResumeToken:
    """What a resume token says ``zfs send -t`` would send."""

    toguid: int
    toname: str
    fromguid: int | None = None
    object: int | None = None
    offset: int | None = None
    bytes: int | None = None
    fields: Mapping[str, Value] = field(default_factory=dict, compare=False, repr=False)


def _bad(why: str) -> ParseError:
    return ParseError(f"invalid receive_resume_token: {why}")


def _fletcher4_word0(data: bytes, order: str) -> int:
    """``zc_word[0]`` of Fletcher-4 over ``data``'s whole 32-bit words (a tail shorter than a word is
    not summed, as in OpenZFS)."""
    n = len(data) // 4
    return sum(struct.unpack(f"{order}{n}I", data[: n * 4])) & _MASK64


# ------------------------------------------------------------------------------------------- decoding


class _Reader:
    def __init__(self, data: bytes, order: str) -> None:
        self.data, self.order, self.pos = data, order, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _bad("the nvlist runs past its end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(self.order + fmt, self.take(struct.calcsize(self.order + fmt)))


def _cstring(raw: bytes) -> str:
    text, nul, _ = raw.partition(b"\0")
    if not nul:
        raise _bad("a string without its terminating NUL")
    try:
        return text.decode()
    except UnicodeDecodeError:
        raise _bad("a string that is not UTF-8") from None


def _native_pairs(data: bytes, order: str) -> dict[str, Value]:
    """``NV_ENCODE_NATIVE``: int32 size, int16 name size, int16 reserved, int32 nelem, int32 type, the
    NUL-terminated name padded to 8, the value; a size of 0 ends the list."""
    r = _Reader(data, order)
    r.take(4 + 8)  # header, nvl_version, nvl_nvflag
    out: dict[str, Value] = {}
    while True:
        start = r.pos
        (size,) = r.unpack("i")
        if size == 0:
            return out
        name_sz, _res, nelem, dtype = r.unpack("hhii")
        if size < 16 or name_sz < 1:
            raise _bad("a pair of impossible size")
        end = start + size
        name = _cstring(r.take((name_sz + 7) & ~7))
        value = _native_value(r, dtype, nelem, end)
        if value is not None:
            out[name] = value
        r.pos = start
        r.take(size)


def _native_value(r: _Reader, dtype: int, nelem: int, end: int) -> Value | None:
    if dtype == _BOOLEAN:
        return True
    if dtype in (_INT64, _UINT64) and nelem == 1:
        return r.unpack("q" if dtype == _INT64 else "Q")[0]
    if dtype in (_INT32, _UINT32, _BOOLEAN_VALUE) and nelem == 1:
        v = r.unpack("i" if dtype != _UINT32 else "I")[0]
        return bool(v) if dtype == _BOOLEAN_VALUE else v
    if dtype == _STRING and nelem == 1:
        return _cstring(r.take(end - r.pos))
    return None  # not needed by a resume check: skipped


def _xdr_pairs(data: bytes) -> dict[str, Value]:
    """``NV_ENCODE_XDR`` (big-endian): int32 encoded size (of the whole pair), int32 decoded size, the
    name as an XDR string (length, bytes padded to 4), int32 type, int32 nelem, the value; two zero
    sizes end the list."""
    r = _Reader(data, ">")
    r.take(4 + 8)
    out: dict[str, Value] = {}
    while True:
        start = r.pos
        enc_size, _dec_size = r.unpack("ii")
        if enc_size == 0:
            return out
        if enc_size < 24:
            raise _bad("a pair of impossible size")
        name = _xdr_string(r)
        dtype, nelem = r.unpack("ii")
        value: Value | None = None
        if dtype == _BOOLEAN:
            value = True
        elif dtype in (_INT64, _UINT64) and nelem == 1:
            value = r.unpack("q" if dtype == _INT64 else "Q")[0]
        elif dtype in (_INT32, _UINT32, _BOOLEAN_VALUE) and nelem == 1:
            v = r.unpack("i" if dtype != _UINT32 else "I")[0]
            value = bool(v) if dtype == _BOOLEAN_VALUE else v
        elif dtype == _STRING and nelem == 1:
            value = _xdr_string(r)
        if value is not None:
            out[name] = value
        r.pos = start
        r.take(enc_size)


def _xdr_string(r: _Reader) -> str:
    (n,) = r.unpack("I")
    raw = r.take((n + 3) & ~3)[:n]
    return _cstring(raw + b"\0")


def decode_resume_token(token: str) -> ResumeToken:
    """The nvlist of ``token``, checked (version, checksum, length, encoding); ``ParseError`` else."""
    m = _TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
    if not m:
        raise _bad("expected <version>-<checksum>-<length>-<hex>")
    version, checksum, length = int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16)
    if version != TOKEN_VERSION:
        raise _bad(f"version {version}, this reads version {TOKEN_VERSION}")
    if not 0 < length <= MAX_PACKED:
        raise _bad(f"packed length {length} out of range")
    compressed = bytes.fromhex(m.group(4))
    if checksum not in (_fletcher4_word0(compressed, "<"), _fletcher4_word0(compressed, ">")):
        raise _bad("checksum mismatch (corrupt or edited)")
    d = zlib.decompressobj()
    try:
        packed = d.decompress(compressed, length + 1)
    except zlib.error:
        raise _bad("not zlib data") from None
    if len(packed) != length or not d.eof:
        raise _bad(f"packed nvlist is not {length} bytes")
    encoding, endian = packed[0], packed[1] if len(packed) > 1 else -1
    if encoding == _ENCODE_XDR:
        nv = _xdr_pairs(packed)
    elif encoding == _ENCODE_NATIVE and endian in (0, 1):
        nv = _native_pairs(packed, "<" if endian == 1 else ">")
    else:
        raise _bad(f"unknown nvlist encoding {encoding}")
    toguid, toname = nv.get("toguid"), nv.get("toname")
    if not isinstance(toguid, int) or isinstance(toguid, bool) or not isinstance(toname, str):
        raise _bad("no toguid/toname")

    def num(key: str) -> int | None:
        v = nv.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    return ResumeToken(
        toguid=toguid,
        toname=toname,
        fromguid=num("fromguid"),
        object=num("object"),
        offset=num("offset"),
        bytes=num("bytes"),
        fields=nv,
    )


# ------------------------------------------------------------------------------------------- encoding


def _pack_native(pairs: Mapping[str, Value], order: str) -> bytes:
    body = bytearray(bytes([_ENCODE_NATIVE, 1 if order == "<" else 0, 0, 0]))
    body += struct.pack(order + "iI", 0, 1)
    for name, value in pairs.items():
        raw_name = name.encode() + b"\0"
        padded = raw_name.ljust((len(raw_name) + 7) & ~7, b"\0")
        if isinstance(value, bool):
            dtype, data = (_BOOLEAN, b"") if value else (_BOOLEAN_VALUE, struct.pack(order + "i", 0) * 2)
        elif isinstance(value, int):
            dtype, data = _UINT64, struct.pack(order + "Q", value)
        else:
            s = value.encode() + b"\0"
            dtype, data = _STRING, s.ljust((len(s) + 7) & ~7, b"\0")
        size = 16 + len(padded) + len(data)
        body += struct.pack(order + "ihhii", size, len(raw_name), 0, 0 if dtype == _BOOLEAN else 1, dtype)
        body += padded + data
    body += struct.pack(order + "i", 0)
    return bytes(body)


def _xdr_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw.ljust((len(raw) + 3) & ~3, b"\0")


def _pack_xdr(pairs: Mapping[str, Value]) -> bytes:
    body = bytearray(bytes([_ENCODE_XDR, 1, 0, 0]))
    body += struct.pack(">iI", 0, 1)
    for name, value in pairs.items():
        if isinstance(value, bool):
            dtype, nelem, data = (_BOOLEAN, 0, b"") if value else (_BOOLEAN_VALUE, 1, struct.pack(">i", 0))
        elif isinstance(value, int):
            dtype, nelem, data = _UINT64, 1, struct.pack(">Q", value)
        else:
            dtype, nelem, data = _STRING, 1, _xdr_str(value)
        tail = _xdr_str(name) + struct.pack(">ii", dtype, nelem) + data
        # decoded size: the native nvpair's (NVP_SIZE_CALC: 16-byte header + name, then the value,
        # each padded to 8)
        value_sz = {_BOOLEAN: 0, _BOOLEAN_VALUE: 4, _UINT64: 8}.get(dtype, len(str(value).encode()) + 1)
        native = ((16 + len(name.encode()) + 1 + 7) & ~7) + ((value_sz + 7) & ~7)
        body += struct.pack(">ii", 8 + len(tail), native) + tail
    body += struct.pack(">ii", 0, 0)
    return bytes(body)


def encode_resume_token(pairs: Mapping[str, Value], *, encoding: str = "native", order: str = "<") -> str:
    """A version-1 token of ``pairs`` (``"native"``: as the kernel writes it, in byte ``order``;
    ``"xdr"``), its checksum in ``order``."""
    packed = _pack_xdr(pairs) if encoding == "xdr" else _pack_native(pairs, order)
    compressed = zlib.compress(packed)
    return f"{TOKEN_VERSION}-{_fletcher4_word0(compressed, order):x}-{len(packed):x}-{compressed.hex()}"
