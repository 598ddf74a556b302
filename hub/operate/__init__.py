"""Operating a hub: HTTP endpoints, metrics, events, dashboard, CLI, demo, local etcd."""
