"""The cluster API that :class:`hub.Hub` and :class:`hub.HubClient` share, by composition.

::

    Hub ─────┐                       ┌─ Children   start/stop children (spec writes, waits)
             ├─ ClusterApi ─ Cluster ┼─ Calls      call/cast, local or over RPC, retried
    HubClient┘  (facade)     (+ lookups) └─ Moves  pin/move/drain
                               │
                    Connection (store, registry, informer, batcher, RPC client)
                    Policy     (node or client: can start? placement, local delivery)

``facade`` holds the public, documented methods and only delegates; ``cluster`` and its
parts hold the logic; ``lifecycle`` runs an owner's components and reports a failing one
as :class:`~hub.errors.HubFailed`; ``options`` turns constructor keywords into a config.
"""
