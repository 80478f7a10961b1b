"""The fault matrix's harness: what Flagger did, what the receivers got, and the difference.

- ``Truth`` / ``TracedFlagger``: a ``FlaggerSimulator`` whose canaries record every tick a
  scenario takes, with the transitions that tick makes (``reference/transitions.md``: a
  readiness/analysis condition is announced once while open, a forward step closes readiness,
  ``revision-detected`` starts a rollout) and the wall time it was made. ``check()`` compares
  the recorded sequence with the scenarios' declared ``expected`` transitions, so the truth
  model itself is tested on every run.
- The webhook endpoint is ``tests.support.webhook_receiver`` (``path="/"``): arrival times,
  the status it answered, and an outage switch (500 while ``failing``); ``Arrival`` is its
  ``Captured``.
- ``Cluster``: ``SimulatedApiServer`` restartable on the same port with the same store and plan.
- ``DaemonProcess``: ``python -m canarywatch run --config FILE`` as a child process on a fixed
  port, one JSON log per run; ``kill()`` is SIGKILL (by pid), ``stop()`` SIGTERM.
- ``Probe``: samples the daemon's ``/readyz`` and ``/metrics`` a few times a second.
- ``judge()``: per canary, the announced sequence against the made one: LOST, DUPLICATED,
  INVENTED, OUT OF ORDER, MAX DELAY; ``Row`` / ``format_table`` print the result.

How ``judge`` classifies, per canary, after dropping exact resends (a request whose
``X-Canarywatch-Idempotency-Key`` was already received: an allowed at-least-once resend):

1. the longest common subsequence of announced and made ``(transition, detail)`` is in order;
2. an announcement outside it that names a made transition nobody else announced, under the
   daemon's id for that same rollout (as the in-order matches show it), is OUT OF ORDER (it is
   matched to the made occurrence nearest before its receipt); under another rollout's id it
   is not that transition (a rollback of rollout 1 announced for rollout 2 is INVENTED, and the
   rollback of rollout 1 LOST);
3. any other announcement is DUPLICATED when another announcement of the same canary carries
   the same ``(rollout, transition, detail)`` (the same step announced again under a new key),
   else INVENTED (a transition Flagger did not make: an extra verdict, a phantom rollout);
4. a made transition no announcement matched is LOST.

MAX DELAY is receipt minus the moment the simulator made the transition, over every matched
announcement (reported, never asserted). The one documented discrepancy (a ``no-traffic``
announced as ``halted`` when the Canary status showed the failed check before the Event) is
reported as KNOWN, like ``test_api_faults`` does, not as LOST + INVENTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from tests.support.webhook_receiver import Captured, WebhookReceiver

from canarywatch.model import SELF_NAMESPACE
from canarywatch.simulator import FaultPlan, SimulatedApiServer, Store
from canarywatch.simulator.event_recorder import COMBINED_PREFIX
from canarywatch.simulator.flagger import FINALISING, FlaggerSimulator, SimulatedCanary
from canarywatch.simulator.scenarios import SCENARIOS, Pace
from canarywatch.simulator.store import ApiError, Change

IDEMPOTENCY_HEADER = "X-Canarywatch-Idempotency-Key"
_LABEL = re.compile(r'(\w+)=\\?"([^"\\]*)\\?"')
"""``name="value"`` in a group key (the log escapes the quotes)."""
TransitionKey = tuple[str, str]
"""``(transition, detail)`` as the scenarios name them."""


# -- what Flagger did ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Made:
    """One transition the simulated Flagger made."""

    canary: str
    transition: str
    detail: str
    at: float
    """``time.monotonic()`` right after the tick wrote its Events and status."""
    rollout: int
    """Per canary: 1 for the first ``revision-detected`` of the run, 2 for the next, ..."""
    step: str
    revisions: tuple[int, int] = (0, 0)
    """The store's revision before and after the tick: its writes are in ``(before, after]``."""

    @property
    def key(self) -> TransitionKey:
        return (self.transition, self.detail)


@dataclass(slots=True)
class _Flow:
    """Per canary, the conditions an announcement depends on (open ones are not re-announced)."""

    rollout: int = 0
    readiness_open: bool = False
    analysis_open: bool = False
    gates_open: set[str] = field(default_factory=set)

    def start_rollout(self) -> None:
        self.rollout += 1
        self.readiness_open = self.analysis_open = False

    def end_rollout(self) -> None:
        self.readiness_open = self.analysis_open = False
        self.gates_open.clear()


