"""The status page: every canary, each rollout as a timeline, silences and the outbox, in the
browser, on the daemon's own listener (issue 18).

Routes (``status_page_routes``; none under ``/api/``):

- ``GET /`` -> the canaries (``?cluster=&namespace=&phase=`` filter them);
- ``GET /canaries/{namespace}/{name}[?cluster=]`` -> one canary: each rollout as a weight step
  chart with its checks, halts, gates and verdict, and each transition's decision trail;
- ``GET /silences``, ``GET /outbox`` -> silences (create, expire) and the outbox (retry, drop);
- ``GET /static/page.js``, ``/static/page.css`` -> the one script and style sheet (shipped in
  the package: no build step, no CDN).

Plain server-rendered HTML. The script keeps it live by polling ``/api/v1/transitions`` (what
``canarywatch tail`` reads) and re-reading the page when something new happened; its forms call
the control API (``/api/v1/silences``, ``/api/v1/outbox/...``) and show that API's error text, so
validation is the CLI's.

Access: with no ``server.token`` (only possible on loopback) anyone who reaches the listener
reads the page. With one, a page is read without it only from a loopback client (a request that
came through a proxy, with ``Forwarded``/``X-Forwarded-For``, does not count as one); otherwise
``Authorization: Bearer <token>`` or HTTP Basic with the token as the password (the browser asks)
is required. Changes always go through ``/api/v1/``, which wants the bearer token whenever one is
configured: the page keeps a token a person types in sessionStorage, never in the HTML.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any, Final
from urllib.parse import quote, urlencode

from aiohttp import web

from canarywatch.clock import Clock
from canarywatch.formats.human import format_age
from canarywatch.formats.jsonout import format_time
from canarywatch.model import CanaryRef
from canarywatch.pipeline.silence import Silencer
from canarywatch.secrets import Secret
from canarywatch.state.base import StateStore
from canarywatch.views.explain import DecisionRecorder
from canarywatch.views.live import CanaryRow, LiveState
from canarywatch.views.timeline import Rollout, rollouts
from canarywatch.web.control import dead_letter_rows, pending_rows, silence_rows
from canarywatch.web.html import esc, frame, phase_badge, table, weight_bar
from canarywatch.web.timeline_svg import step_chart, verdict_text

__all__ = ["is_loopback_client", "status_page_routes"]

_STATIC: Final = ("page.js", "page.css")
_TYPES: Final = {"js": "text/javascript", "css": "text/css"}
_HTML: Final = "text/html"
_PROXY_HEADERS: Final = ("Forwarded", "X-Forwarded-For", "X-Real-IP")

_SECURITY_HEADERS: Final = {
    # Only the daemon's own script; inline style attributes (the weight bars) are allowed.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback_client(request: web.Request) -> bool:
    """The peer is on this host and no proxy says it forwards someone else."""
    if any(h in request.headers for h in _PROXY_HEADERS):
        return False
    remote = request.remote or ""
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _token_given(request: web.Request, token: Secret) -> bool:
    given = request.headers.get("Authorization", "")
    expected = token.reveal().encode()
    if given.startswith("Bearer "):
        return hmac.compare_digest(given[7:].encode(), expected)
    if given.startswith("Basic "):
        try:
            decoded = base64.b64decode(given[6:], validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded.partition(b":")[2], expected)
    return False


def _guarded(handler: Handler, token: Secret | None) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        if (
            token is not None
            and not is_loopback_client(request)
            and not _token_given(request, token)
        ):
            body = frame(
                "Token required",
                "<p>This page is readable without the token only from the daemon's own "
                "host. Give the token (<code>server.token</code>) as the password when "
                "the browser asks, or as <code>Authorization: Bearer</code>.</p>",
                active="",
            )
            return web.Response(
                text=body,
                status=401,
                content_type=_HTML,
                headers={
                    **_SECURITY_HEADERS,
                    "WWW-Authenticate": 'Basic realm="canarywatch", charset="UTF-8"',
                },
            )
        response = await handler(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    return wrapped


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status, content_type=_HTML, headers={"Cache-Control": "no-store"}
    )


# -- the canaries ------------------------------------------------------------------------------


def _select(name: str, label: str, values: Sequence[str], chosen: str) -> str:
    options = ['<option value="">all</option>'] + [
        f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(v)}</option>'
        for v in values
    ]
    return (
        f'<label for="f-{name}">{label}</label>'
        f'<select id="f-{name}" name="{name}">{"".join(options)}</select>'
    )


def _canary_href(ref: CanaryRef) -> str:
    query = f"?{urlencode({'cluster': ref.cluster})}" if ref.cluster else ""
    return f"/canaries/{quote(ref.namespace, safe='')}/{quote(ref.name, safe='')}{query}"


def _canary_row(row: CanaryRow, age_s: float) -> str:
    last = f"{row.last_transition.value} {row.detail}".strip()
    checks = str(row.failed_checks)
    if row.failed_checks:
        checks = f'<span class="bad-text">{checks} failed</span>'
    return (
        f'<tr data-canary="{esc(row.canary)}" data-phase="{esc(row.phase or "")}">'
        f"<td>{esc(row.canary.cluster)}</td><td>{esc(row.canary.namespace)}</td>"
        f'<th scope="row"><a href="{esc(_canary_href(row.canary))}">'
        f"{esc(row.canary.name)}</a></th>"
        f"<td>{phase_badge(row.phase.value if row.phase else None)}</td>"
        f"<td>{weight_bar(row.weight)}</td><td>{checks}</td>"
        f'<td>{esc(last)}<br><time class="muted" datetime="{esc(format_time(row.last_at))}">'
        f"{esc(row.last_at.strftime('%H:%M:%S'))}</time></td>"
        f"<td>{esc(format_age(age_s))}</td></tr>"
    )


def render_canaries(
    rows: Sequence[CanaryRow], query: Mapping[str, str], *, now_seq: int, clock: Clock
) -> str:
    now = clock.now()
    wanted = {k: query.get(k, "") for k in ("cluster", "namespace", "phase")}

    def value(row: CanaryRow, key: str) -> str:
        if key == "phase":
            return row.phase.value if row.phase else ""
        return row.canary.cluster if key == "cluster" else row.canary.namespace

    shown = [r for r in rows if all(not v or value(r, k) == v for k, v in wanted.items())]
    selects = "".join(
        _select(key, key.capitalize(), sorted({value(r, key) for r in rows} - {""}), wanted[key])
        for key in ("cluster", "namespace", "phase")
    )
    filters = (
        f'<form class="filters" method="get" action="/" aria-label="Filter canaries">{selects}'
        '<button type="submit">Filter</button></form>'
    )
    body = table(
        f"{len(shown)} of {len(rows)} canaries",
        (
            "Cluster",
            "Namespace",
            "Name",
            "Phase",
            "Weight",
            "Failed checks",
            "Last transition",
            "Age",
        ),
        (_canary_row(r, (now - r.last_at).total_seconds()) for r in shown),
        empty="No canary seen yet." if not rows else "No canary matches the filter.",
    )
    return frame("Canaries", body, active="/", live={"seq": str(now_seq)}, lead=filters)


# -- one canary --------------------------------------------------------------------------------


def _trail_html(trail: Mapping[str, Any]) -> str:
    sightings = "; ".join(
        f"{esc(s.get('source'))} at {esc(s.get('first_at'))}"
        + (f" ({esc(s.get('count'))} times)" if s.get("count") != 1 else "")
        for s in trail.get("sightings") or []
    )
    steps = "".join(
        f"<li><time>{esc(s.get('at'))}</time> <strong>{esc(s.get('stage'))}</strong> "
        f"{esc(s.get('text'))}</li>"
        for s in trail.get("steps") or []
    )
    message = trail.get("message") or ""
    flagger = f'<p>Flagger said: <q class="flagger">{esc(message)}</q></p>' if message else ""
    return (
        f"<p>Seen by: {sightings or '–'}</p>{flagger}"
        f'<ol class="trail">{steps}</ol>'
        f"<p>Trail id <code>{esc(trail.get('id'))}</code> · "
        f"<code>canarywatch explain {esc(trail.get('namespace'))}/{esc(trail.get('name'))} "
        f"--transition {esc(trail.get('id'))}</code></p>"
    )


def _rollout_html(rollout: Rollout) -> str:
    chart_id = f"r{rollout.number}"
    rows = []
    for step in rollout.steps:
        trail = step.trail.to_json()
        suppressed = trail.get("suppressed")
        outcome = str(trail.get("outcome") or "")
        css = "suppressed" if suppressed else ""
        name = esc(f"{step.transition.value} {step.trail.event.detail}".strip())
        seen = max((s.count for s in step.trail.sightings.values()), default=1)
        if seen > 1:
            name += f' <span class="muted">(reported {seen} times)</span>'
        if step.trail.event.message:
            name += f'<br><q class="flagger">{esc(step.trail.event.message)}</q>'
        rows.append(
            f'<tr class="{css}" data-transition="{esc(step.transition.value)}">'
            f'<td><time datetime="{esc(format_time(step.at))}">'
            f"{esc(step.at.strftime('%H:%M:%S'))}</time></td>"
            f"<td>{name}</td><td>{esc(step.kind.value)}</td>"
            f"<td>{'' if step.weight is None else f'{step.weight}%'}</td>"
            f"<td>{esc(outcome)}"
            f'<details id="t-{esc(step.trail.id)}"><summary>Decision trail</summary>'
            f"{_trail_html(trail)}</details></td></tr>"
        )
    verdict = verdict_text(rollout)
    css = "ok" if rollout.succeeded else ("bad" if rollout.succeeded is False else "running")
    steps_table = table(
        f"Rollout {rollout.number}: {len(rollout.steps)} transitions",
        ("Seen", "Transition", "Kind", "Weight", "Outcome and decision trail"),
        rows,
        empty="No transition kept.",
    )
    return (
        f'<section class="rollout" id="rollout-{rollout.number}" aria-labelledby="{chart_id}-h">'
        f'<h2 id="{chart_id}-h">Rollout {rollout.number} '
        f'<span class="muted">(id {esc(rollout.label)})</span> · '
        f'<span class="verdict {css}">{esc(verdict)}</span></h2>'
        f"<p>{esc(rollout.started_at.strftime('%H:%M:%S'))} to "
        f"{esc(rollout.ended_at.strftime('%H:%M:%S'))}</p>"
        f"{step_chart(rollout, chart_id)}{steps_table}</section>"
    )


def render_canary(
    ref: CanaryRef, row: CanaryRow | None, found: Sequence[Rollout], *, now_seq: int
) -> str:
    summary = ""
    if row is not None:
        summary = (
            f'<p class="summary">{phase_badge(row.phase.value if row.phase else None)} · '
            f"weight {weight_bar(row.weight)} · {row.failed_checks} failed checks · last "
            f"{esc(row.last_transition.value)} at {esc(format_time(row.last_at))}"
            f"{f' · cluster {esc(ref.cluster)}' if ref.cluster else ''}</p>"
        )
    sections = "".join(_rollout_html(r) for r in reversed(found))
    if not found:
        sections = '<p class="empty">No transition of it is kept.</p>'
    index = "".join(
        f'<li><a href="#rollout-{r.number}">Rollout {r.number}</a>: {esc(verdict_text(r))}</li>'
        for r in found
    )
    nav = f'<nav aria-label="Rollouts"><ol class="index">{index}</ol></nav>' if found else ""
    live = {"seq": str(now_seq), "canary": str(ref), "cluster": ref.cluster}
    return frame(f"Canary {ref}", summary + nav + sections, active="", live=live)


# -- silences and the outbox -------------------------------------------------------------------


def render_silences(rows: Sequence[Mapping[str, Any]]) -> str:
    def tr(s: Mapping[str, Any]) -> str:
        action = ""
        if s.get("origin") != "config" and s.get("state") != "expired":
            action = (
                f'<button type="button" data-action="expire" data-id="{esc(s.get("id"))}">'
                f'Expire <span class="sr">silence {esc(s.get("id"))}</span></button>'
            )
        elif s.get("origin") == "config":
            action = '<span class="muted">in the config file</span>'
        matchers = "<br>".join(f"<code>{esc(m)}</code>" for m in s.get("matchers") or [])
        return (
            f'<tr data-id="{esc(s.get("id"))}"><td><code>{esc(s.get("id"))}</code></td>'
            f"<td>{matchers}</td><td>{esc(s.get('state'))}</td><td>{esc(s.get('starts_at'))}</td>"
            f"<td>{esc(s.get('ends_at'))}</td><td>{esc(s.get('created_by'))}</td>"
            f"<td>{esc(s.get('comment'))}</td><td>{action}</td></tr>"
        )

    listing = table(
        f"{len(rows)} silences",
        ("Id", "Matchers", "State", "Starts", "Ends", "Created by", "Comment", ""),
        (tr(s) for s in rows),
        empty="No silence is active.",
    )
    form = """<h2>New silence</h2>
