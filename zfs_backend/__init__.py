"""zfs_backend: a reference ZFS/NFS storage backend whose long work runs as backend activities."""

__all__ = ["__version__"]
__version__ = "0.1.0"
