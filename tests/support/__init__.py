"""Helpers shared by the processhub test suite.

Import as ``from support.proxy import TcpProxy`` / ``from support.wait import wait_until``:
``tests/`` is put on ``sys.path`` by pytest because ``tests/conftest.py`` lives there.
"""

from .proxy import TcpProxy
from .wait import wait_until, wait_until_sync

__all__ = ["TcpProxy", "wait_until", "wait_until_sync"]
