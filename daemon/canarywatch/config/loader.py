"""``load_config``/``parse_config``: YAML -> validated ``Config``, or ``ConfigError``.

Three passes, each reporting every problem it finds with key path and line:
1. YAML syntax and duplicate keys (``config.yamlsource``);
2. shape and values, per section (pydantic models in ``config.models``);
3. what needs more than one value: time intervals (parsed by ``canarywatch.timeintervals``),
   receiver and time-interval names on routes, the root route's rules, secrets inside receiver
   options, and the listener's token.

Route inheritance and the root defaults are not applied here: ``pipeline.route.build_route``
is their one home, and ``Config.route`` is the tree as written.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from canarywatch.config.models import ConfigFile, Receiver, RouteSpec, TimeIntervalSet
from canarywatch.config.resolved import ROUTE_LOC, Config, Loc, SourceMap, walk_route
from canarywatch.config.yamlsource import load_yaml
from canarywatch.errors import ConfigError
from canarywatch.matchers import parse_matcher_set
from canarywatch.secrets import SECRET_FORMS, SECRET_HINT, is_secret_ref, resolve_secret
from canarywatch.timeintervals import TimeInterval, TimeIntervalError, parse_time_interval

DEFAULT_RECEIVER: Final = "default"

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

_TYPE_MESSAGES: Final = {
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "mapping_type": "expected a mapping (key: value)",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "datetime_type": "expected an RFC 3339 time like 2025-01-31T12:00:00Z",
    "datetime_parsing": "expected an RFC 3339 time like 2025-01-31T12:00:00Z",
    "datetime_from_date_parsing": "expected an RFC 3339 time like 2025-01-31T12:00:00Z",
    "missing": "required key is missing",
}


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``.

    ``environ`` replaces ``os.environ`` for ``{env: NAME}`` secrets (tests pass their own).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"cannot read config file: {reason}", file=str(path)) from None
    return parse_config(text, filename=str(path), environ=environ)


def parse_config(
    text: str, *, filename: str = "<config>", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate YAML ``text``; ``filename`` only labels error messages."""
    data, lines = load_yaml(text, filename=filename)
    source = SourceMap(filename, MappingProxyType(lines))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise source.error((), "the document must be a mapping of top-level keys")
    for key in data:
        if not isinstance(key, str):
            raise source.error((), f"top-level keys must be names, not {key!r}")
    try:
        spec = ConfigFile.model_validate(data, context={"environ": environ})
    except ValidationError as exc:
        raise _combine([_from_pydantic(e, source) for e in _relevant(exc.errors())]) from None
    errors: list[ConfigError] = []
    config = _Resolver(source, errors, environ).resolve(spec)
    if errors:
        raise _combine(errors)
    return config


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


def _from_pydantic(error: ErrorDetails, source: SourceMap) -> ConfigError:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        message = _unknown_key(loc)
    elif kind in _TYPE_MESSAGES:
        message = _TYPE_MESSAGES[kind]
    else:
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        message = message.replace("Input should be", "must be")
        if kind == "too_short":
            message = "must not be empty"
    return source.error(loc, message)


def _unknown_key(loc: Loc) -> str:
    key = str(loc[-1])
    message = f"unknown key {key!r}"
    if key in _ALERTMANAGER_HINTS:
        return f"{message}: {_ALERTMANAGER_HINTS[key]}"
    model = _model_at(loc[:-1])
    if model is None:
        return message
    known = sorted(f.alias or name for name, f in model.model_fields.items())
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{message} ({hint}known: {', '.join(known)})"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model validating the mapping at ``loc`` (for listing the keys it accepts)."""
    model: type[BaseModel] = ConfigFile
    annotation: object = ConfigFile
    for part in loc:
        if isinstance(part, int):
            continue
        by_key = {f.alias or name: f for name, f in model.model_fields.items()}
        if part not in by_key:
            return None
        annotation = by_key[part].annotation
        found = _find_model(annotation)
        if found is None:
            return None
        model = found
    return model


def _find_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = _find_model(arg)
        if found is not None:
            return found
    return None


class _Resolver:
    """Pass 3: time intervals, cross-references and option secrets; appends to ``errors``."""

    def __init__(
        self, source: SourceMap, errors: list[ConfigError], environ: Mapping[str, str] | None
    ) -> None:
        self._source = source
        self._errors = errors
        self._environ = environ
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
        known = names or {spec.cluster}
        lease_cluster = spec.leader_election.cluster
        if lease_cluster is not None and lease_cluster not in known:
            self._fail(
                ("leader_election", "cluster"), f"no cluster named {lease_cluster!r} is configured"
            )
        if spec.leader_election.enabled and not spec.clusters:
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
        if metrics.discover and not spec.clusters:
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
                try:
                    intervals.append(parse_time_interval(interval.model_dump(exclude_none=True)))
                except TimeIntervalError as exc:
                    loc: Loc = ("time_intervals", index, "time_intervals", item, *exc.path)
                    self._fail(loc, exc.reason)
            parsed.setdefault(named.name, tuple(intervals))
        return MappingProxyType(parsed)

    def _resolve_receivers(self, specs: tuple[Receiver, ...] | None) -> tuple[Receiver, ...]:
        if specs is None:
            specs = (Receiver(name=DEFAULT_RECEIVER, sink="console"),)
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
                return resolve_secret(value, path="", environ=self._environ)
            except ConfigError as exc:
                self._fail(loc, exc.message)
                return None
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
        if spec.receiver is None:
            self._fail((*loc, "receiver"), "the root route needs a receiver")
        # Items already parsed as valid; '' and '{}' are no matcher, as in Alertmanager.
        if any(parse_matcher_set(item) for item in spec.matchers):
            self._fail((*loc, "matchers"), "the root route matches everything: no matchers")
        if spec.continue_:
            self._fail((*loc, "continue"), "the root route has no siblings: no continue")
        for key in ("mute_time_intervals", "active_time_intervals"):
            if getattr(spec, key):
                self._fail((*loc, key), f"the root route cannot have {key}")
        for node_loc, node in walk_route(spec, loc):
            if node.receiver is not None and node.receiver not in self._receivers:
                self._fail((*node_loc, "receiver"), self._unknown("receiver", node.receiver))
            for key in ("mute_time_intervals", "active_time_intervals"):
                for index, name in enumerate(getattr(node, key)):
                    if name not in self._intervals:
                        self._fail((*node_loc, key, index), self._unknown("time interval", name))
        return spec

    def _unknown(self, what: str, name: str) -> str:
        known = sorted(self._receivers if what == "receiver" else self._intervals)
        return f"unknown {what} {name!r} (known: {', '.join(known) or 'none'})"