<form id="silence-form" class="stack">
<label for="s-matchers">Matchers, one a line
 (as <code>canarywatch silence add</code> takes them)</label>
<textarea id="s-matchers" name="matchers" rows="3" required
 placeholder='canary="checkout"'></textarea>
<label for="s-duration">Duration (e.g. 2h, 30m)</label>
<input id="s-duration" name="duration" value="2h" required>
<label for="s-created-by">Created by</label>
<input id="s-created-by" name="created_by" autocomplete="username" required>
<label for="s-comment">Comment</label>
<input id="s-comment" name="comment" required>
<button type="submit">Create silence</button>
<p id="silence-result" role="status"></p>
</form>"""
    return frame("Silences", listing + form, active="/silences")


def _outbox_row(item: Mapping[str, Any], *, dead: bool) -> str:
    id_ = item.get("id")
    actions = ""
    if id_ is not None:
        retry = (
            f'<button type="button" data-action="retry" data-id="{esc(id_)}">Retry '
            f'<span class="sr">item {esc(id_)}</span></button> '
            if dead
            else ""
        )
        actions = (
            f'{retry}<button type="button" data-action="drop" data-id="{esc(id_)}">Drop '
            f'<span class="sr">item {esc(id_)}</span></button>'
        )
    canaries = ", ".join(esc(c) for c in item.get("canaries") or [])
    return (
        f'<tr data-id="{esc(id_)}"><td>{esc(id_ if id_ is not None else "held")}</td>'
        f"<td>{esc(item.get('receiver'))}</td><td>{canaries}</td><td>{esc(item.get('status'))}</td>"
        f"<td>{esc(item.get('attempts'))}</td><td>{esc(item.get('last_error') or '')}</td>"
        f"<td>{esc(item.get('created_at'))}</td><td>{actions}</td></tr>"
    )


def render_outbox(pending: Sequence[Mapping[str, Any]], dead: Sequence[Mapping[str, Any]]) -> str:
    headers = ("Id", "Receiver", "Canaries", "Status", "Attempts", "Last error", "Created", "")
    body = (
        "<h2>Dead letters</h2>"
        + table(
            f"{len(dead)} dead letters",
            headers,
            (_outbox_row(i, dead=True) for i in dead),
            empty="No dead letter.",
        )
        + "<h2>Pending</h2>"
        + table(
            f"{len(pending)} pending deliveries",
            headers,
            (_outbox_row(i, dead=False) for i in pending),
            empty="Nothing waits for delivery.",
        )
        + '<p id="outbox-result" role="status"></p>'
    )
    return frame("Outbox", body, active="/outbox")


# -- routes ------------------------------------------------------------------------------------


def _static_files() -> dict[str, bytes]:
    folder = resources.files("canarywatch.web").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in _STATIC}


def status_page_routes(
    live: LiveState,
    recorder: DecisionRecorder,
    store: StateStore,
    silencer: Silencer,
    *,
    clock: Clock,
    token: Secret | None,
) -> list[web.RouteDef]:
    """The page's routes for ``web.build_app(extra_routes=...)``; see the module docstring."""
    static = _static_files()

    async def canaries(request: web.Request) -> web.StreamResponse:
        text = render_canaries(live.canaries(), request.query, now_seq=live.last_seq, clock=clock)
        return _html(text)

    async def canary(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        cluster = request.query.get("cluster")
        known = {r.canary: r for r in live.canaries()}
        refs = [
            ref
            for ref in {*known, *recorder.canaries()}
            if ref.namespace == namespace
            and ref.name == name
            and (cluster is None or ref.cluster == cluster)
        ]
        if not refs:
            where = f" in cluster {cluster}" if cluster else ""
            body = (
                f"<p>No canary {esc(namespace)}/{esc(name)}{esc(where)} has been seen by this "
                'daemon. <a href="/">All canaries</a></p>'
            )
            return _html(frame("Canary not found", body, active=""), status=404)
        ref = sorted(refs, key=lambda r: r.cluster)[0]
        found = rollouts(recorder, ref, now=clock.now())
        return _html(render_canary(ref, known.get(ref), found, now_seq=live.last_seq))

    async def silences(_: web.Request) -> web.StreamResponse:
        return _html(render_silences(silence_rows(store, silencer, clock.now())))

    async def outbox(_: web.Request) -> web.StreamResponse:
        return _html(render_outbox(pending_rows(store), dead_letter_rows(store)))

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        body = static.get(name)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=body,
            headers={
                "Content-Type": f"{_TYPES[name.rsplit('.', 1)[1]]}; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )

    return [
        web.get("/", _guarded(canaries, token)),
        web.get("/canaries/{namespace}/{name}", _guarded(canary, token)),
        web.get("/silences", _guarded(silences, token)),
        web.get("/outbox", _guarded(outbox, token)),
        web.get("/static/{file}", _guarded(asset, token)),
    ]
