"""`ConfigError` and the unknown-key check, in a module of their own: what checks a study
(also in a Ray worker, where a study's own trainable is imported) raises it without loading
torch."""

from collections.abc import Mapping

from spaces.util import did_you_mean


class ConfigError(ValueError):
    """A study file that cannot run: the message names the key and what is allowed."""


def check_keys(where: str, given: Mapping, allowed) -> None:
    """Raise `ConfigError` on a key of `given` (a mapping, or that too is an error) that is
    not in `allowed`, with the closest allowed key and the whole list."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(given).__name__}")
    for key in given:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}; "
                f"allowed: {sorted(allowed)}"
            )
