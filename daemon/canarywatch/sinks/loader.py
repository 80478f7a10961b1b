"""Find sink plugins (entry-point group ``canarywatch.sinks``), check them, and build the sinks a
configuration names.

Plugins are found through stevedore without ``invoke_on_load``: listing plugins never runs their
constructors, and one broken third-party distribution is reported (``sink_load_failed``, and in
``discover_sinks()``) instead of taking the daemon down. It matters only when the config names
it: then ``receiver_problems`` reports it at that receiver's key and line. Every command that
builds sinks from a config (``run`` and its reloads, ``replay --send``, ``demo --replay``,
``test-sink``) goes through ``build_sinks``, and ``check-config`` through the same
``receiver_problems``, so all of them name the same key path for the same mistake.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
import pydantic
import structlog
from stevedore import ExtensionManager

from canarywatch.config import Config, Loc, UncheckedSecret
from canarywatch.config.validation import describe, format_key_path, key_path
from canarywatch.errors import ConfigError
from canarywatch.logs import get_logger
from canarywatch.sinks.api import API_VERSION, BoundLogger, Sink, SinkLoadError, SinkMemory
from canarywatch.sinks.http import redact_urls
from canarywatch.sinks.text import clean_text

__all__ = [
    "NAMESPACE",
    "PluginInfo",
    "SinkRegistry",
    "build_sink",
    "build_sinks",
    "discover_sinks",
    "inspect_abstract",
    "load_sink_class",
    "receiver_problems",
    "validate_sink_options",
]

NAMESPACE = "canarywatch.sinks"
"""The entry-point group plugins register under (not user-visible; entry-point names are)."""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One entry point of ``canarywatch.sinks``, loaded or not (for ``canarywatch plugins``)."""

    name: str
    """The entry-point name users write in config (``slack``)."""
    target: str
    """Where it points: ``module:attribute``."""
    distribution: str | None
    version: str | None
    ok: bool
    error: str | None = None
    """Why it cannot be used, when ``ok`` is false."""
    api_version: int | None = None
    capabilities: tuple[str, ...] = ()


def _distributions_by_entry_point() -> dict[tuple[str, str], tuple[str, str]]:
    """``(entry-point name, value) -> (distribution, version)`` for our group.

    stevedore's entry-point cache keeps only name/value/group, so the owning distribution is
    looked up here from the installed metadata.
    """
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        for ep in dist.entry_points.select(group=NAMESPACE):
            found.setdefault((ep.name, ep.value), (name, dist.version))
    return found


def _describe_error(exc: BaseException) -> str:
    return redact_urls(clean_text(f"{type(exc).__name__}: {exc}", max_len=500))


