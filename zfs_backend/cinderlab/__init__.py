"""A small, real Cinder in front of the lab's nodes (``scripts/cinder-up`` / ``scripts/cinder-down``).

cinder-api (noauth, loopback), cinder-scheduler and cinder-volume from the ``cinder`` package in
``.venv-cinder``, Debian's MariaDB (on a unix socket only) with the schema ``cinder-manage db sync``
makes, and Debian's RabbitMQ as the oslo.messaging transport, each started without systemd with its own
data directory (RabbitMQ and epmd on loopback ports). One ``enabled_backends`` section per node of the
inventory, each driven by ``zfs_backend.cinder.ZfsNfsDriver``. Paths and ports: :mod:`.config`; processes:
:mod:`.procs`; up/down: :mod:`.services`. This package needs no cinder itself: it runs from the project's
``.venv``.
"""
