"""zfs_backend.replication"""
