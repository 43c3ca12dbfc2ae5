"""zfs_backend.flows"""
