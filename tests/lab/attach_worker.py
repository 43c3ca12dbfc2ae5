"""A controller process of its own attaching and detaching volumes on one node through the driver API,
over its own SSH connection, for the concurrency test (``test_nfs_attachments.py``). Never imported by
pytest. ``python attach_worker.py NODE WORKER ROUNDS SHARED_ID OWN_ID`` (the lab's settings from the
environment); prints ``done`` at the end.

Each round: two attachments of the worker's address on the shared volume (``w<N>-a``, ``w<N>-b``), one
(``r<i>``) on its own volume; ``w<N>-a`` detached at once, ``r<i>`` on odd rounds, ``w<N>-b`` on every
round but the last. What must be left is :func:`expected`."""

from __future__ import annotations

import sys

from zfs_backend.config import load_settings
from zfs_backend.driver import NodeOptions, Volume, ZfsNfsDriver
from zfs_backend.hosts import load_inventory


def address(worker: int) -> str:
    return f"192.0.2.{worker + 1}"  # TEST-NET-1: never a real host, only ever a grant


def expected(workers: int, rounds: int, shared: str, own: list[str]) -> dict[str, list[tuple[str, str]]]:
    out = {f"tank/volumes/volume-{shared}": sorted((f"w{w}-b", address(w)) for w in range(workers))}
    for w in range(workers):
        out[f"tank/volumes/volume-{own[w]}"] = sorted(
            (f"r{i}", address(w)) for i in range(rounds) if not i % 2
        )
    return out


def main() -> int:
    node, worker, rounds, shared, own = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
        sys.argv[5],
    )
    settings = load_settings()
    spec = load_inventory(settings.inventory).node(node)
    d = ZfsNfsDriver(NodeOptions.from_vars(node, spec.vars, spec.address), settings=settings)
    d.do_setup()
    try:
        a, b, me = Volume(id=shared, size=1), Volume(id=own, size=1), address(worker)
        for i in range(rounds):
            d.initialize_connection(a, {"ip": me, "attachment_id": f"w{worker}-a"})
            d.initialize_connection(a, {"ip": me, "attachment_id": f"w{worker}-b"})
            d.initialize_connection(b, {"ip": me, "attachment_id": f"r{i}"})
            assert d.terminate_connection(a, {"ip": me, "attachment_id": f"w{worker}-a"}) is True
            if i % 2:
                d.terminate_connection(b, {"ip": me, "attachment_id": f"r{i}"})
            if i < rounds - 1:
                assert d.terminate_connection(a, {"ip": me, "attachment_id": f"w{worker}-b"}) is False
    finally:
        assert d.host is not None
        d.host.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
