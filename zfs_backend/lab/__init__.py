"""zfs_backend.lab"""
