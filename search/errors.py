"""What `ask` raises when it has nothing to propose."""

from __future__ import annotations

from collections.abc import Sequence


class Exhausted(Exception):
    """Raised by `ask` when a searcher has no configuration left to propose."""


class NothingFits(Exhausted):
    """Raised by a priced `ask` whose pricing budget ran out (or whose searcher ran out of
    configs) before a config fit every bound. Its message names the bounds and the cheapest
    config priced; `refused` holds the refusal records that ask made (they are recorded);
    `spent` whether the ask's pricing budget ran out (another ask may find a fit: its
    refusals taught the searcher); `event` is the ask's replay event when it was made through
    `Searcher.record`."""

    def __init__(self, message: str, refused: Sequence[dict] = (), *, spent: bool = False):
        super().__init__(message)
        self.refused, self.spent = tuple(refused), spent
        self.event: dict | None = None


class Unpriced(Exception):
    """Raised by a price function for a config it cannot price now (a timeout, a lost
    pricer): `search.Price` answers `{}` for it this once (the config is unpriced, so its
    trial measures its costs) and does not cache that, so a later ask prices it again."""
