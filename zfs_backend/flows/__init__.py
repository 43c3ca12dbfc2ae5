"""Workflows over backend activities, built with TaskFlow (tasks with ``execute``/``revert``, flows,
engines, the SQLAlchemy persistence backend, a Redis jobboard and conductors).

Modules: :mod:`.env` (what tasks reach: the volume service, drivers, agents), :mod:`.tasks` (dual
states, capabilities), :mod:`.replicate` (a snapshot to another node: the backend's ``replicate``
activity, or the controller streaming it itself), :mod:`.standby` (a hot standby: create, controlled
and forced failover, remove), :mod:`.persistence` (logbooks), :mod:`.engine` (run, resume),
:mod:`.runs` (a run's outcome; list, show), :mod:`.jobboard` (post to Redis, ``zfs-backend conductor``),
:mod:`.redis_server` (a loopback Redis for the lab and the tests), :mod:`.redis_auth` (the password
every jobboard client reads from its private file). See ``docs/flows.md``.
"""