class Truth:
    """Every tick the scenarios took (``steps``) and every transition it made (``made``)."""

    def __init__(self) -> None:
        self.made: list[Made] = []
        self.steps: list[tuple[float, str, str]] = []
        """``(at, canary, step)`` of every traced call, transitions or not."""
        self.unmapped: list[str] = []
        self._flows: dict[str, _Flow] = {}

    def record(
        self,
        canary: SimulatedCanary,
        step: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        revisions: tuple[int, int] = (0, 0),
    ) -> None:
        now = time.monotonic()
        key = canary.key
        self.steps.append((now, key, step))
        flow = self._flows.setdefault(key, _Flow())
        made: list[TransitionKey] = []

        def forward(transition: str, detail: str = "") -> None:
            flow.readiness_open = False
            made.append((transition, detail))

        def opens(transition: str, *, analysis: bool) -> None:
            if analysis and not flow.analysis_open:
                flow.analysis_open = True
                made.append((transition, ""))
            if not analysis and not flow.readiness_open:
                flow.readiness_open = True
                made.append((transition, ""))

        def arg(name: str, default: Any) -> Any:
            return args[0] if args else kwargs.get(name, default)

        if step == "initialize":
            if kwargs.get("primary_ready", True):
                forward("initialized")
            else:
                opens("not-ready", analysis=False)
        elif step == "new_revision":
            flow.start_rollout()
            forward("revision-detected")
        elif step == "wait_for_approval":
            gate = str(arg("gate", "rollout"))
            if gate not in flow.gates_open:
                flow.gates_open.add(gate)
                made.append(("awaiting-approval", gate))
        elif step == "approve":
            gate = str(arg("gate", "rollout"))
            flow.gates_open.discard(gate)
            forward("approved", gate)
            if gate == "rollout":
                flow.start_rollout()
                forward("revision-detected")
            elif gate == "promotion":
                forward("promoting")
            else:
                flow.analysis_open = False
                forward("weight-advanced", str(canary.routes[1]))
        elif step == "not_ready":
            opens("not-ready", analysis=False)
        elif step == "start_analysis" and canary.iterations_total == 0:
            if kwargs.get("pre_rollout_error") is not None:
                opens("halted", analysis=True)
            else:
                forward("analysis-started")
                forward("weight-advanced", str(canary.routes[1]))
        elif step == "advance":
            flow.analysis_open = False
            forward("weight-advanced", str(canary.routes[1]))
        elif step == "halt_metric":
            opens("halted", analysis=True)
        elif step == "halt_no_traffic":
            opens("no-traffic", analysis=True)
        elif step == "promote" and canary.iterations_total == 0:
            forward("promoting")
        elif step == "finalise":
            if canary.phase == FINALISING:
                forward("finalising")
        elif step == "succeed":
            forward("promoted")
            flow.end_rollout()
        elif step == "rollback":
            made.append(("rolled-back", ""))
            flow.end_rollout()
        elif step not in ("tick", "deploy", "delete"):
            self.unmapped.append(f"{key}: {step}")
        for transition, detail in made:
            self.made.append(Made(key, transition, detail, now, flow.rollout, step, revisions))

    def per_canary(self) -> dict[str, list[Made]]:
        out: dict[str, list[Made]] = {}
        for made in self.made:
            out.setdefault(made.canary, []).append(made)
        return out

    def count(self, canary: str | None = None, step: str | None = None) -> int:
        """How many traced ticks (of ``canary``, named ``step``) were taken so far."""
        return sum(
            1
            for _, c, s in self.steps
            if (canary is None or c == canary) and (step is None or s == step)
        )

    def check(self, expected: Mapping[str, Sequence[TransitionKey]]) -> str:
        """Empty when the recorded transitions are exactly ``expected``; else what differs."""
        problems = [f"the truth model does not know the step {u}" for u in self.unmapped]
        got = {c: [m.key for m in made] for c, made in self.per_canary().items()}
        want = {c: list(keys) for c, keys in expected.items() if keys}
        if got != want:
            problems.append(f"made {got}\n  but the scenarios declare {want}")
        return "\n".join(problems)


def expected_of(names: Iterable[str]) -> dict[str, list[TransitionKey]]:
    """The scenarios' declared transitions, per canary, for ``names`` played in that order."""
    out: dict[str, list[TransitionKey]] = {}
    for name in names:
        for canary, keys in SCENARIOS[name].expected.items():
            out.setdefault(canary, []).extend(keys)
    return out


class TracedCanary:
    """A ``SimulatedCanary`` whose public ticks are recorded in a ``Truth`` after they ran."""

    TRACED = frozenset(
        {
            "initialize", "tick", "deploy", "new_revision", "wait_for_approval", "approve",
            "not_ready", "start_analysis", "advance", "iteration", "halt_metric",
            "halt_no_traffic", "halt_webhook", "promote", "finalise", "succeed", "rollback",
            "promotion_failed", "terminate", "suspended",
        }
    )  # fmt: skip

    def __init__(self, canary: SimulatedCanary, truth: Truth) -> None:
        self._canary = canary
        self._truth = truth

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._canary, name)
        if name not in self.TRACED or not callable(value):
            return value

        def step(*args: Any, **kwargs: Any) -> Any:
            store = self._canary.sim.store
            before = store.resource_version
            result = value(*args, **kwargs)  # a tick Flagger could not take raises: not made
            revisions = (before, store.resource_version)
            self._truth.record(self._canary, name, args, kwargs, revisions)
            return result

        return step


class TracedFlagger(FlaggerSimulator):
    """``FlaggerSimulator`` handing out ``TracedCanary``s; ``truth`` is what it did."""

    def __init__(self, store: Store, truth: Truth, **kwargs: Any) -> None:
        super().__init__(store, store.clock, **kwargs)
        self.truth = truth

    def create_canary(self, namespace: str, name: str, **kwargs: Any) -> SimulatedCanary:
        canary = super().create_canary(namespace, name, **kwargs)
        return TracedCanary(canary, self.truth)  # type: ignore[return-value]


