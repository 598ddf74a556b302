"""Operator verbs of the ``processhub`` command: ``ls``, ``nodes``, ``inspect``, ``start``,
``stop``, ``move``, ``drain`` and ``watch``.

Each verb connects to etcd as a :class:`hub.client.HubClient`, does one job, prints the
result (a table, or one JSON document with ``--json``) and exits with a code scripts can
rely on: 0 ok, 1 runtime failure (etcd unreachable or refusing us, timeout), 2 usage or
configuration error, 3 unknown child or node. Errors are one line on stderr (see
:func:`hub.operate.cli.main`); bulk starts and drains show a progress bar on an interactive stderr.

Layout: this module lists the verbs for :func:`hub.operate.cli.main`. The read verbs are
in :mod:`hub.operate.cli_views`, the write verbs in :mod:`hub.operate.cli_actions`, and
what they share (options, connecting, JSON output) in :mod:`hub.operate.cli_verb`.
"""

from __future__ import annotations

from hub.operate.cli_actions import drain_parser, move_parser, start_parser, stop_parser
from hub.operate.cli_verb import Command
from hub.operate.cli_views import (
    LS_COLUMNS,
    NODES_COLUMNS,
    REPLICA_COLUMNS,
    inspect_parser,
    ls_parser,
    nodes_parser,
    watch_parser,
)

__all__ = [
    "LS_COLUMNS",
    "NODES_COLUMNS",
    "REPLICA_COLUMNS",
    "Command",
    "drain_parser",
    "inspect_parser",
    "ls_parser",
    "move_parser",
    "nodes_parser",
    "start_parser",
    "stop_parser",
    "watch_parser",
]
