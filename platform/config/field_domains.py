"""The values a numeric config field may take: ranges, list lengths, and their messages.

Each dataclass of config/schema.py lists its numeric fields in a `DOMAINS` table beside the fields;
the converter checks every value against it as the YAML is parsed, so `validate` refuses a NaN or
negative learning rate, a zero gradient accumulation or a one-element `betas` instead of the
optimizer failing inside a Ray worker. tests/test_config_domains.py requires that every numeric field
of the schema has an entry. A domain applies to a number, to each item of a list and to each value of
a mapping of numbers (loss weights), so `Range(low=1)` also reads right for `[min, max]` pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from audiostyle.platform.core.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """low <= value <= high (either end optional; `*_open` excludes that end); finite unless allowed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True
    why: str = ""  # what the bound means, appended to the message

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"within {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number"

    def contains(self, value: float) -> bool:
        if math.isnan(value) or (self.finite and math.isinf(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.check(item, f"{path}.{i}")
            return
        if isinstance(value, dict):
            for key, item in value.items():
                self.check(item, f"{path}.{key}")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return  # None (an optional field left unset) or a type the converter already refused
        if not self.contains(value):
            shown = "NaN" if math.isnan(value) else repr(value)
            why = f" ({self.why})" if self.why else ""
            raise ConfigError(f"must be {self.describe()}{why}, got {shown}", path=path)


@dataclass(frozen=True)
class Items:
    """A list of exactly `length` items, each in `item`."""

    length: int
    item: Range
    why: str = ""

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, (list, tuple)) and len(value) != self.length:
            why = f" ({self.why})" if self.why else ""
            raise ConfigError(f"must hold exactly {self.length} numbers{why}, got {len(value)}: {list(value)}",
                              path=path)
        self.item.check(value, path)


Domain = Range | Items

POSITIVE = Range(low=0, low_open=True)
NON_NEGATIVE = Range(low=0)
AT_LEAST_ONE = Range(low=1)
UNIT_INTERVAL = Range(low=0, high=1)
SEED = Range(low=0, why="a seed is a non-negative integer")


def check_domains(obj: Any, domains: dict[str, Domain], path: str) -> None:
    """Check each field of `obj` named in `domains` (path: the dotted path of `obj`)."""
    for name, domain in domains.items():
        domain.check(getattr(obj, name), f"{path}.{name}" if path else name)


def worker_range(num_workers: int | list[int] | tuple[int, int], path: str = "scaling.num_workers") -> tuple[int, int]:
    """(min, max) of a worker count N or an elastic range [min, max] (scaling.num_workers, --workers):
    a group that shrinks to what is left (>= min) when a node is lost and grows back to max."""
    if isinstance(num_workers, int) and not isinstance(num_workers, bool):
        low = high = num_workers
    elif (isinstance(num_workers, (list, tuple)) and len(num_workers) == 2
          and all(isinstance(n, int) and not isinstance(n, bool) for n in num_workers)):
        low, high = num_workers
    else:
        raise ConfigError(f"expected a worker count N or a range [min, max], got {num_workers!r}", path=path)
    if low < 1 or high < low:
        raise ConfigError(f"workers must satisfy 1 <= min <= max, got {num_workers}", path=path,
                          hint="e.g. num_workers: 4 (fixed) or num_workers: [2, 4] (elastic)")
    return low, high