class Gate:
    """A ``Pace`` the harness can pause between two ticks (Flagger waits, the cluster does not).

    ``hold()`` makes the script stop at its next ``pace`` call; ``release()`` lets it go on.
    ``checkpoint(name)`` is for scripts of this module: it records ``name`` and stops there when
    the harness asked for it with ``stop_at(name)``."""

    def __init__(self, inner: Pace) -> None:
        self._inner = inner
        self._open = asyncio.Event()
        self._open.set()
        self._stop_at: set[str] = set()
        self.reached: dict[str, asyncio.Event] = {}
        self.waiting = asyncio.Event()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def stop_at(self, name: str) -> asyncio.Event:
        self._stop_at.add(name)
        return self.reached.setdefault(name, asyncio.Event())

    async def checkpoint(self, name: str) -> None:
        self.reached.setdefault(name, asyncio.Event()).set()
        if name in self._stop_at:
            self.hold()
        await self._wait()

    async def pace(self, seconds: float) -> None:
        await self._wait()
        await self._inner(seconds)

    async def _wait(self) -> None:
        if not self._open.is_set():
            self.waiting.set()
            await self._open.wait()
            self.waiting.clear()


# -- what the receivers got ----------------------------------------------------------------------


Arrival = Captured
"""One request the webhook receiver got: when, what it answered, the headers and the body."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """One event of one firing notification the receiver accepted."""

    index: int
    at: float
    canary: str
    transition: str
    detail: str
    rollout: str
    occurred_at: str | None
    idempotency_key: str
    made_at: str = ""
    """The notification's ``at`` (when the daemon made it)."""
    observed_at: str = ""
    sources: tuple[str, ...] = ()

    def describe(self, t0: float) -> str:
        return (
            f"receipt #{self.index} at +{self.at - t0:.2f} s, key {self.idempotency_key[:12]}, "
            f"made {self.made_at}, observed {self.observed_at}, occurred {self.occurred_at}, "
            f"sources {','.join(self.sources)}"
        )

    @property
    def key(self) -> TransitionKey:
        return (self.transition, self.detail)

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.rollout, self.transition, self.detail)


@dataclass(slots=True)
class Announced:
    scenario: list[Announcement]
    self_events: list[str]
    """``cluster-unreachable`` / ``cluster-reachable`` ... in order (not compared)."""
    resends: int
    """Requests dropped as exact resends (same idempotency key, allowed)."""
    unique_requests: int
    resolved: int
    repeats: int


def announced(arrivals: Iterable[Arrival]) -> Announced:
    seen: set[str] = set()
    scenario: list[Announcement] = []
    self_events: list[str] = []
    resends = unique = resolved = repeats = 0
    for arrival in sorted(arrivals, key=lambda a: a.at):
        key = arrival.headers.get(IDEMPOTENCY_HEADER, "")
        if key and key in seen:
            resends += 1
            continue
        seen.add(key)
        unique += 1
        notification = arrival.json()["notification"]
        if notification["status"] != "firing":
            resolved += 1
            continue
        if notification.get("repeat"):
            repeats += 1
            continue
        for event in notification["events"]:
            if event["namespace"] == SELF_NAMESPACE:
                self_events.append(event["transition"])
                continue
            scenario.append(
                Announcement(
                    index=len(scenario),
                    at=arrival.at,
                    canary=event["canary"],
                    transition=event["transition"],
                    detail=event["detail"] or "",
                    rollout=str(event.get("rollout", "")),
                    occurred_at=event.get("occurred_at"),
                    idempotency_key=key,
                    made_at=str(notification.get("at", "")),
                    observed_at=str(event.get("observed_at", "")),
                    sources=tuple(event.get("sources") or ()),
                )
            )
    return Announced(scenario, self_events, resends, unique, resolved, repeats)


# -- the verdict -------------------------------------------------------------------------------

KINDS = ("LOST", "DUPLICATED", "INVENTED", "OUT OF ORDER")

EVENTS_ONLY = frozenset({"analysis-started", "not-ready", "webhook-failed", "suspended"})
"""Transitions the Canary status cannot report (docs/sources.md): while the Events watch is
stalled or cut off, nobody can; when it returns they are true, only late. Announcing them then
puts them after later steps the status did report: counted as known, not as out of order (the
alternative, holding every other source's news until the slowest catches up, would delay a
rollback for as long as a watch is stalled)."""
SOURCES_WITH_OWN_TIME = frozenset({"kubernetes-events", "flagger-webhook"})


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    canary: str
    transition: str
    detail: str
    rollout: str
    """The daemon's rollout id (announcements) or ``#n``, the n-th rollout Flagger made."""
    note: str = ""

    def __str__(self) -> str:
        what = self.transition + (f"[{self.detail}]" if self.detail else "")
        return f"{self.kind}: {self.canary} {what} rollout {self.rollout} {self.note}".rstrip()


