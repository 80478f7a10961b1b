"""``load_config``/``parse_config``: YAML -> validated ``Config``, or ``ConfigError``.

Three passes, each reporting every problem it finds with key path and line:
1. YAML syntax and duplicate keys (``config.yamlsource``);
2. shape and values, per section (pydantic models, one module per concern, gathered in
   ``config.document``);
3. what needs more than one value: time intervals (parsed by ``canarywatch.labels.timeintervals``),
   receiver and time-interval names on routes, the root route's rules, secrets inside receiver
   options, and the listener's token; then the caller's ``check`` (``check-config``'s sinks).

A problem in pass 2 does not stop passes 3 and ``check``: the failing values are set aside
(``_Pruned``) and the rest is checked too, so one run reports everything (issue 15).

Route inheritance and the root defaults are not applied here: ``pipeline.route.build_route``
is their one home, and ``Config.route`` is the tree as written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final, TypeAlias

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from canarywatch.config.document import ConfigFile
from canarywatch.config.fields import SECRET_UNRESOLVED, UncheckedSecret, read_secret
from canarywatch.config.muting import TimeIntervalSet
from canarywatch.config.receivers import DEFAULT_RECEIVER, DEFAULT_SINK, Receiver
from canarywatch.config.resolved import Config, Loc, SourceMap, original_loc
from canarywatch.config.routing import ROUTE_LOC, RouteSpec, root_route_problems, walk_route
from canarywatch.config.validation import describe, key_path
from canarywatch.config.yamlsource import load_yaml
from canarywatch.errors import ConfigError
from canarywatch.labels.keypath import format_key_path
from canarywatch.labels.timeintervals import TimeInterval, TimeIntervalError, parse_time_interval
from canarywatch.secrets import SECRET_FORMS, SECRET_HINT, is_secret_ref

SECRET_OPTION_KEY: Final = re.compile(
    r"token|secret|password|authorization|webhook_url|api_key|credential", re.IGNORECASE
)
"""Receiver option keys whose string values must be secret references, never inline."""

_ALERTMANAGER_HINTS: Final = {
    "match": "use matchers, e.g. ['severity=\"critical\"']",
    "match_re": "use matchers, e.g. ['namespace=~\"team-.*\"']",
    "source_match": "use source_matchers",
    "source_match_re": "use source_matchers",
    "target_match": "use target_matchers",
    "target_match_re": "use target_matchers",
    "mute_time_intervals": "name time intervals under time_intervals",
}

_MAX_PRUNING_ROUNDS: Final = 32
"""Pass 2 sets aside what failed and validates the rest again, at most this often."""

_SECRET_STANDIN: Final = {"value": "unresolved"}
"""Validated in place of a secret that could not be read, so the rest still gets checked."""

Check: TypeAlias = Callable[[Config], Iterable[ConfigError]]
"""A further check of a loaded config (``check-config``'s sinks): its problems join the rest."""


def load_config(
    path: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    skip_secrets: bool = False,
    check: Check | None = None,
) -> Config:
    """Read and validate the config file at ``path``.

    ``environ`` replaces ``os.environ`` for ``{env: NAME}`` secrets (tests pass their own);
    ``skip_secrets`` and ``check`` as for ``parse_config``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"cannot read config file: {reason}", file=str(path)) from None
    return parse_config(
        text, filename=str(path), environ=environ, skip_secrets=skip_secrets, check=check
    )


def parse_config(
    text: str,
    *,
    filename: str = "<config>",
    environ: Mapping[str, str] | None = None,
    skip_secrets: bool = False,
    check: Check | None = None,
) -> Config:
    """Validate YAML ``text``; ``filename`` only labels error messages.

    Every problem is reported at once, in line order: what fails pass 2 is set aside (a bad
    key dropped, a bad list item left out, an unreadable secret stood in for) and the rest goes
    through pass 3 and ``check`` all the same. ``skip_secrets``: check the form of
    ``{env: ...}``/``{file: ...}`` references but do not read them (a config whose secrets
    exist only where it runs); the ``Config`` then holds ``UncheckedSecret`` placeholders and
    is for checking only. ``check``: a further check of the result, whose errors join the rest.
    """
    data, lines, base60 = load_yaml(text, filename=filename)
    source = SourceMap(filename, MappingProxyType(lines))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise source.error((), "the document must be a mapping of top-level keys")
    for key in data:
        if not isinstance(key, str):
            raise source.error((), f"top-level keys must be names, not {key!r}")
    context = {"environ": environ, "skip_secrets": skip_secrets}
    errors: list[ConfigError] = []
    pruned = _Pruned(data)
    try:
        spec = ConfigFile.model_validate(data, context=context)
    except ValidationError as exc:
        found = _relevant(exc.errors())
        errors = [_from_pydantic(e, source, base60) for e in found]
        rest = pruned.validate(found, context)
        if rest is None:
            raise _combine(errors) from None
        spec = rest
        source = dataclasses.replace(source, renumbered=pruned.renumbered)
    later: list[ConfigError] = []
    resolver = _Resolver(
        source, later, environ, skip_secrets=skip_secrets, base60=base60, written=pruned.names()
    )
    config = resolver.resolve(spec)
    if check is not None:
        later.extend(check(config))
    errors.extend(e for e in later if not pruned.covers(e.path))
    if errors:
        raise _combine(errors)
    return config


class _Pruned:
    """Pass 2 again without what failed: ``validate`` sets failing values aside until the rest
    validates, so pass 3 can check it. Paths here are as written (the original list indices);
    ``renumbered`` maps them back for errors found on the pruned document."""

    def __init__(self, data: dict[str, object]) -> None:
        self._data = data
        self._removed: set[Loc] = set()
        self._replaced: dict[Loc, object] = {}
        self.renumbered: Mapping[Loc, tuple[int, ...]] = MappingProxyType({})

    def validate(self, errors: list[ErrorDetails], context: object) -> ConfigFile | None:
        """The model of the document without what fails; ``None`` if nothing is left to set
        aside (then pass 2's errors are all there is to report)."""
        for _ in range(_MAX_PRUNING_ROUNDS):
            for error in errors:
                if not self._set_aside(error):
                    return None
            document, renumbered = self._document()
            self.renumbered = MappingProxyType(renumbered)
            try:
                return ConfigFile.model_validate(document, context=context)
            except ValidationError as exc:
                errors = exc.errors()
        return None

    def covers(self, path: str) -> bool:
        """Whether an error at ``path`` is about something set aside (already reported)."""
        for loc in (*self._removed, *self._replaced):
            prefix = format_key_path(loc)
            if path == prefix or path.startswith((f"{prefix}.", f"{prefix}[")):
                return True
        return False

    def names(self) -> Mapping[str, frozenset[str] | None]:
        """The ``name`` of every item written under receivers, time_intervals and clusters,
        valid or not: a reference to one left out is not reported a second time. ``None``:
        the whole section was left out, so any name may have been meant."""
        if not self._removed and not self._replaced:
            return MappingProxyType({})
        written: dict[str, frozenset[str] | None] = {}
        for section in ("receivers", "time_intervals", "clusters"):
            if (section,) in self._removed:
                written[section] = None
                continue
            items = self._data.get(section)
            written[section] = frozenset(
                item["name"]
                for item in (items if isinstance(items, list) else ())
                if isinstance(item, dict) and isinstance(item.get("name"), str)
            )
        return MappingProxyType(written)

    def _set_aside(self, error: ErrorDetails) -> bool:
        loc = original_loc(key_path(error["loc"]), self.renumbered)
        if error["type"] == SECRET_UNRESOLVED and loc not in self._replaced:
            self._replaced[loc] = _SECRET_STANDIN
            return True
        if error["type"] == "missing":
            loc = loc[:-1]  # a required key: its mapping goes
        loc = self._written_prefix(loc)
        while loc and (loc in self._removed or loc in self._replaced):
            loc = loc[:-1]  # set aside already, and failing again: its parent goes
        if not loc:
            return False
        self._removed.add(loc)
        return True

    def _written_prefix(self, loc: Loc) -> Loc:
        """The longest start of ``loc`` that is in the document."""
        value: object = self._data
        for end, part in enumerate(loc):
            if isinstance(value, dict):
                if part not in value:
                    return loc[:end]
                value = value[part]
            elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
                value = value[part]
            else:
                return loc[:end]
        return loc

    def _document(self) -> tuple[object, dict[Loc, tuple[int, ...]]]:
        """The document without what is set aside (copied only along the way to it, so
        aliased subtrees stay shared) and, per shortened list, the indices it kept."""
        touched = {
            loc[:end] for loc in (*self._removed, *self._replaced) for end in range(len(loc))
        }
        renumbered: dict[Loc, tuple[int, ...]] = {}

        def rebuild(value: object, loc: Loc) -> object:
            if loc in self._replaced:
                return self._replaced[loc]
            if loc not in touched:
                return value
            if isinstance(value, dict):
                return {
                    key: rebuild(item, (*loc, key))
                    for key, item in value.items()
                    if (*loc, key) not in self._removed
                }
            if isinstance(value, list):
                kept = tuple(i for i in range(len(value)) if (*loc, i) not in self._removed)
                if len(kept) != len(value):
                    renumbered[loc] = kept
                return [rebuild(value[i], (*loc, i)) for i in kept]
            return value

        return rebuild(self._data, ()), renumbered


def _combine(errors: list[ConfigError]) -> ConfigError:
    ordered = sorted(errors, key=lambda e: (e.line is None, e.line or 0))  # stable: doc order
    first = ordered[0]
    return ConfigError(
        first.message, path=first.path, line=first.line, file=first.file, others=ordered[1:]
    )


def _relevant(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop a list's ``too_short`` when it only follows from its items failing."""
    locs = [tuple(e["loc"]) for e in errors]
    return [
        error
        for error, loc in zip(errors, locs, strict=True)
        if error["type"] != "too_short"
        or not any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs)
    ]


def _from_pydantic(
    error: ErrorDetails, source: SourceMap, base60: Mapping[Loc, str]
) -> ConfigError:
    loc: Loc = key_path(error["loc"])
    if loc in base60:
        return source.error(loc, _base60_message(base60[loc]))
    return source.error(loc, describe(error, model=ConfigFile, hints=_ALERTMANAGER_HINTS))


def _base60_message(text: str) -> str:
    """An unquoted ``19:00``: YAML 1.1 reads digits with colons as a base-60 number."""
    sign = -1 if text.startswith("-") else 1
    value = 0.0
    for part in text.lstrip("+-").replace("_", "").split(":"):
        value = value * 60 + float(part)
    number = str(int(sign * value)) if value.is_integer() else str(sign * value)
    return (
        f"YAML read {text} as the number {number} (unquoted digits with a colon are base 60 "
        f'in YAML 1.1): quote it, "{text}"'
    )


class _Resolver:
    """Pass 3: time intervals, cross-references and option secrets; appends to ``errors``."""

    def __init__(
        self,
        source: SourceMap,
        errors: list[ConfigError],
        environ: Mapping[str, str] | None,
        *,
        skip_secrets: bool = False,
        base60: Mapping[Loc, str] | None = None,
        written: Mapping[str, frozenset[str] | None] | None = None,
    ) -> None:
        self._source = source
        self._errors = errors
        self._environ = environ
        self._skip_secrets = skip_secrets
        self._base60 = base60 or {}
        self._written = written or {}
        """Names of items pass 2 left out (reported there): references to them are not."""
        self._receivers: set[str] = set()
        self._intervals: set[str] = set()

    def _fail(self, loc: Loc, message: str) -> None:
        self._errors.append(self._source.error(loc, message))

    def resolve(self, spec: ConfigFile) -> Config:
        receivers = self._resolve_receivers(spec.receivers)
        time_intervals = self._time_intervals(spec.time_intervals)
        route = self._check_route(spec.route)
        if not spec.server.loopback and spec.server.token is None:
            self._fail(
                ("server", "listen"),
                f"listening on {spec.server.listen} (not loopback) requires server.token: "
                f"{SECRET_HINT}",
            )
        self._check_clusters(spec)
        return Config(
            cluster=spec.cluster,
            receivers=receivers,
            route=route,
            time_intervals=time_intervals,
            inhibit_rules=spec.inhibit_rules,
            silences=spec.silences,
            state=spec.state,
            server=spec.server,
            catch_up_window_s=spec.catch_up_window,
            log=spec.log,
            clusters=spec.clusters,
            leader_election=spec.leader_election,
            metrics_source=spec.metrics_source,
            dispatch=spec.dispatch,
            labels=spec.labels,
            webhook_intake=spec.webhook_intake,
            low_traffic=spec.low_traffic,
            source=self._source,
        )

    def _check_clusters(self, spec: ConfigFile) -> None:
        """Cluster names are unique, and what names a cluster names a configured one."""
        names: set[str] = set()
        for index, cluster in enumerate(spec.clusters):
            if cluster.name in names:
                self._fail(("clusters", index, "name"), f"duplicate cluster {cluster.name!r}")
            names.add(cluster.name)
        written = self._written.get("clusters", frozenset())
        if written is None:
            return  # the whole section was left out in pass 2: nothing to compare with
        known = (names | written) or {spec.cluster}
        configured = bool(spec.clusters or written)
        lease_cluster = spec.leader_election.cluster
        if lease_cluster is not None and lease_cluster not in known:
            self._fail(
                ("leader_election", "cluster"), f"no cluster named {lease_cluster!r} is configured"
            )
        if spec.leader_election.enabled and not configured:
            self._fail(("leader_election", "enabled"), "leader election needs a configured cluster")
        intake = spec.webhook_intake
        if intake.cluster is not None and intake.cluster not in known:
            self._fail(
                ("webhook_intake", "cluster"), f"no cluster named {intake.cluster!r} is configured"
            )
        if intake.enabled and intake.secret is None and not spec.server.loopback:
            self._fail(
                ("webhook_intake", "secret"),
                "the webhook endpoint listens beyond loopback: set a shared secret "
                "({env: NAME} or {file: PATH}) and add ?token=... to Flagger's webhook URL",
            )
        metrics = spec.metrics_source
        for index, target in enumerate(metrics.targets):
            if target.cluster is not None and target.cluster not in known:
                self._fail(
                    ("metrics_source", "targets", index, "cluster"),
                    f"no cluster named {target.cluster!r} is configured",
                )
            if metrics.mode == "scrape" and not target.url:
                self._fail(("metrics_source", "targets", index, "url"), "scrape mode needs a url")
        if metrics.mode == "prometheus" and not metrics.prometheus_url:
            self._fail(("metrics_source", "prometheus_url"), "prometheus mode needs a URL")
        discovering = metrics.mode == "scrape" and metrics.discover
        if metrics.mode != "off" and not metrics.targets and not discovering:
            self._fail(("metrics_source", "targets"), f"{metrics.mode} mode needs targets")
        if metrics.discover and not configured:
            self._fail(("metrics_source", "discover"), "discovery needs a configured cluster")

    def _time_intervals(
        self, specs: tuple[TimeIntervalSet, ...]
    ) -> Mapping[str, tuple[TimeInterval, ...]]:
        parsed: dict[str, tuple[TimeInterval, ...]] = {}
        for index, named in enumerate(specs):
            if named.name in self._intervals:
                self._fail(
                    ("time_intervals", index, "name"),
                    f"duplicate time interval name {named.name!r}",
                )
            self._intervals.add(named.name)
            intervals = []
            for item, interval in enumerate(named.time_intervals):
                at: Loc = ("time_intervals", index, "time_intervals", item)
                written_at = self._source.original(at)
                misread = {
                    loc[len(at) :]: text
                    for loc, text in self._base60.items()
                    if loc[: len(at)] == written_at
                }
                for rest, text in misread.items():
                    self._fail((*at, *rest), _base60_message(text))
                if misread:
                    continue
                try:
                    intervals.append(parse_time_interval(interval.model_dump(exclude_none=True)))
                except TimeIntervalError as exc:
                    self._fail((*at, *exc.path), exc.reason)
            parsed.setdefault(named.name, tuple(intervals))
        return MappingProxyType(parsed)

    def _resolve_receivers(self, specs: tuple[Receiver, ...] | None) -> tuple[Receiver, ...]:
        if specs is None:
            specs = (Receiver(name=DEFAULT_RECEIVER, sink=DEFAULT_SINK),)
        resolved = []
        for index, receiver in enumerate(specs):
            if receiver.name in self._receivers:
                self._fail(
                    ("receivers", index, "name"), f"duplicate receiver name {receiver.name!r}"
                )
            self._receivers.add(receiver.name)
            options = self._option(receiver.options, ("receivers", index, "options"))
            resolved.append(receiver.model_copy(update={"options": options}))
        return tuple(resolved)

    def _option(self, value: object, loc: Loc) -> object:
        if is_secret_ref(value):
            try:
                return read_secret(value, environ=self._environ, skip=self._skip_secrets)
            except ConfigError as exc:
                self._fail(loc, exc.message)
                return UncheckedSecret()  # reported: the sink checks take it as unread
        if isinstance(value, Mapping):
            if len(value) > 1 and set(value) <= set(SECRET_FORMS):
                self._fail(loc, f"a secret takes exactly one of {', '.join(SECRET_FORMS)}")
                return None
            for key, item in value.items():
                inline = isinstance(item, str | int | float) and not isinstance(item, bool)
                if inline and SECRET_OPTION_KEY.search(str(key)):
                    self._fail(
                        (*loc, str(key)),
                        f"looks like a secret, so it cannot be written inline: {SECRET_HINT}",
                    )
            return MappingProxyType({k: self._option(v, (*loc, str(k))) for k, v in value.items()})
        if isinstance(value, list | tuple):
            return tuple(self._option(v, (*loc, i)) for i, v in enumerate(value))
        return value

    def _check_route(self, spec: RouteSpec | None) -> RouteSpec:
        """The root's rules, and every node's receiver and time interval names; no inheritance."""
        loc = ROUTE_LOC
        if spec is None:
            if DEFAULT_RECEIVER not in self._receivers:
                self._fail(
                    loc,
                    "no route given, so everything goes to receiver 'default', which is not "
                    "defined: add a route or a receiver named 'default'",
                )
            return RouteSpec(receiver=DEFAULT_RECEIVER)
        for below, message in root_route_problems(spec):
            self._fail((*loc, *below), message)
        for node_loc, node in walk_route(spec, loc):
            if node.receiver is not None and not self._known("receivers", node.receiver):
                self._fail((*node_loc, "receiver"), self._unknown("receiver", node.receiver))
            for key in ("mute_time_intervals", "active_time_intervals"):
                for index, name in enumerate(getattr(node, key)):
                    if not self._known("time_intervals", name):
                        self._fail((*node_loc, key, index), self._unknown("time interval", name))
        return spec

    def _known(self, section: str, name: str) -> bool:
        defined = self._receivers if section == "receivers" else self._intervals
        if name in defined or section not in self._written:
            return name in defined
        written = self._written[section]
        return written is None or name in written

    def _unknown(self, what: str, name: str) -> str:
        known = sorted(self._receivers if what == "receiver" else self._intervals)
        return f"unknown {what} {name!r} (known: {', '.join(known) or 'none'})"
