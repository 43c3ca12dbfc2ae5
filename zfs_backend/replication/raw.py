"""Raw sends of encrypted datasets (``replicate --raw``, API ``raw=True``): ``zfs send -w``.

The blocks cross the wire as they are on the source's disk, still encrypted: the key never leaves the
source (it need not even be loaded there), the destination receives an encrypted replica whose key is
not loaded (``keystatus=unavailable``) and that nobody there can read until someone loads the same key
(``zfs load-key``, e.g. after a failover). Nothing in the request can carry a key or a key option: the
receive is the one every replication uses.

Refused before anything changes, each with one line naming why:

* the source cannot send raw (its dialect has no ``send -w``: zfs-fuse has no encryption at all);
* the source dataset is not encrypted (``encryption=off``): a raw stream of it would be a plain stream
  that only looks protected; replicate it without ``--raw``;
* the destination cannot receive a raw stream (it reported no ``send -w`` in ``begin``: a ``zfs``
  without encryption).

Checked on the source before the destination is asked anything (:func:`check_raw_source`), and against
the destination's report from ``begin`` (:func:`raw_flags`, which gives the stream's flags: ``-w``
alone, since it implies ``-L -c -e``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import UnsupportedFeature, UsageError
from ..zfs.api import Zfs
from ..zfs.names import DatasetName

__all__ = ["check_raw_source", "raw_flags"]

#: ``encryption`` values of a dataset that is not encrypted (``-``: the property is unknown there)
_PLAIN = frozenset({"off", "-", ""})


def check_raw_source(zfs: Zfs, dataset: DatasetName, node: str) -> str:
    """The source ``dataset``'s encryption (e.g. ``aes-256-gcm``) when it may be sent raw; else raises
    (see the module doc). Reads one property; changes nothing."""
    if not zfs.dialect.send_raw:
        raise UnsupportedFeature(
            f"--raw: {node} ({zfs.dialect}) cannot send raw (no zfs send -w, no encryption); "
            "replicate without --raw"
        )
    enc = zfs.get(dataset, ["encryption"]).get("encryption", "-").strip()
    if enc in _PLAIN:
        raise UsageError(
            f"--raw is for encrypted datasets: {node}:{dataset} is not encrypted (encryption={enc or '-'}); "
            "replicate it without --raw"
        )
    return enc


def raw_flags(destination_stream: Mapping[str, Any], destination: str) -> dict[str, bool]:
    """The stream's flags for a raw send (``-w``, the others implied), if the destination reported
    it can receive one (``send_raw`` in its ``begin``); else raises, naming it."""
    if not destination_stream.get("send_raw"):
        raise UnsupportedFeature(
            f"--raw: {destination} cannot receive a raw (encrypted) stream (no zfs send -w there)"
        )
    return {"raw": True, "large_blocks": False, "compressed": False, "embedded": False}
