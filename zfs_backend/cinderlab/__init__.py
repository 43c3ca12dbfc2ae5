"""A small, real Cinder in front of the lab's nodes (``scripts/cinder-up`` / ``scripts/cinder-down``).

cinder-api (loopback; behind keystone, :mod:`.keystone`, or noauth with ``--auth noauth``),
cinder-scheduler and cinder-volume from the ``cinder`` package in ``.venv-cinder``, Debian's MariaDB (on
a unix socket only) with the schemas ``cinder-manage db sync`` and ``keystone-manage db_sync`` make, and
Debian's RabbitMQ as the oslo.messaging transport, each started without systemd with its own data
directory (RabbitMQ, epmd and keystone on loopback ports). One ``enabled_backends`` section per node of
the inventory, each driven by ``zfs_backend.cinder.ZfsNfsDriver``. Paths and ports: :mod:`.config`;
processes and setup tools' runs: :mod:`.procs`; its API asked as the admin: :mod:`.api`; up/down:
:mod:`.services`; tempest's volume tests against it: :mod:`.tempest`. This package needs no cinder
itself: it runs from the project's ``.venv``.
"""
