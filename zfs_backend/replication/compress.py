"""Compression of a replication stream on the wire (``--compress``): the codecs, where their tools are,
and ``pack``, the source side's wrapper.

The stream is compressed after the activity's relay (which counts the stream's own bytes, so progress
and the estimate stay in the stream's unit) and decompressed on the destination by ``peer-exec``
before its checks, so the receiving side sees the same ``zfs send`` stream as without compression:

    zfs send → relay → pack: zstd -1 → ssh DEST "zfs-backend unpack zstd zfs receive …"
                                            → peer-exec: zstd -d → (head check) → zfs receive

Codecs, measured on the 2-core lab machines (256 MiB, one core each; a 100 Mbit/s link moves 12 MiB/s):
zstd level 1 compressed 700 MiB/s of ratio-4 data and 610 MiB/s of random data, lz4 -1 440 and 370,
zstd -3 270 and 210; zstd decompresses at over 3 GiB/s, lz4 at ~950 MiB/s. So one codec: zstd -1.
Both sides run the tool from a fixed list of paths (never ``$PATH``); a node without it says so in its
agent's ``ping`` (``codecs``), and a replication asked to compress towards it is refused before it
starts. The argv of each side is fixed here: nothing of a request reaches a codec's command line.

This module imports only the standard library, and at its top only what ``peer-exec`` needs on every
stream (``os``, ``sys``): ``subprocess`` (~16 ms here) is imported by ``pack`` alone, on the source.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CodecMissing  # re-exported: peer_exec imports it from here

__all__ = [
    "CODECS",
    "available_codecs",
    "check_codec",
    "codec_argv",
    "main",
    "pack_argv",
    "parse_unpack",
    "unpack_argv",
    "validate_codec",
]

#: codec → (compress argv tail, decompress argv tail); the tool is found on ``_PATHS``
CODECS: dict[str, tuple[list[str], list[str]]] = {
    "zstd": (["-1", "-q", "-c"], ["-d", "-q", "-c"]),
}
_PATHS = ("/usr/bin", "/bin", "/usr/local/bin")


def validate_codec(value: object) -> str | None:
    """``None`` (no compression) or a known codec name; anything else raises ``ValueError``."""
    if value is None or value is False:
        return None
    if value is True:
        return "zstd"
    if isinstance(value, str) and value in CODECS:
        return value
    raise ValueError(
        f"compress must be one of {', '.join(sorted(CODECS))} (or none), not {ascii(value)[:40]}"
    )


def _tool(codec: str) -> str:
    for d in _PATHS:
        path = os.path.join(d, codec)
        if os.access(path, os.X_OK):
            return path
    raise CodecMissing(
        f"{codec} is not installed on this node (scripts/bootstrap and the ansible role install it)"
    )


def available_codecs() -> list[str]:
    """The codecs whose tool this node has."""
    out = []
    for codec in sorted(CODECS):
        try:
            _tool(codec)
        except CodecMissing:
            continue
        out.append(codec)
    return out


def codec_argv(codec: str, *, decompress: bool) -> list[str]:
    """The full argv of ``codec``'s tool on this node; raises ``CodecMissing``."""
    return [_tool(codec), *CODECS[codec][1 if decompress else 0]]


def pack_argv(codec: str, argv: Sequence[str]) -> list[str]:
    """The argv that compresses its stdin with ``codec`` into ``argv``'s stdin (the stream's consumer)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}")
    return [sys.executable, "-m", "zfs_backend.replication.compress", codec, "--", *argv]


def unpack_argv(codec: str, receive_argv: Sequence[str]) -> list[str]:
    """The remote command that has the destination's ``peer-exec`` decompress before ``receive_argv``."""
    return ["zfs-backend", "unpack", codec, *receive_argv]


def parse_unpack(words: Sequence[str]) -> tuple[str, list[str]] | None:
    """``zfs-backend unpack CODEC REST…`` → ``(CODEC, REST)``; None when ``words`` is not that shape;
    ``ValueError`` for an unknown codec."""
    if len(words) < 3 or os.path.basename(words[0]) != "zfs-backend" or words[1] != "unpack":
        return None
    if words[2] not in CODECS:
        raise ValueError(f"unknown codec {ascii(words[2])[:40]}")
    return words[2], list(words[3:])


def start_unpack(codec: str) -> int:
    """Make fd 0 the decompressed stream: ``codec -d`` reads the original stdin, and its output becomes
    this process's stdin (what ``zfs receive``, or ``peer-exec``'s head check, reads). Started with
    ``fork``/``execv`` as ``peer-exec`` starts ``zfs receive`` (no ``subprocess`` on that path). Returns
    the decompressor's pid; raises ``CodecMissing``."""
    argv = codec_argv(codec, decompress=True)
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.dup2(w, 1)
            os.close(r)
            os.close(w)
            os.execv(argv[0], argv)  # noqa: S606 - a fixed argv, no shell
        finally:
            os._exit(127)
    os.close(w)
    os.dup2(r, 0)
    os.close(r)
    return pid


def check_codec(codec: str, peer_agent: Callable[[str], Any], destination: str) -> None:
    """Refuse (``UsageError``) before anything starts when this node or ``destination`` lacks ``codec``:
    the destination's agent lists its codecs in ``ping``."""
    from ..errors import UsageError

    try:
        codec_argv(codec, decompress=False)
    except CodecMissing as e:
        raise UsageError(f"cannot compress: {e}") from None
    have = peer_agent(destination).call("ping").get("codecs") or []
    if codec not in have:
        raise UsageError(
            f"cannot compress: {destination} has no {codec} to decompress with (install it there: the "
            "ansible role and scripts/bootstrap do); replicate without --compress"
        )


def pack(codec: str, argv: Sequence[str]) -> int:
    """stdin → ``codec`` → ``argv`` (no shell; both in this process group). The status is ``argv``'s
    when it failed (ssh's says what the peer refused), else the compressor's."""
    import subprocess

    try:
        comp = codec_argv(codec, decompress=False)
    except CodecMissing as e:
        print(f"zfs-backend pack: {e}", file=sys.stderr)
        return 127
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: a 1 MiB pipe between the two
    except OSError:
        pass
    consumer = subprocess.Popen(list(argv), stdin=r, close_fds=True)
    os.close(r)
    compressor = subprocess.Popen(comp, stdout=w, close_fds=True)
    os.close(w)
    crc = compressor.wait()
    rc = consumer.wait()
    return rc if rc != 0 else crc


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zfs_backend.replication.compress CODEC -- ARGV…``"""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] not in CODECS or args[1] != "--":
        print("usage: python -m zfs_backend.replication.compress CODEC -- ARGV...", file=sys.stderr)
        return 2
    return pack(args[0], args[2:])


if __name__ == "__main__":
    raise SystemExit(main())
