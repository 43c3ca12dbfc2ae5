"""zfs_backend.zfs"""