class SinkRegistry:
    """The sink plugins of one stevedore ``ExtensionManager``.

    Without a manager it scans the installed entry points (``invoke_on_load=False``); tests pass
    ``ExtensionManager.make_test_instance([...])``. Each plugin is checked for being a ``Sink``
    subclass with a supported ``api_version``; failures are logged once as ``sink_load_failed``
    and kept, so ``load`` can explain them if the plugin is named in config.
    """

    def __init__(
        self,
        manager: ExtensionManager[object] | None = None,
        *,
        log: BoundLogger | None = None,
    ) -> None:
        self._log: BoundLogger = log if log is not None else structlog.get_logger()
        self._log = self._log.bind(component="sinks.loader")
        self._failed: list[tuple[importlib.metadata.EntryPoint, BaseException]] = []
        if manager is None:
            manager = ExtensionManager(
                namespace=NAMESPACE,
                invoke_on_load=False,
                on_load_failure_callback=self._on_load_failure,
            )
        self._manager = manager
        self._classes: dict[str, type[Sink]] = {}
        self._infos: dict[str, PluginInfo] = {}
        self._scan()

    def _on_load_failure(
        self,
        manager: ExtensionManager[object],
        entry_point: importlib.metadata.EntryPoint,
        exc: BaseException,
    ) -> None:
        self._failed.append((entry_point, exc))

    def _scan(self) -> None:
        dists = _distributions_by_entry_point()

        def info(
            ep: importlib.metadata.EntryPoint,
            *,
            ok: bool,
            error: str | None = None,
            api_version: int | None = None,
            capabilities: tuple[str, ...] = (),
        ) -> PluginInfo:
            dist: str | None
            version: str | None
            dist, version = dists.get((ep.name, ep.value), (None, None))
            if dist is None and ep.dist is not None:
                dist, version = ep.dist.metadata["Name"], ep.dist.version
            return PluginInfo(
                name=ep.name,
                target=ep.value,
                distribution=dist,
                version=version,
                ok=ok,
                error=error,
                api_version=api_version,
                capabilities=capabilities,
            )

        for ep, exc in self._failed:
            self._record_failure(info(ep, ok=False, error=_describe_error(exc)))
        for ext in self._manager.extensions:
            plugin = ext.plugin
            if not (isinstance(plugin, type) and issubclass(plugin, Sink)):
                self._record_failure(
                    info(
                        ext.entry_point, ok=False, error="not a subclass of canarywatch.sinks.Sink"
                    )
                )
                continue
            declared = getattr(plugin, "api_version", None)
            if declared != API_VERSION:
                self._record_failure(
                    info(
                        ext.entry_point,
                        ok=False,
                        api_version=declared if isinstance(declared, int) else None,
                        error=(
                            f"api_version {declared!r} is not supported "
                            f"(this canarywatch speaks api_version {API_VERSION})"
                        ),
                    )
                )
                continue
            if inspect_abstract(plugin):
                self._record_failure(
                    info(
                        ext.entry_point,
                        ok=False,
                        api_version=declared,
                        error="abstract methods not implemented: " + inspect_abstract(plugin),
                    )
                )
                continue
            caps = tuple(
                flag
                for flag in ("supports_edit", "supports_threads", "supports_resolve")
                if getattr(plugin, flag, False)
            )
            if ext.name in self._infos:  # first registration wins, as in stevedore's lookup
                continue
            self._classes[ext.name] = plugin
            self._infos[ext.name] = info(
                ext.entry_point, ok=True, api_version=declared, capabilities=caps
            )

    def _record_failure(self, info: PluginInfo) -> None:
        self._log.warning(
            "sink_load_failed",
            sink=info.name,
            target=info.target,
            distribution=info.distribution,
            error=info.error,
        )
        self._infos.setdefault(info.name, info)

    def plugins(self) -> list[PluginInfo]:
        """Every entry point found, sorted by name, with its load result."""
        return [self._infos[k] for k in sorted(self._infos)]

    def names(self) -> list[str]:
        """The names of the sinks that loaded and can be used."""
        return sorted(self._classes)

    def load(self, name: str) -> type[Sink]:
        """The class registered as ``name``; ``SinkLoadError`` explains why not."""
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        info = self._infos.get(name)
        if info is not None:
            raise SinkLoadError(
                f"sink {name!r} ({info.target}, from {info.distribution or 'unknown'}) "
                f"cannot be used: {info.error}"
            )
        known = ", ".join(self.names()) or "none installed"
        raise SinkLoadError(f"unknown sink {name!r}; known sinks: {known}")


def inspect_abstract(cls: type) -> str:
    """Comma-separated abstract methods ``cls`` leaves unimplemented ('' when none)."""
    return ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))


def discover_sinks(*, log: BoundLogger | None = None) -> list[PluginInfo]:
    """All installed sink plugins with distribution, version and load result; never raises."""
    return SinkRegistry(log=log).plugins()


def load_sink_class(name: str, *, log: BoundLogger | None = None) -> type[Sink]:
    """The installed sink class for entry-point ``name``; ``SinkLoadError`` names known sinks."""
    return SinkRegistry(log=log).load(name)


def validate_sink_options(cls: type[Sink], options: Mapping[str, object]) -> None:
    """Check ``options`` against ``cls.options_model``; ``SinkLoadError`` names each bad key.

    Input values are left out of the message: options carry secrets.
    """
    model = cls.options_model
    if model is None:
        if options:
            raise SinkLoadError(
                f"sink takes no options, got: {', '.join(sorted(options))}",
                option_problems=[
                    ((key,), f"unknown option {key!r}: this sink takes no options")
                    for key in sorted(options)
                ],
            )
        return
    try:
        model.model_validate(dict(options))
    except pydantic.ValidationError as exc:
        found = [
            (key_path(err["loc"]), describe(err, model=model, noun="option"))
            for err in exc.errors(include_input=False, include_url=False)
        ]
        text = "; ".join(f"{format_key_path(loc) or '(options)'}: {why}" for loc, why in found)
        raise SinkLoadError(f"invalid options: {text}", option_problems=found) from None


