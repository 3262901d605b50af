"""Plugins found through entry points, and their names read without loading any of them.

`PluginRegistry` is the discovery of one entry-point group: every plugin an installed
distribution declares there, plus those registered in this process; a plugin that fails to
import is recorded with its error instead of breaking discovery. Scorers, density allocators
and IMP criteria are such groups (`pai.pruning`). `declared_names` lists a group's names from
the distributions' metadata alone, so the command line checks a name without importing a
plugin (and the torch a plugin imports); `load_declared` loads one entry point of a group, and
`in_process` returns one registered in this process.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, EntryPoints, entry_points
from typing import Any, Generic, TypeVar

from pai.core.errors import PaiError, unknown_name

# The entry-point groups pai reads.
SCORERS = "pai.scorers"
ALLOCATORS = "pai.allocators"
CRITERIA = "pai.criteria"
# A method's options dataclass (`TicketSearch.Options`) under the method's name, in a module
# that imports no torch: the command line makes flags of its fields without loading the method.
OPTIONS = "pai.options"

IN_PROCESS = "in-process"

PluginT = TypeVar("PluginT")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginEntry(Generic[PluginT]):
    """A discovered plugin, or the error that kept it from loading (`plugin` is then None)."""

    name: str
    source: str  # the distribution declaring it, or "in-process"
    plugin: PluginT | None
    error: str | None = None


class PluginRegistry(Generic[PluginT]):
    """The plugins of one kind: those an entry-point group declares, plus in-process ones.

    `group` is the entry-point group scanned (once, until `rescan`); `kind` names the plugin in
    messages; `check` returns a candidate object unchanged if it keeps the kind's protocol and
    raises PaiError otherwise; `entry` builds the entries returned. A plugin that fails to import
    or to pass `check` is recorded with its error instead of breaking discovery, and an
    in-process registration shadows an installed plugin of the same name.
    """

    def __init__(
        self,
        group: str,
        kind: str,
        check: Callable[[Any], PluginT],
        entry: type[PluginEntry[PluginT]] = PluginEntry,
    ):
        self.group = group
        self.kind = kind
        self.check = check
        self.entry = entry
        self._installed: dict[str, PluginEntry[PluginT]] | None = None
        self._in_process: dict[str, PluginEntry[PluginT]] = {}
        _REGISTRIES[group] = self

    def instance(self, obj: Any) -> PluginT:
        """A checked plugin from a class (instantiated without arguments) or an instance."""
        return self.check(obj() if isinstance(obj, type) else obj)

    def _scan(self) -> dict[str, PluginEntry[PluginT]]:
        """Load every entry point of the group, recording import and protocol errors by name."""
        found: dict[str, PluginEntry[PluginT]] = {}
        importlib.invalidate_caches()
        for point in sorted(declared(self.group, fresh=True), key=lambda p: p.name):
            source = point.dist.name if point.dist is not None else "unknown distribution"
            if point.name in found:
                previous = found[point.name].source
                error = f"declared by more than one distribution ({previous} and {source})"
                found[point.name] = self.entry(point.name, f"{previous}, {source}", None, error)
                continue
            try:
                plugin = self.instance(point.load())
                if plugin.name != point.name:
                    raise PaiError(
                        f"entry point {point.name!r} loads a {self.kind} named {plugin.name!r}"
                    )
            except Exception as error:  # a broken plugin must not break discovery
                message = f"{type(error).__name__}: {error}"
                logger.info(
                    "%s plugin %r (%s) failed to load: %s", self.kind, point.name, source, message
                )
                found[point.name] = self.entry(point.name, source, None, message)
            else:
                found[point.name] = self.entry(point.name, source, plugin)
        return found

    def rescan(self) -> None:
        """Forget the cached entry-point scan, so newly installed plugins are found."""
        global _ENTRY_POINTS
        self._installed = None
        _ENTRY_POINTS = None  # `declared_names` reads them again too

    def entries(self) -> list[PluginEntry[PluginT]]:
        """Every discovered plugin, broken ones included, sorted by name."""
        if self._installed is None:
            self._installed = self._scan()
        merged = {**self._installed, **self._in_process}
        return [merged[name] for name in sorted(merged)]

    def available(self) -> list[str]:
        """Names of the plugins that loaded, sorted."""
        return [entry.name for entry in self.entries() if entry.plugin is not None]

    def get(self, name: str) -> PluginT:
        """The plugin called `name`; PaiError listing the registered ones otherwise."""
        entry = {entry.name: entry for entry in self.entries()}.get(name)
        if entry is None:
            raise unknown_name(self.kind, name, self.available())
        if entry.plugin is None:
            raise PaiError(
                f"{self.kind} {name!r} (from {entry.source}) failed to load: {entry.error}"
            )
        return entry.plugin

    def register(self, obj: Any) -> PluginT:
        """Register a plugin class or instance in this process; the checked instance."""
        plugin = self.instance(obj)
        self._in_process[plugin.name] = self.entry(plugin.name, IN_PROCESS, plugin)
        return plugin

    def unregister(self, name: str) -> None:
        """Remove an in-process registration (installed plugins are removed by uninstalling)."""
        if name not in self._in_process:
            raise unknown_name(f"in-process {self.kind}", name, self._in_process)
        del self._in_process[name]


# Every registry created, by group: `declared_names` adds their in-process registrations.
_REGISTRIES: dict[str, PluginRegistry[Any]] = {}
# Every installed entry point, read once (reading them takes milliseconds per read); a
# registry's scan reads them again, so `rescan` finds a plugin installed since.
_ENTRY_POINTS: EntryPoints | None = None


def declared(group: str, *, fresh: bool = False) -> list[EntryPoint]:
    """The entry points of `group` in the installed distributions (read again when `fresh`)."""
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None or fresh:
        _ENTRY_POINTS = entry_points()
    return list(_ENTRY_POINTS.select(group=group))


def declared_names(group: str) -> list[str]:
    """The names an entry-point group declares, with those registered in this process, sorted;
    no plugin is imported (a name whose plugin fails to load is listed)."""
    names = {point.name for point in declared(group)}
    registry = _REGISTRIES.get(group)
    if registry is not None:
        names |= set(registry._in_process)
    return sorted(names)


def in_process(group: str, name: str) -> Any | None:
    """The plugin registered in this process as `name` in `group`, or None (nothing loads)."""
    registry = _REGISTRIES.get(group)
    entry = None if registry is None else registry._in_process.get(name)
    return None if entry is None else entry.plugin


def load_declared(group: str, name: str) -> Any | None:
    """The object entry point `name` of `group` refers to, imported now; None when the group
    declares no such name."""
    points = [point for point in declared(group) if point.name == name]
    if not points:
        return None
    if len(points) > 1:
        sources = ", ".join(sorted(str(p.dist.name if p.dist else "?") for p in points))
        raise PaiError(f"{group} entry point {name!r} is declared more than once ({sources})")
    return points[0].load()