@dataclass(slots=True)
class Verdict:
    made: int
    announced: Announced
    findings: list[Finding]
    known: list[str]
    max_delay_s: float
    max_delay_of: str
    sequences: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Per canary: what Flagger made and what was announced, in order (for the evidence)."""

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    @property
    def clean(self) -> bool:
        return not self.findings


def _lcs(
    left: Sequence[TransitionKey],
    right: Sequence[TransitionKey],
    *,
    late_first: Callable[[TransitionKey], bool] = lambda key: False,
) -> list[tuple[int, int]]:
    """A longest common subsequence of ``left`` (announced) and ``right`` (made), as index
    pairs. Where two are equally long, a made ``right`` item ``late_first`` accepts is the one
    left out (its announcement is then judged late), not the announcement it swapped with: a
    status step announced before an Events-only step its watch delivered late is the documented
    known case, not a status step out of order (which one the tie dropped used to be chance)."""
    n, m = len(left), len(right)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            table[i][j] = (
                table[i + 1][j + 1] + 1
                if left[i] == right[j]
                else max(table[i + 1][j], table[i][j + 1])
            )
    pairs = []
    i = j = 0
    while i < n and j < m:
        if left[i] == right[j]:
            pairs.append((i, j))
            i += 1
            j += 1
        elif table[i + 1][j] > table[i][j + 1]:
            i += 1
        elif table[i + 1][j] < table[i][j + 1] or late_first(right[j]):
            j += 1
        else:
            i += 1
    return pairs


def judge(truth: Truth, arrivals: Iterable[Arrival]) -> Verdict:
    """Compare what Flagger made with what the receiver accepted (see the module docstring);
    requests it refused (the outage switch) count as never received."""
    got = announced(a for a in arrivals if 200 <= a.status < 300)
    made_by = truth.per_canary()
    said_by: dict[str, list[Announcement]] = {}
    for a in got.scenario:
        said_by.setdefault(a.canary, []).append(a)
    findings: list[Finding] = []
    known: list[str] = []
    max_delay, max_delay_of = float("-inf"), ""
    t0 = min([m.at for m in truth.made] + [a.at for a in got.scenario], default=0.0)
    sequences: dict[str, tuple[str, str]] = {}
    for canary in sorted(set(made_by) | set(said_by)):
        made = made_by.get(canary, [])
        said = said_by.get(canary, [])
        pairs = _lcs(
            [a.key for a in said],
            [m.key for m in made],
            late_first=lambda key: key[0] in EVENTS_ONLY,
        )
        match: dict[int, int] = dict(pairs)
        taken = {j for _, j in pairs}
        ids: dict[int, set[str]] = {}  # Flagger's rollout -> the daemon's ids for it (in order)
        for i, j in pairs:
            ids.setdefault(made[j].rollout, set()).add(said[i].rollout)
        late: list[Finding] = []
        for i, a in enumerate(said):
            if i in match:
                continue
            free = [
                j
                for j, m in enumerate(made)
                if j not in taken
                and m.key == a.key
                and a.rollout in ids.get(m.rollout, {a.rollout})  # not another rollout's
            ]
            if not free:
                continue
            before = [j for j in free if made[j].at <= a.at]
            j = before[-1] if before else free[0]
            match[i] = j
            taken.add(j)
            if a.transition in EVENTS_ONLY and set(a.sources) <= SOURCES_WITH_OWN_TIME:
                known.append(
                    f"{canary}: {a.transition} announced late (made {j + 1}. of {len(made)}, "
                    f"announced {i + 1}. of {len(said)}): only the Events could report it, and "
                    "their watch was behind"
                )
                continue
            late.append(
                Finding(
                    "OUT OF ORDER", canary, a.transition, a.detail, a.rollout,
                    f"(Flagger made it {j + 1}. of {len(made)}, announced {i + 1}. of {len(said)})",
                )
            )  # fmt: skip
        findings += late
        extras: list[Finding] = []
        for i, a in enumerate(said):
            if i in match:
                continue
            twins = [b for b in said if b is not a and b.identity == a.identity]
            note = f"({a.describe(t0)})"
            if twins:
                note += f"; same step as ({twins[0].describe(t0)})"
            kind = "DUPLICATED" if twins else "INVENTED"
            extras.append(Finding(kind, canary, a.transition, a.detail, a.rollout, note))
        lost = [
            Finding("LOST", canary, m.transition, m.detail, f"#{m.rollout}", f"(made by {m.step})")
            for j, m in enumerate(made)
            if j not in taken
        ]
        # The documented status-first halt: a no-traffic announced as halted, once.
        for miss in [f for f in lost if f.transition == "no-traffic"]:
            swapped = next((f for f in extras if f.transition == "halted"), None)
            if swapped is not None:
                lost.remove(miss)
                extras.remove(swapped)
                known.append(f"{canary}: no-traffic of Flagger's rollout {miss.rollout} announced "
                             f"as halted (rollout {swapped.rollout})")  # fmt: skip
        findings += extras + lost
        sequences[canary] = (
            ", ".join(f"{m.transition}{_detail(m.detail)}" for m in made),
            ", ".join(f"{a.transition}{_detail(a.detail)}/r{a.rollout}" for a in said),
        )
        for i, j in match.items():
            delay = said[i].at - made[j].at
            if delay > max_delay:
                max_delay = delay
                max_delay_of = f"{canary} {made[j].transition}[{made[j].detail}]"
    max_delay = max(max_delay, 0.0) if max_delay_of == "" else max_delay
    return Verdict(len(truth.made), got, findings, known, max_delay, max_delay_of, sequences)


FOLDABLE_STEPS = frozenset(
    {
        "analysis-started",
        "weight-advanced",
        "iteration-advanced",
        "promoting",
        "finalising",
        "halted",
    }
)
"""One-shot steps a folded-and-overwritten Event can take with it (README, "Folded Events"):
verdicts and conditions are always recovered from the Canary status."""


def _status_shows(made: Made, status: Mapping[str, Any]) -> bool:
    """Whether the Canary ``status`` still shows ``made`` (a relist could recover it from it)."""
    match made.transition:
        case "weight-advanced":
            return str(status.get("canaryWeight")) == made.detail
        case "iteration-advanced":
            return str(status.get("iterations")) == made.detail
        case "promoting":
            return status.get("phase") == "Promoting"
        case "finalising":
            return status.get("phase") == FINALISING
        case "halted":
            return int(status.get("failedChecks") or 0) > 0
        case "analysis-started":
            return False  # the status has no field for it (EVENTS_ONLY)
        case _:
            return True  # not a foldable step: never excused


def _same_object(change: Change, other: Change) -> bool:
    meta, theirs = change.object["metadata"], other.object["metadata"]
    return bool(meta["namespace"] == theirs["namespace"] and meta["name"] == theirs["name"])


def unseen_fold(made: Made, store: Store, sights: Sequence[tuple[int, float]]) -> tuple[bool, str]:
    """Whether no daemon process could ever have seen ``made`` (README, "Folded Events"), with
    the proof, or why that is not proven. All of it must hold, judged on the simulated store's
    own history:

    - no process was watching when Flagger made it (no ``sights`` span covers the tick);
    - every Event the tick wrote was folded by client-go into a "(combined from similar
      events)" Event, and the next message overwrote it before any process listed again;
    - the Canary status at that next list no longer shows the step.

    A compacted history proves nothing."""
    before, after = made.revisions
    if (before, after) == (0, 0) or made.transition not in FOLDABLE_STEPS:
        return False, "not a foldable step"
    watching = [(listed, until) for listed, until in sights if listed <= after <= until]
    if watching:
        return False, f"made at revision {after} while a process watched {watching[0]}"
    later = [listed for listed, _ in sights if listed > after]
    if not later:
        return False, f"made at revision {after}, and no process listed after it"
    looked = min(later)
    namespace, name = made.canary.split("/", 1)
    try:
        history = store.changes_since("events", before)
        canaries = store.snapshot("canaries", looked, namespace)
    except ApiError:
        return False, "the store's history was compacted"
    written = [
        c
        for c in history
        if c.rv <= after
        and c.object.get("involvedObject", {}).get("name") == name
        and c.object["metadata"]["namespace"] == namespace
    ]
    for write in written:
        message = str(write.object.get("message", ""))
        if not message.startswith(COMBINED_PREFIX):
            return False, f"its Event {message!r} (revision {write.rv}) was not folded"
        over = next((c for c in history if c.rv > write.rv and _same_object(c, write)), None)
        if over is None or over.rv > looked:
            return False, (
                f"its folded Event (revision {write.rv}) was still there when a process listed "
                f"at revision {looked}"
            )
    canary = next((c for c in canaries if c["metadata"]["name"] == name), None)
    status = (canary or {}).get("status") or {}  # deleted meanwhile: it shows nothing
    if _status_shows(made, status):
        shown = {k: status.get(k) for k in ("phase", "canaryWeight", "iterations", "failedChecks")}
        return False, f"the Canary status still showed it at revision {looked}: {shown}"
    killed = max([until for _, until in sights if until < after], default=0)
    return True, (
        f"{made.canary} {made.transition}{_detail(made.detail)} of rollout #{made.rollout} "
        f"(revision {after}): no process watched between revision {killed:.0f} and the next "
        f"list at {looked}; its {len(written)} folded Event write(s) were overwritten before "
        "that list, and the status then no longer showed it"
        + ("" if canary is not None else " (the Canary was deleted)")
    )


def excuse_unseen_folds(
    verdict: Verdict, truth: Truth, store: Store, daemons: Iterable[DaemonProcess]
) -> list[str]:
    """Move each LOST step that ``unseen_fold`` proves nobody could have seen from the findings
    to ``known`` (the documented limit of issue 12, item 10); returns the proofs. A LOST step
    it cannot excuse keeps its finding, with why in its note."""
    sights = [span for daemon in daemons for span in daemon.sights()]
    proofs: list[str] = []
    used: set[int] = set()
    for finding in [f for f in verdict.findings if f.kind == "LOST"]:
        why: list[str] = []
        for index, made in enumerate(truth.made):
            if index in used or (
                made.canary,
                made.transition,
                made.detail,
                f"#{made.rollout}",
            ) != (finding.canary, finding.transition, finding.detail, finding.rollout):
                continue
            proven, text = unseen_fold(made, store, sights)
            if proven:
                used.add(index)
                verdict.findings.remove(finding)
                verdict.known.append(f"unrecoverable (folded while nobody watched): {text}")
                proofs.append(text)
                break
            why.append(text)
        else:
            if why and finding.transition in FOLDABLE_STEPS:
                place = verdict.findings.index(finding)
                note = f"{finding.note}; not excused: {'; '.join(why)}".lstrip("; ")
                verdict.findings[place] = dataclasses.replace(finding, note=note)
    return proofs


def _detail(detail: str) -> str:
    return f"[{detail}]" if detail else ""


# -- the simulated cluster, the daemon, its health -----------------------------------------------


class Cluster:
    """The simulated API server, restartable on the same port with the same store and plan."""

    def __init__(self, store: Store, plan: FaultPlan) -> None:
        self.store = store
        self.plan = plan
        self.api = SimulatedApiServer(store, faults=plan)
        self.port = 0
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.api = SimulatedApiServer(self.store, faults=self.plan, port=self.port)
        await self.api.start()
        self.port = int(self.api.url.rsplit(":", 1)[1])

    async def stop(self) -> None:
        self.requests.extend(self.api.requests)
        await self.api.close()

    async def restart(self, down_s: float = 0.0) -> None:
        """Every open watch ends (a silent one too); reconnects are refused for ``down_s``."""
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()


class DaemonProcess:
    """``python -m canarywatch run`` as our child process; its JSON logs, one file per run."""

    def __init__(
        self,
        name: str,
        config: Path,
        workdir: Path,
        port: int,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.workdir = workdir
        self.port = port
        self.env = dict(env or {})
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}-0.log"
        self.exits: list[tuple[int, int | None, str]] = []
        """``(run, exit code, how)``: ``killed`` (by us), ``stopped`` (SIGTERM), ``exited``."""
        self.revision: Callable[[], int] | None = None
        """The simulated store's current revision (``Run.daemon`` sets it)."""
        self.killed_at: dict[int, int] = {}
        """Run -> the store's revision when it got SIGKILL (what it could have seen, at most)."""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.check_alive()
        self.runs += 1
        self.log_path = self.workdir / f"{self.name}-{self.runs}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "canarywatch", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )

    def check_alive(self) -> None:
        """Record the exit of a process that ended by itself (a crash is a finding)."""
        ended = self.process is not None and self.process.poll() is not None
        if ended and (not self.exits or self.exits[-1][0] != self.runs):
            assert self.process is not None
            self.exits.append((self.runs, self.process.returncode, "exited"))

    def kill(self) -> None:
        """SIGKILL our own child (by its pid) and reap it."""
        assert self.process is not None
        self.check_alive()
        if self.process.poll() is None:
            if self.revision is not None:
                self.killed_at[self.runs] = self.revision()
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.exits.append((self.runs, self.process.returncode, "killed"))

    async def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (graceful drain); SIGKILL only if it does not exit within ``timeout_s``."""
        if self.process is None:
            return None
        self.check_alive()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, timeout_s)
                self.exits.append((self.runs, self.process.returncode, "stopped"))
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def unexpected_exits(self) -> list[str]:
        self.check_alive()
        return [
            f"{self.name} run {run} exited by itself with {code}"
            for run, code, how in self.exits
            if how == "exited" or (how == "stopped" and code != 0)
        ]

    def sights(self) -> list[tuple[int, float]]:
        """The store revisions this process's Events watch could see, as spans: per run, from
        its first list (its ``watch_listed`` log line) to its SIGKILL (``inf``: not killed),
        cut where the watch was told its history is gone (``watch_relisted``, with the last
        version it had passed on) until its relist (the next ``watch_listed``). A run killed
        before it listed saw nothing. Generous on purpose (a watch that lagged counts as
        seeing), since ``unseen_fold`` excuses only what no run could have seen."""
        out: list[tuple[int, float]] = []
        for run in range(1, self.runs + 1):
            start: int | None = None
            for line in self.log_text(run).splitlines():
                if '"resource": "events"' not in line:
                    continue
                if '"watch_listed"' in line and start is None:
                    start = int(json.loads(line)["resource_version"])
                elif '"watch_relisted"' in line and start is not None:
                    seen = json.loads(line).get("resource_version")
                    if seen is None:  # gone before it passed anything on: nothing seen since
                        seen = start
                    out.append((start, float(seen)))
                    start = None
            if start is not None:
                out.append((start, float(self.killed_at.get(run, math.inf))))
        return out

    def log_text(self, run: int | None = None) -> str:
        path = self.log_path if run is None else self.workdir / f"{self.name}-{run}.log"
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[tuple[str, str]]:
        """``(file name, line)`` of every run, in order."""
        out = []
        for run in range(1, self.runs + 1):
            name = f"{self.name}-{run}.log"
            out += [(name, line) for line in self.log_text(run).splitlines()]
        return out

    async def wait_logged(self, event: str, timeout_s: float = 30.0) -> None:
        """Until this run logged ``event`` (e.g. ``sources_listed``)."""
        needle = f'"event": "{event}"'
        async with asyncio.timeout(timeout_s):
            while needle not in self.log_text():
                if not self.running:
                    self.check_alive()
                    raise AssertionError(
                        f"{self.name} exited before {event}:\n{self.log_text()[-3000:]}"
                    )
                await asyncio.sleep(0.05)


@dataclass(frozen=True, slots=True)
class Series:
    """A gauge the matrix reads: every series named ``name`` whose labels include ``labels``
    (``canarywatch_source_up{cluster="sim"}`` covers each watch source of the cluster)."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return self.name + "{" + ",".join(f'{k}="{v}"' for k, v in self.labels) + "}"


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    daemon: str
    ready: bool | None
    """``None``: no answer (not started, killed)."""
    checks: Mapping[str, Any]
    metrics: tuple[tuple[str, Mapping[str, str], float], ...] = ()
    """``(name, labels, value)`` of the few series the matrix reads."""

    def value(self, series: Series) -> float | None:
        """The lowest value among the matching series (one down is down); ``None``: none."""
        values = [
            value
            for name, labels, value in self.metrics
            if name == series.name and all(labels.get(k) == v for k, v in series.labels)
        ]
        return min(values, default=None)


