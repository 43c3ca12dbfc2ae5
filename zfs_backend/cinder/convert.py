"""What crosses between Cinder and the core driver (:mod:`zfs_backend.cinder.driver`): Cinder's volume and
snapshot objects as the driver's dataclasses (a volume's storage by its ``name_id``), a new volume's
``replication_status``, and this project's errors as the exceptions Cinder's volume manager expects. The
backend's options are :mod:`.options`. Needs the ``cinder`` package, as the adapter does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cinder import exception  # type: ignore[import-not-found]
from cinder.volume import volume_utils  # type: ignore[import-not-found]

from ..driver import Snapshot, Volume, VolumeBusy
from ..errors import ConfigError, ZfsBackendError

__all__ = [
    "attachments",
    "cinder_errors",
    "loaded",
    "replication_update",
    "snapshot",
    "storage_id",
    "volume",
]


def loaded(obj: Any, name: str) -> Any:
    """``obj.name`` if it is loaded, else None: reading an unset field of a Cinder object would try a
    lazy load from the database (an error for plain columns)."""
    is_set = getattr(obj, "obj_attr_is_set", None)
    if is_set is not None and not is_set(name):
        return None
    return getattr(obj, name, None)


def storage_id(v: Any) -> str:
    """The id the volume's storage is named after: Cinder's ``name_id`` (another volume's id after a
    migration swapped them; ``volume.name`` is ``volume-<name_id>``), else ``id``."""
    if hasattr(v, "obj_attr_is_set"):
        return str(loaded(v, "_name_id") or v.id)
    return str(getattr(v, "name_id", None) or v.id)


def attachments(v: Any) -> list[Any]:
    """Cinder's attachments of volume ``v`` (``volume_attachment``, loaded from the database when the
    object does not hold them yet; none when it cannot be)."""
    try:
        return list(getattr(v, "volume_attachment", None) or [])
    except Exception:  # an object without a context cannot lazy-load: nothing known, nothing shared
        return []


def volume(v: Any) -> Volume:
    return Volume(
        id=storage_id(v),
        size=int(v.size),
        display_name=loaded(v, "display_name"),
        replication_status=loaded(v, "replication_status"),
    )


def replication_update(volume: Any, targets: tuple[str, ...]) -> dict[str, str]:
    """The new volume's ``replication_status`` when its type asks for replication
    (``replication_enabled='<is> True'``): ``enabled`` on a backend with ``replication_device`` entries,
    as replication v2.1 drivers report it (Cinder's API leaves it unset or ``disabled``); ``{}`` else."""
    vtype = loaded(volume, "volume_type")
    specs = (getattr(vtype, "extra_specs", None) or {}) if vtype is not None else {}
    if not targets or not volume_utils.is_replicated_spec(specs):
        return {}
    return {"replication_status": "enabled"}


def snapshot(s: Any) -> Snapshot:
    source = getattr(s, "volume", None)  # cinder's Snapshot lazy-loads its volume
    volume_id = storage_id(source) if source is not None else str(s.volume_id)
    return Snapshot(id=str(s.id), volume_id=volume_id, volume_size=int(s.volume_size))


@contextmanager
def cinder_errors(what: str, busy: Callable[..., Exception] | None = None) -> Iterator[None]:
    """This project's errors as the Cinder exceptions its volume manager expects."""
    try:
        yield
    except VolumeBusy as e:
        if busy is None:
            raise exception.VolumeBackendAPIException(data=f"{what}: {e}") from e
        raise busy(message=f"{what}: {e}") from e
    except ConfigError as e:
        raise exception.VolumeDriverException(message=f"{what}: {e}") from e
    except ZfsBackendError as e:
        raise exception.VolumeBackendAPIException(data=f"{what}: {e}") from e
