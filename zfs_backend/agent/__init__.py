"""zfs_backend.agent"""
