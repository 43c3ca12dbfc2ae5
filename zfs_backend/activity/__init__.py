"""zfs_backend.activity"""
