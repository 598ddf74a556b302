"""From the keyword arguments of ``Hub(...)`` and ``HubClient(...)`` to a :class:`HubConfig`.

Both constructors list every option they take as a typed keyword-only parameter, with the
same default as :class:`~hub.config.HubConfig` (a unit test keeps them equal). Options whose
default HubConfig computes (``node_id`` from the host name, the strategies, ``labels``)
default to None there, meaning "HubConfig's default"; :func:`config_from_options` drops
those before :func:`~hub.config.make_config` validates the rest (an invalid value raises
:class:`~hub.errors.ConfigError`).
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.config import HubConfig, make_config

#: Parameters whose None means "HubConfig's computed default" (not "off").
COMPUTED_DEFAULTS = frozenset(
    {"node_id", "distribution", "migration", "partition", "redundancy", "labels"}
)


def config_from_options(hub_id: str, options: Mapping[str, object]) -> HubConfig:
    """The validated config of ``hub_id`` and a constructor's keyword arguments.

    Raises:
        ConfigError: an option is invalid.
    """
    given = {
        name: value
        for name, value in options.items()
        if not (value is None and name in COMPUTED_DEFAULTS)
    }
    return make_config(hub_id, **given)  # type: ignore[arg-type]