WATCHED_SERIES = (
    "canarywatch_source_up",
    "canarywatch_state_store_writable",
    "canarywatch_leader",
    "canarywatch_state_held_writes",
)


def _series(text: str) -> tuple[tuple[str, Mapping[str, str], float], ...]:
    return tuple(
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in WATCHED_SERIES
    )


SOURCE_UP = Series("canarywatch_source_up", (("cluster", "sim"),))
STATE_WRITABLE = Series("canarywatch_state_store_writable")
LEADER = Series("canarywatch_leader")


class Probe:
    """Samples each daemon's ``/readyz`` and ``/metrics`` every ``interval_s`` until closed."""

    def __init__(self, daemons: Sequence[DaemonProcess], interval_s: float = 0.2) -> None:
        self.daemons = list(daemons)
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Probe:
        self._task = asyncio.create_task(self._run(), name="probe")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                for daemon in self.daemons:
                    self.samples.append(await self._sample(http, daemon))
                await asyncio.sleep(self.interval_s)

    async def _sample(self, http: aiohttp.ClientSession, daemon: DaemonProcess) -> Sample:
        base = f"http://127.0.0.1:{daemon.port}"
        now = time.monotonic()
        if not daemon.running:
            return Sample(now, daemon.name, None, {})
        try:
            async with http.get(f"{base}/readyz") as resp:
                body = await resp.json()
                ready = resp.status == 200
            async with http.get(f"{base}/metrics") as resp:
                metrics = _series(await resp.text())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return Sample(now, daemon.name, None, {})
        return Sample(now, daemon.name, ready, body.get("checks", {}), metrics)

    def latest(self, daemon: str) -> Sample | None:
        return next((s for s in reversed(self.samples) if s.daemon == daemon), None)

    def between(self, start: float, end: float, daemon: str | None = None) -> list[Sample]:
        return [
            s
            for s in self.samples
            if start <= s.at <= end and (daemon is None or s.daemon == daemon)
        ]

    async def until(
        self, predicate: Callable[[Sample], bool], daemon: str, timeout_s: float
    ) -> Sample | None:
        """The first new sample of ``daemon`` satisfying ``predicate`` (``None`` on timeout)."""
        start = len(self.samples)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while True:
                    for sample in self.samples[start:]:
                        if sample.daemon == daemon and predicate(sample):
                            return sample
                    await asyncio.sleep(0.05)
        return None


