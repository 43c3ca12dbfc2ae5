"""zfs_backend.driver"""
