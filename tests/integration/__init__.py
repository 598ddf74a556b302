"""Integration tests against a real etcd."""
