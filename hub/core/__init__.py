"""The node's core: registry, membership, quorum, supervisor, hooks, and the reconciler
with its parts (workqueue, plan, placement_view, executor, replicas, worker_state,
owner_records, claims, outcome)."""
