"""zfs_backend.cli"""
