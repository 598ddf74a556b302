"""The node's core: registry, membership, quorum, supervisor, hooks, reconciler."""