def build_sink(
    name: str,
    options: Mapping[str, object],
    *,
    http: aiohttp.ClientSession,
    log: BoundLogger,
    registry: SinkRegistry | None = None,
    memory: SinkMemory | None = None,
) -> Sink:
    """Load, validate and construct the sink ``name`` with a logger bound to ``sink.<name>``."""
    cls = (registry or SinkRegistry(log=log)).load(name)
    try:
        validate_sink_options(cls, options)
    except SinkLoadError as exc:
        raise SinkLoadError(f"sink {name!r}: {exc.message}") from None
    return cls(
        name,
        options,
        http=http,
        log=log.bind(component=f"sink.{name}", sink=name),
        memory=memory,
    )


# --- the sinks of a configuration ----------------------------------------------------------------


def receiver_problems(
    config: Config,
    *,
    only: str | None = None,
    registry: SinkRegistry | None = None,
) -> list[ConfigError]:
    """Every receiver (or only the one named ``only``) names an installed sink whose options
    validate: one ``ConfigError`` per unknown or broken sink, at ``receivers[i].sink``, and per
    bad option, at that option's own key (``receivers[i].options.url``) and line.

    Options holding a secret that was not read (``check-config --skip-secrets``, or reported
    unreadable already) are not judged. Also ``check-config``'s further check (a ``config.Check``).
    """
    if registry is None:
        registry = SinkRegistry(log=get_logger("sinks"))
    problems: list[ConfigError] = []
    for index, receiver in enumerate(config.receivers):
        if only is None or receiver.name == only:
            problems.extend(_problems_of(config, index, registry))
    return problems


def _problems_of(config: Config, index: int, registry: SinkRegistry) -> list[ConfigError]:
    """``receiver_problems`` of the receiver at ``index``: the one place a ``SinkLoadError``
    becomes an error at a config key path."""
    receiver = config.receivers[index]
    at: Loc = ("receivers", index)
    try:
        cls = registry.load(receiver.sink)
    except SinkLoadError as exc:
        return [config.error_at((*at, "sink"), exc.message)]
    try:
        validate_sink_options(cls, receiver.options)
    except SinkLoadError as exc:
        return [
            config.error_at((*at, "options", *loc), message)
            for loc, message in exc.option_problems or (((), exc.message),)
            if not _holds_unread_secret(receiver.options, loc)
        ]
    return []


async def build_sinks(
    config: Config,
    *,
    http: aiohttp.ClientSession,
    log: BoundLogger,
    only: str | None = None,
    registry: SinkRegistry | None = None,
    memory: Callable[[str], SinkMemory] | None = None,
    keep: Mapping[str, Sink] | None = None,
) -> dict[str, Sink]:
    """Receiver name -> its sink, for every receiver of ``config`` (or only the one named
    ``only``), constructed but not yet ``check()``ed.

    All or nothing: first every receiver is judged (``receiver_problems``) and one
    ``ConfigError`` lists each problem; a constructor that raises closes the sinks built before
    it. ``memory`` gives a receiver's ``SinkMemory`` (default: in memory). ``keep`` (a reload):
    receivers whose running sink stays, returned as given, neither judged nor built again.
    A loaded config always has a receiver: the built-in ``default`` console one at least.
    """
    if registry is None:
        registry = SinkRegistry(log=log)
    kept = keep or {}
    wanted = [
        index
        for index, r in enumerate(config.receivers)
        if (only is None or r.name == only) and r.name not in kept
    ]
    problems = [problem for index in wanted for problem in _problems_of(config, index, registry)]
    if problems:
        raise _one_error(problems)
    sinks: dict[str, Sink] = {}
    built: list[Sink] = []
    try:
        for index, receiver in enumerate(config.receivers):
            if receiver.name in kept:
                sinks[receiver.name] = kept[receiver.name]
            elif index in wanted:
                sink = build_sink(
                    receiver.sink,
                    receiver.options,
                    http=http,
                    log=log,
                    registry=registry,
                    memory=memory(receiver.name) if memory is not None else None,
                )
                built.append(sink)
                sinks[receiver.name] = sink
    except BaseException:
        for sink in built:
            await sink.aclose()
        raise
    return sinks


def _one_error(problems: list[ConfigError]) -> ConfigError:
    """Several problems as one ``ConfigError`` (``str()`` lists each, one per line)."""
    first, *others = problems
    return ConfigError(
        first.message, path=first.path, line=first.line, file=first.file, others=others
    )


def _holds_unread_secret(options: Mapping[str, object], loc: tuple[str | int, ...]) -> bool:
    value: object = options
    for part in loc:
        if isinstance(value, Mapping):
            if part not in value:
                return False
            value = value[part]
        elif isinstance(value, tuple | list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return False
        if isinstance(value, UncheckedSecret):
            return True
    return False