def not_ready_and_down(gauge: Series, down: float = 0.0) -> Callable[[Sample], bool]:
    """A sample in which ``/readyz`` is 503 and ``gauge`` reads ``down``."""
    return lambda s: s.ready is False and s.value(gauge) == down


@dataclass(slots=True)
class Window:
    """A span in which a fault prevented truth; ``unready_at``: first not-ready sample in it."""

    name: str
    start: float
    end: float = 0.0
    gauge: Series = SOURCE_UP
    first_unready: float | None = None

    def judge(self, probe: Probe, daemon: str) -> str:
        """Empty if ``/readyz`` was 503 and ``gauge`` 0 during the window; else the evidence."""
        samples = probe.between(self.start, self.end or time.monotonic(), daemon)
        hits = [s for s in samples if not_ready_and_down(self.gauge)(s)]
        if hits:
            self.first_unready = hits[0].at
            return ""
        answered = [s for s in samples if s.ready is not None]
        shown = [(round(s.at - self.start, 1), s.ready, s.value(self.gauge)) for s in answered][
            :: max(1, len(answered) // 12)
        ]
        span = (self.end or time.monotonic()) - self.start
        return (
            f"{self.name}: /readyz never 503 with {self.gauge} == 0 in {span:.1f} s "
            f"({len(answered)} samples; (t, ready, gauge): {shown})"
        )


# -- reporting --------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    fault: str
    seed: int
    verdict: Verdict
    readiness: str
    """``ok (503 after 5.8 s)`` / ``FAILED`` / ``n/a``."""
    wall_s: float
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        v = self.verdict
        return [
            self.fault,
            str(self.seed),
            str(v.made),
            str(len(v.announced.scenario)),
            str(v.announced.resends),
            str(v.count("LOST")),
            str(v.count("DUPLICATED")),
            str(v.count("INVENTED")),
            str(v.count("OUT OF ORDER")),
            f"{v.max_delay_s:.2f}",
            str(len(v.known)),
            self.readiness,
            f"{self.wall_s:.0f}",
        ]


HEADER = [
    "fault", "seed", "made", "announced", "resends", "LOST", "DUP", "INVENTED", "OUT-OF-ORDER",
    "MAX DELAY s", "known", "not ready during fault", "wall s",
]  # fmt: skip


def dump_arrivals(arrivals: Iterable[Arrival], path: Path) -> None:
    """Every request the receiver got, one JSON line each (time, answer, key, body)."""
    with path.open("w", encoding="utf-8") as out:
        for a in arrivals:
            line = {"at": a.at, "status": a.status, "key": a.headers.get(IDEMPOTENCY_HEADER)}
            out.write(json.dumps({**line, "body": a.json()}, sort_keys=True) + "\n")


def dump_truth(truth: Truth, path: Path) -> None:
    """Every transition the simulated Flagger made, one JSON line each."""
    with path.open("w", encoding="utf-8") as out:
        for m in truth.made:
            out.write(json.dumps(_made_json(m), sort_keys=True))
            out.write("\n")


def _made_json(m: Made) -> dict[str, object]:
    return {
        "at": m.at,
        "canary": m.canary,
        "transition": m.transition,
        "detail": m.detail,
        "rollout": m.rollout,
        "step": m.step,
    }


def format_table(rows: Iterable[Row]) -> str:
    lines = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


LIFECYCLE = frozenset(
    {
        "daemon_started", "sources_listed", "outbox_resumed", "backlog_read_back",
        "leadership_taken_over", "leader_elected", "watch_relisted", "watch_recovered",
        "step_recovered_from_status", "shutdown_started", "drain_finished",
        "state_write_failed", "state_writes_flushed",
    }
)  # fmt: skip
"""Daemon log events that frame a finding: restarts, resumes, takeovers, relists."""
_QUIET_KEYS = frozenset({"component", "level", "timestamp", "event"})


def _compact(name: str, line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return f"{name}: {line[:300]}"
    fields = " ".join(f"{k}={v}" for k, v in entry.items() if k not in _QUIET_KEYS)
    stamp = str(entry.get("timestamp", ""))[11:23]
    return f"{name} {stamp} {entry.get('event')} {fields}"[:400]


def _transition_of(line: str) -> tuple[str, str]:
    """``(canary, transition)`` a daemon log line is about (its fields or its group key)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return ("", "")
    group = str(entry.get("group_key", ""))
    if group:
        labels = dict(_LABEL.findall(group))
        canary = f"{labels.get('namespace', '')}/{labels.get('canary', '')}"
        return (canary, labels.get("transition", ""))
    return (str(entry.get("canary", "")), str(entry.get("transition", "")))


def explain(row: Row, daemons: Sequence[DaemonProcess], *, per_finding: int = 12) -> str:
    """The findings; per canary, what was made and what was announced; then the daemon log
    lines about each finding's transition (normalised, deduplicated, inhibited, flushed,
    sent...), the lifecycle lines that frame them, and every warning or error."""
    v = row.verdict
    parts = [f"{row.fault} seed {row.seed}:"]
    parts += [f"  {f}" for f in v.findings]
    parts += [f"  KNOWN: {k}" for k in v.known]
    parts += [f"  note: {n}" for n in row.notes]
    if v.max_delay_of:
        parts.append(f"  max delay {v.max_delay_s:.1f} s: {v.max_delay_of}")
    wanted = sorted({(f.canary, f.transition) for f in v.findings})
    if not wanted:
        return "\n".join(parts)
    for canary in sorted({c for c, _ in wanted}):
        made, said = v.sequences.get(canary, ("", ""))
        parts += [f"  {canary} made:      {made}", f"  {canary} announced: {said}"]
    lines = [(name, line) for daemon in daemons for name, line in daemon.log_lines()]
    about: dict[tuple[str, str], list[str]] = {key: [] for key in wanted}
    frame: list[str] = []
    loud: list[str] = []
    for name, line in lines:
        key = _transition_of(line)
        if key in about:
            about[key].append(_compact(name, line))
        event = line.split('"event": "', 1)[-1].split('"', 1)[0]
        if event in LIFECYCLE:
            frame.append(_compact(name, line))
        elif '"level": "error"' in line or '"level": "warning"' in line:
            loud.append(_compact(name, line))
    for (canary, transition), found in about.items():
        parts.append(f"  daemon log about {canary} {transition}:")
        if len(found) > per_finding:  # the first and the last say most: start, then the end
            half = per_finding // 2
            found = [*found[:half], f"... {len(found) - 2 * half} more ...", *found[-half:]]
        parts += [f"    {line}" for line in found] or ["    (nothing)"]
    parts.append("  daemon lifecycle:")
    parts += [f"    {line}" for line in frame[:40]]
    if loud:
        parts.append("  warnings and errors:")
        parts += [f"    {line}" for line in loud[:20]]
    return "\n".join(parts)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(poll_s)
            return True
    return False


async def settle(
    receiver: WebhookReceiver,
    want: int,
    *,
    timeout_s: float,
    idle_s: float = 6.0,
    quiet_s: float = 2.0,
) -> None:
    """Until the receiver accepted ``want`` scenario announcements, or nothing arrived for
    ``idle_s`` (something is lost: do not wait out ``timeout_s``), or ``timeout_s`` is up;
    then until nothing new arrived for ``quiet_s`` (a late duplicate would show up)."""
    started = time.monotonic()

    def done() -> bool:
        now = time.monotonic()
        last = max([started, *(a.at for a in receiver.requests[-1:])])
        idle = now - last > idle_s
        return (
            idle
            or now - started > timeout_s
            or len(announced(receiver.accepted()).scenario) >= want
        )

    await wait_until(done, timeout_s + 1.0, poll_s=0.1)
    last = len(receiver.requests)
    quiet_since = time.monotonic()
    deadline = time.monotonic() + max(timeout_s, 10.0)
    while time.monotonic() - quiet_since < quiet_s and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if len(receiver.requests) != last:
            last = len(receiver.requests)
            quiet_since = time.monotonic()
