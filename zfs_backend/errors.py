"""The exception tree of zfs_backend.

Callers catch types, never match message strings. Every error carries a short,
one-line message fit for a CLI; ``exit_code`` is what the CLI exits with.

    ZfsBackendError                       base; exit 1
    ├── UsageError                        bad input from a user (names, sizes, options); exit 2
    │   ├── InvalidName                   a dataset/snapshot/node/property name failed validation
    │   ├── PeerExecRefused               peer-exec refused a peer node's command; nothing ran
    │   └── VolumeNotFound, VolumeExists, InvalidSize, InvalidClient, InvalidAttachment, VolumeBusy
    ├── UnsafeVolumeFile                  a volume's file is not a regular file; the driver refuses it
    ├── ConfigError                       settings or inventory unreadable or incomplete; exit 3
    ├── LabError                          the simulated lab cannot be brought up / used; exit 4
    │   ├── NotRoot
    │   ├── MissingDependency             a binary or device the lab needs is absent
    │   ├── AddressRangeTaken
    │   ├── UnknownNode                   exit 15
    │   └── NfsError                      a lab NFS client operation failed (mount, open, read, write)
    ├── HostError                         running something on a node failed; exit 5
    │   ├── CommandFailed                 non-zero exit: node, argv, stderr
    │   ├── CommandTimeout
    │   ├── HostUnreachable               cannot connect (network, auth); exit 13
    │   │   └── ForwardRefused            the node's SSH master will not forward its agent's socket
    │   ├── HostKeyMismatch               the node's host key is unknown or changed; exit 14
    │   ├── CodecMissing                  a stream codec's tool (zstd) is not installed on the node
    │   ├── PeerRefused                   a stream's peer refused it (auth, cipher, forced command)
    │   ├── ChannelRefused                a stream's TLS data channel could not be opened or was refused
    │   └── StreamFailed                  a send → receive stream broke, for no more specific reason
    ├── ZfsError                          a zfs/zpool command failed in a known way; exit 6
    │   ├── DatasetNotFound
    │   ├── DatasetExists
    │   ├── DatasetBusy
    │   ├── PoolFull
    │   ├── DatasetHasDependents          children, newer snapshots or clones stand in the way
    │   ├── DestinationModified           incremental recv refused: target changed since its snapshot
    │   ├── StreamMismatch                recv refused: the stream's base is not the target's newest
    │   ├── HoldNotFound                  the snapshot holds no such tag; nothing changed
    │   ├── UnsupportedFeature            the node's ZFS dialect lacks it
    │   └── ParseError                    zfs printed something the parser does not understand
    ├── ActivityError                     exit 7
    │   ├── ActivityNotFound              exit 10
    │   ├── InvalidTransition             illegal state change; nothing changed; exit 11
    │   ├── AgentUnavailable              the node agent is down or unreachable; exit 12
    │   ├── StoreError                    the activity store is unreadable or from a newer schema
    │   ├── ProtocolError                 a malformed agent request or response
    │   └── MigrationFailed               a volume's migration failed or was cancelled; it stayed put
    ├── FlowError                         a workflow failed (and was reverted), or cannot run; exit 9
    │   ├── FlowNotFound                  no flow with that id in the logbook
    │   └── CapabilityMissing             the driver does not publish what the flow needs
    ├── BackupError                       a volume backup or restore refused or failed; exit 16
    │   ├── BackupNotFound                no such backup (or chain) on the backup node
    │   └── BackupCorrupt                 a stream file's checksum does not match its manifest
    └── ReplicationConflict               plan refused; nothing was changed; exit 8
        ├── DestinationDiverged           newer snapshots or changed data on the destination
        ├── NoCommonBase                  no snapshot both sides hold (by GUID)
        ├── DestinationExistsConflict     a full copy into a dataset that exists
        ├── UpToDate                      the destination holds the snapshot already
        ├── InsufficientSpace             the destination lacks the space the estimate needs
        ├── AlreadyRunning                the same replication runs, or another receives into the destination
        └── NotGranted                    a peer asked for work the destination's controller did not grant

The volume driver's errors say what they refuse on their classes (``driver.errors`` re-exports them).
Control flow private to a module (``_Lost``, ``_Permanent``, ``_StreamError``) is not part of the tree.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ActivityError",
    "ActivityNotFound",
    "AddressRangeTaken",
    "AgentUnavailable",
    "AlreadyRunning",
    "BackupCorrupt",
    "BackupError",
    "BackupNotFound",
    "CapabilityMissing",
    "ChannelRefused",
    "CodecMissing",
    "CommandFailed",
    "CommandTimeout",
    "ConfigError",
    "DatasetBusy",
    "DatasetExists",
    "DatasetHasDependents",
    "DatasetNotFound",
    "DestinationDiverged",
    "DestinationExistsConflict",
    "DestinationModified",
    "FlowError",
    "FlowNotFound",
    "ForwardRefused",
    "HoldNotFound",
    "HostError",
    "HostKeyMismatch",
    "HostUnreachable",
    "InsufficientSpace",
    "InvalidAttachment",
    "InvalidClient",
    "InvalidName",
    "InvalidSize",
    "InvalidTransition",
    "LabError",
    "MigrationFailed",
    "MissingDependency",
    "NfsError",
    "NoCommonBase",
    "NotGranted",
    "NotRoot",
    "ParseError",
    "PeerExecRefused",
    "PeerRefused",
    "PoolFull",
    "ProtocolError",
    "ReplicationConflict",
    "StoreError",
    "StreamFailed",
    "StreamMismatch",
    "UnknownNode",
    "UnsafeVolumeFile",
    "UnsupportedFeature",
    "UpToDate",
    "UsageError",
    "VolumeBusy",
    "VolumeExists",
    "VolumeNotFound",
    "ZfsBackendError",
    "ZfsError",
]


class ZfsBackendError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class UsageError(ZfsBackendError):
    exit_code = 2


class InvalidName(UsageError):
    """A name failed validation before reaching any command line."""


class PeerExecRefused(UsageError):
    """peer-exec (a node key's forced command) refused a peer node's command: not what a node key may
    run, not admitted by this node's agent, or a stream it will not receive. Nothing ran."""


class VolumeNotFound(UsageError):
    """No volume (or snapshot) by that name or id."""


class VolumeExists(UsageError):
    """A volume (or snapshot) of that name already exists."""


class InvalidSize(UsageError):
    """Size 0, negative, not an integer, or an extend that does not grow."""


class VolumeBusy(UsageError):
    """Refused: the volume has snapshots, dependent clones, or is attached."""


class InvalidClient(UsageError):
    """A connector without a valid ``ip``, or a client address that is not one host address
    (nothing is granted or revoked)."""


class InvalidAttachment(UsageError):
    """An attachment id that is not one, or one already attached from another client."""


class UnsafeVolumeFile(ZfsBackendError):
    """A volume's ``volume`` is not a regular file (a link, FIFO, device a client planted): the
    driver's root file operations refuse to touch it."""


class ConfigError(ZfsBackendError):
    exit_code = 3


class LabError(ZfsBackendError):
    exit_code = 4


class NotRoot(LabError):
    pass


class MissingDependency(LabError):
    pass


class AddressRangeTaken(LabError):
    pass


class UnknownNode(LabError):
    exit_code = 15


class NfsError(LabError):
    """An NFS client operation of the lab failed (mount, open, read, write)."""


class HostError(ZfsBackendError):
    exit_code = 5


def _one_line(text: str, limit: int = 400) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    out = " | ".join(lines)
    return out if len(out) <= limit else out[: limit - 1] + "…"


class CommandFailed(HostError):
    """A command exited non-zero. Carries the node, the argv, the exit code and stderr."""

    def __init__(self, node: str, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.node = node
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        msg = f"{node}: `{' '.join(self.argv)}` exited {returncode}"
        if stderr.strip():
            msg += f": {_one_line(stderr)}"
        super().__init__(msg)


class CommandTimeout(HostError):
    def __init__(self, node: str, argv: Sequence[str], timeout: float) -> None:
        self.node = node
        self.argv = list(argv)
        self.timeout = timeout
        super().__init__(f"{node}: `{' '.join(self.argv)}` timed out after {timeout:g} s")


class HostUnreachable(HostError):
    exit_code = 13


class HostKeyMismatch(HostError):
    exit_code = 14


class CodecMissing(HostError):
    """A stream codec's tool is not installed on this node."""


class PeerRefused(HostError):
    """The peer a stream goes to refused it: authentication, no common cipher, or its narrow key's
    forced command said no. Retrying cannot help."""


class ForwardRefused(HostUnreachable):
    """The node's SSH master is up but will not forward its agent's unix socket (e.g. sshd's
    ``AllowStreamLocalForwarding no``): the agent is reached through a command instead."""


class ChannelRefused(HostError):
    """A stream's TLS data channel could not be opened, or either end refused it (one line)."""


class StreamFailed(HostError):
    """A send → receive stream ended early or a side of it exited non-zero, for no reason a more
    specific error names (a cut link, a killed process): another attempt may succeed."""


class ZfsError(ZfsBackendError):
    exit_code = 6


class DatasetNotFound(ZfsError):
    pass


class DatasetExists(ZfsError):
    pass


class DatasetBusy(ZfsError):
    pass


class HoldNotFound(ZfsError):
    """``zfs release``: the snapshot holds no such tag (already released); nothing changed."""


class PoolFull(ZfsError):
    pass


class DatasetHasDependents(ZfsError):
    """Refused without -r/-R: children, more recent snapshots or dependent clones exist."""


class DestinationModified(ZfsError):
    """An incremental receive found the target changed since its most recent snapshot."""


class StreamMismatch(ZfsError):
    """A receive refused an incremental stream: its source is not the destination's newest snapshot."""


class UnsupportedFeature(ZfsError):
    pass


class ParseError(ZfsError):
    """zfs printed something this parser does not understand."""


class ActivityError(ZfsBackendError):
    exit_code = 7


class ActivityNotFound(ActivityError):
    exit_code = 10


class InvalidTransition(ActivityError):
    exit_code = 11


class AgentUnavailable(ActivityError):
    exit_code = 12


class StoreError(ActivityError):
    pass


class ProtocolError(ActivityError):
    pass


class MigrationFailed(ActivityError):
    """The migration activity did not succeed (failed or cancelled); the volume stayed where it was."""


class FlowError(ZfsBackendError):
    exit_code = 9


class FlowNotFound(FlowError):
    pass


class CapabilityMissing(FlowError):
    """The driver of a node does not publish a capability the flow needs."""


class ReplicationConflict(ZfsBackendError):
    exit_code = 8


class DestinationDiverged(ReplicationConflict):
    """The destination has snapshots newer than the common base, or changed data after it."""


class NoCommonBase(ReplicationConflict):
    """The destination exists but shares no usable snapshot (by GUID) with the source."""


class DestinationExistsConflict(ReplicationConflict):
    """A full copy was asked for, but the destination dataset exists."""


class UpToDate(ReplicationConflict):
    """The destination already holds the snapshot (same GUID)."""


class InsufficientSpace(ReplicationConflict):
    """The destination pool lacks the space the size estimate needs."""


class AlreadyRunning(ReplicationConflict):
    """The same replication is running, or another one is receiving into the same destination."""


class BackupError(ZfsBackendError):
    exit_code = 16


class BackupNotFound(BackupError):
    """No such backup, or a chain with a missing link, on the backup node."""


class BackupCorrupt(BackupError):
    """A backup stream file does not match the size and SHA-256 its manifest records."""


class NotGranted(ReplicationConflict):
    """A peer node asked for work no grant of the controller covers (no grant, another peer's, expired,
    outside the node's replica roots, or an operation the grant does not allow). Nothing was changed."""
