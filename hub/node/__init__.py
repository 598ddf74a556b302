"""A node's internals: what the Hub wires between its components.

``events`` relays what components report (worker lifecycle, registry changes, lease loss)
to the others; ``delivery`` hands calls to local mailboxes (for local callers and the RPC
server); ``policy`` is the node's answer to the shared API's questions; ``departure``
drains the node and obeys an operator's leave request. None of it is public API.
"""
