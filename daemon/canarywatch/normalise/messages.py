"""The catalogue of Flagger's lifecycle texts, and what canarywatch makes of each one.

Flagger reports its lifecycle only as free text (``recordEvent``). The same text reaches us twice:
as a Kubernetes Event and as an event-webhook body. This module is the one place that knows those
texts (``reference/flagger.md`` §3), so the Kubernetes-Event and webhook normalisers cannot
disagree about what a message means.

A message either names a transition (``reference/transitions.md``), is *known but informational*
(``MessageMatch.transition is None``), or is unknown (``classify`` returns ``None``). Each catalogue
entry records the Flagger versions that emit it. The versions are documentation only: an Event does
not say which Flagger wrote it, so no entry is skipped for its release.

The first entry whose pattern matches wins. ``classify_in_order`` says exactly that, trying every
entry in turn; ``classify`` gives the same answer faster by trying only the entries that could match
(``candidates``): those whose pattern begins with the message's first word, then those that can
begin with any word and whose required literal (``Entry.needs``) the message contains, in catalogue
order. ``tests/normalise/test_messages_index.py`` holds the two to the same answers.

Every format every Flagger release records (0.0.1 on) is listed, with what it means, in
``tests/normalise/flagger_messages.json``; ``tests/normalise/test_flagger_messages.py`` checks
each one against this catalogue. Old spellings map to the transition their current form has.

Messages written with ``%s.%s`` name an object as ``name.namespace``. Some name the Canary itself
and some name its target workload ("T" in the fact sheet). Only the second kind fills
``MessageMatch.target``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from canarywatch.model import (
    EMPTY_MAPPING,
    SEEN_BY,
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    Gate,
    Phase,
    SourceName,
    Transition,
)

COMBINED_PREFIX = "(combined from similar events): "
"""client-go's aggregation prefix once ≥ 10 distinct messages hit one object in 10 minutes."""

_PRIMARY_SUFFIX = "-primary"


def strip_aggregation(message: str) -> str:
    """The message without client-go's ``(combined from similar events):`` prefix."""
    while message.startswith(COMBINED_PREFIX):
        message = message[len(COMBINED_PREFIX) :]
    return message


@dataclass(frozen=True, slots=True)
class Facts:
    """What an entry's extractor reads out of the text, beyond the transition itself."""

    detail: str = ""
    weight: int | None = None
    failed_checks: int | None = None
    reason: str = ""
    target: str = ""


@dataclass(frozen=True, slots=True)
class MessageMatch:
    """What one Flagger message means.

    ``transition`` is ``None`` for known messages that are informational only: they are counted,
    never notified. ``phase`` is the phase the canary is in once the message has been recorded,
    when the message alone implies one.
    """

    entry: str
    transition: Transition | None
    phase: Phase | None = None
    detail: str = ""
    weight: int | None = None
    failed_checks: int | None = None
    reason: str = ""
    target: str = ""

    @property
    def informational(self) -> bool:
        return self.transition is None


def _no_facts(_: re.Match[str]) -> Facts:
    return Facts()


@dataclass(frozen=True, slots=True)
class Entry:
    """One message shape Flagger emits.

    ``since``/``until`` record which Flagger releases emit it (from the fact sheet). They are not
    used for matching, since an Event does not carry the Flagger version.

    ``first_words`` and ``needs`` only let ``classify`` skip entries that cannot match; they never
    change what matches. ``first_words`` lists every word (the text before the first space) a
    matching message can begin with, for a pattern that does not itself begin with one literal
    word (which ``first_words_of`` reads from it). ``needs`` is a literal every matching message
    contains, worth stating for a pattern that can begin with any word.
    """

    name: str
    pattern: re.Pattern[str]
    transition: Transition | None
    phase: Phase | None = None
    extract: Callable[[re.Match[str]], Facts] = field(default=_no_facts)
    since: str = "1.0.0"
    until: str | None = None
    first_words: tuple[str, ...] = ()
    needs: str = ""

    def match(self, message: str) -> MessageMatch | None:
        found = self.pattern.fullmatch(message)
        if found is None:
            return None
        facts = self.extract(found)
        return MessageMatch(
            entry=self.name,
            transition=self.transition,
            phase=self.phase,
            detail=facts.detail,
            weight=facts.weight,
            failed_checks=facts.failed_checks,
            reason=facts.reason,
            target=facts.target,
        )


def _ref(prefix: str = "") -> str:
    """``name.namespace`` as Flagger prints ``%s.%s``: a namespace is one DNS label, a name may
    contain dots, so the namespace is whatever follows the last dot."""
    return rf"(?P<{prefix}name>\S+)\.(?P<{prefix}ns>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"


REF = _ref()


def _p(text: str) -> re.Pattern[str]:
    # DOTALL: wrapped Go errors (``%v``) can span lines.
    return re.compile(text, re.DOTALL)


def _target(m: re.Match[str]) -> Facts:
    return Facts(target=m["name"])


def _gate(gate: Gate) -> Callable[[re.Match[str]], Facts]:
    def extract(_: re.Match[str]) -> Facts:
        return Facts(detail=gate.value)

    return extract


def _weight(m: re.Match[str]) -> Facts:
    weight = int(m["weight"])
    return Facts(detail=sys.intern(str(weight)), weight=weight)


def _iteration(m: re.Match[str]) -> Facts:
    # The detail is the iteration alone so it matches ``status.iterations`` from the Canary
    # source; ``n/m`` stays in the message.
    return Facts(detail=str(int(m["n"])))


def _threshold(m: re.Match[str], metric: str) -> str:
    return f"{metric} {m['value']} {m['op']} {m['threshold']}"


def _success_rate(m: re.Match[str]) -> Facts:
    return Facts(reason=_threshold(m, "request-success-rate"))


def _duration(m: re.Match[str]) -> Facts:
    return Facts(reason=_threshold(m, "request-duration"))


def _custom_metric(m: re.Match[str]) -> Facts:
    return Facts(reason=_threshold(m, m["metric"]))


def _hook(kind: str) -> Callable[[re.Match[str]], Facts]:
    def extract(m: re.Match[str]) -> Facts:
        return Facts(reason=f"{kind} {m['hook']}")

    return extract


def _no_values(m: re.Match[str]) -> Facts:
    names = m.groupdict()
    target = names.get("name") or ""
    return Facts(reason=f"{m['metric']} no-values", target=target)


def _metric_error(kind: str) -> Callable[[re.Match[str]], Facts]:
    def extract(m: re.Match[str]) -> Facts:
        subject = m.groupdict().get("subject") or ""
        return Facts(reason=f"{kind} {subject}".rstrip())

    return extract


def _not_ready(workload: str) -> Callable[[re.Match[str]], Facts]:
    def extract(m: re.Match[str]) -> Facts:
        return Facts(reason=f"{workload}: {m['why']}", target=_workload_target(m["name"]))

    return extract


def _workload_target(name: str) -> str:
    """The target a readiness message is about: ``<target>-primary`` names the primary."""
    return name.removesuffix(_PRIMARY_SUFFIX)


def _deadline(m: re.Match[str]) -> Facts:
    return Facts(reason="progress-deadline", target=_workload_target(m["name"]))


def _not_ready_other(m: re.Match[str]) -> Facts:
    return Facts(reason=f"{m['subject']}: {m['why']}")


def _not_ready_named(m: re.Match[str]) -> Facts:
    """0.x ``Halt advancement <workload>.<ns> <why>``: the workload is named, its role is not."""
    workload = "primary" if m["name"].endswith(_PRIMARY_SUFFIX) else "canary"
    return Facts(reason=f"{workload}: {m['why']}", target=_workload_target(m["name"]))


def _not_ready_unnamed(m: re.Match[str]) -> Facts:
    """0.x readiness texts that do not say which workload they are about."""
    return Facts(reason=m["why"])


def _route_not_ready(m: re.Match[str]) -> Facts:
    return Facts(reason=f"httproute parent {m['parent']}: {m['why']}")


def _revision_not_ready(m: re.Match[str]) -> Facts:
    return Facts(reason=f"knative revision {m['name']}: not ready")


def _fixed_reason(reason: str, *, target: bool = False) -> Callable[[re.Match[str]], Facts]:
    def extract(m: re.Match[str]) -> Facts:
        return Facts(reason=reason, target=m["name"] if target else "")

    return extract


def _failed_checks(m: re.Match[str]) -> Facts:
    return Facts(reason="failed-checks", failed_checks=int(m["n"]))


_INT = "[0-9]{1,9}"
"""A bounded ASCII integer: ``int()`` on it can never fail."""
_COMPARISON = r"(?P<value>\S+) (?P<op>[<>]) (?P<threshold>\S+)"
_NOT_READY = r" not ready(?: with retryable \S+)?:"
_NOT_READY_TAIL = rf"{_NOT_READY} (?P<why>.+)"
_WORKLOAD = r"(?:canary deployment |canary dae?monset |primary (?:deployment|daemonset) )?"
_READINESS_WHY = (
    r"(?P<why>waiting for rollout to finish: .+"
    r'|(?:deployment "[^"]*"|daemonset \S+) exceeded its progress deadline)'
)
"""0.x readiness reasons (``getDeploymentStatus``/``isDeploymentReady``/``isDaemonSetReady``)."""

_T = Transition
# Order matters only where two shapes overlap: specific before generic (gates before custom
# metrics, promotion-failed and progress-deadline before the generic "not ready").
CATALOGUE: tuple[Entry, ...] = (
    Entry("initialized", _p(rf"Initialization done! {REF}"), _T.INITIALIZED, Phase.INITIALIZED),
    Entry(
        "gate-rollout-waiting",
        _p(rf"Halt {REF} advancement waiting for approval(?: (?P<hook>.*))?"),
        _T.AWAITING_APPROVAL,
        Phase.WAITING,
        _gate(Gate.ROLLOUT),
    ),
    Entry(
        "gate-promotion-waiting",
        _p(rf"Halt {REF} advancement waiting for promotion approval(?: (?P<hook>.*))?"),
        _T.AWAITING_APPROVAL,
        Phase.WAITING_PROMOTION,
        _gate(Gate.PROMOTION),
    ),
    Entry(
        "gate-traffic-waiting",
        _p(rf"Halt {REF} advancement waiting for traffic increase approval(?: (?P<hook>.*))?"),
        _T.AWAITING_APPROVAL,
        Phase.PROGRESSING,
        _gate(Gate.TRAFFIC),
    ),
    Entry(
        "gate-rollout-passed",
        _p(r"Confirm-rollout check (?P<hook>.+) passed"),
        _T.APPROVED,
        extract=_gate(Gate.ROLLOUT),
    ),
    Entry(
        "gate-promotion-passed",
        _p(r"Confirm-promotion check (?P<hook>.+) passed"),
        _T.APPROVED,
        extract=_gate(Gate.PROMOTION),
    ),
    Entry(
        "gate-traffic-passed",
        _p(r"Confirm-traffic-increase check (?P<hook>.+) passed"),
        _T.APPROVED,
        extract=_gate(Gate.TRAFFIC),
    ),
    Entry(
        "new-revision",
        _p(rf"New revision detected! Scaling up {REF}"),
        _T.REVISION_DETECTED,
        Phase.PROGRESSING,
        _target,
    ),
    Entry(
        "new-revision-restart",
        _p(rf"New revision detected! Restarting analysis for {REF}"),
        _T.REVISION_DETECTED,
        Phase.PROGRESSING,
        _fixed_reason("analysis-restarted", target=True),
    ),
    Entry(
        "new-revision-0x",
        _p(rf"New revision detected {REF}(?: old \S+ new \S+)?"),
        _T.REVISION_DETECTED,
        Phase.PROGRESSING,
        _target,
        since="0.0.1",
        until="0.1.0-alpha.1",
    ),
    Entry(
        "analysis-started",
        _p(rf"Starting canary analysis for {REF}"),
        _T.ANALYSIS_STARTED,
        Phase.PROGRESSING,
        _target,
    ),
    Entry(
        "analysis-started-0x",
        # 0.x: ``%s.%s`` is the Canary's own name here, not its target.
        _p(rf"Starting canary deployment for {REF}"),
        _T.ANALYSIS_STARTED,
        Phase.PROGRESSING,
        since="0.0.1",
        until="0.3.0",
    ),
    Entry(
        "canary-weight",
        _p(rf"Advance {REF} canary weight (?P<weight>{_INT})"),
        _T.WEIGHT_ADVANCED,
        Phase.PROGRESSING,
        _weight,
    ),
    Entry(
        "canary-iteration",
        _p(rf"Advance {REF} canary iteration (?P<n>{_INT})/(?P<m>{_INT})"),
        _T.ITERATION_ADVANCED,
        Phase.PROGRESSING,
        _iteration,
    ),
    Entry(
        "halt-success-rate",
        _p(
            rf"Halt {REF} advancement success rate (?P<value>\S+)% (?P<op>[<>]) (?P<threshold>\S+)%"
        ),
        _T.HALTED,
        Phase.PROGRESSING,
        _success_rate,
    ),
    Entry(
        "halt-request-duration",
        _p(rf"Halt {REF} advancement request duration {_COMPARISON}"),
        _T.HALTED,
        Phase.PROGRESSING,
        _duration,
    ),
    Entry(
        "halt-external-check",
        _p(rf"Halt {REF} advancement external check (?P<hook>\S+) failed(?: .*)?"),
        _T.HALTED,
        Phase.PROGRESSING,
        _hook("external-check"),
    ),
    Entry(
        "halt-pre-rollout-check",
        _p(rf"Halt {REF} advancement pre-rollout check (?P<hook>\S+) failed(?: .*)?"),
        _T.HALTED,
        Phase.PROGRESSING,
        _hook("pre-rollout-check"),
    ),
    Entry(
        "halt-custom-metric",
        _p(rf"Halt {REF} advancement (?P<metric>\S+) {_COMPARISON}"),
        _T.HALTED,
        Phase.PROGRESSING,
        _custom_metric,
    ),
    Entry(
        "no-values-builtin",
        _p(
            # 0.4.1–0.20.4 said "for metric X", v1 "for <provider> metric X".
            rf"Halt advancement no values found for (?:(?P<provider>\S+) )?metric (?P<metric>\S+)"
            rf" probably {REF} is not receiving traffic(?:: .*)?"
        ),
        _T.NO_TRAFFIC,
        Phase.PROGRESSING,
        _no_values,
        since="0.4.1",
    ),
    Entry(
        "no-values-query",
        _p(r"Halt advancement no values found for metric: (?P<metric>\S+)"),
        _T.NO_TRAFFIC,
        Phase.PROGRESSING,
        _no_values,
    ),
    Entry(
        "no-values-custom",
        _p(r"Halt advancement no values found for custom metric: (?P<metric>[^:\s]+)(?:: .*)?"),
        _T.NO_TRAFFIC,
        Phase.PROGRESSING,
        _no_values,
    ),
    Entry(
        "post-rollout-hook-failed",
        _p(r"Post-rollout hook (?P<hook>\S+) failed(?: .*)?"),
        _T.WEBHOOK_FAILED,
        extract=_hook("post-rollout-hook"),
    ),
    Entry(
        "metric-providers-error",
        _p(r"Error checking metric providers: .*"),
        _T.WEBHOOK_FAILED,
        extract=_metric_error("metric-providers"),
    ),
    Entry(
        "prometheus-query-failed",
        _p(r"Prometheus query failed(?: for (?P<subject>\S+))?: .*"),
        _T.WEBHOOK_FAILED,
        extract=_metric_error("prometheus-query"),
    ),
    Entry(
        "metrics-server-query-failed",
        # 0.x spelling of "Prometheus query failed …": the first %s is the server URL.
        _p(r"Metrics server \S+ query failed(?: for (?P<subject>\S+))?: .*"),
        _T.WEBHOOK_FAILED,
        extract=_metric_error("prometheus-query"),
        since="0.0.1",
        until="0.23.0",
    ),
    Entry(
        "metric-query-failed",
        _p(r"Metric query failed for (?P<subject>\S+): .*"),
        _T.WEBHOOK_FAILED,
        extract=_metric_error("metric-query"),
    ),
    Entry(
        "metric-query-unconfigured",
        # v1.36.0–1.36.1 without "and query".
        _p(r"Metric query failed for no usable metrics template(?: and query)? were configured"),
        _T.WEBHOOK_FAILED,
        extract=_fixed_reason("metric-query no-usable-template"),
        since="1.36.0",
    ),
    Entry(
        "knative-service-error",
        _p(r"Error fetching Knative service (?P<subject>\S+) .*"),
        _T.WEBHOOK_FAILED,
        extract=_metric_error("knative-service"),
        since="1.41.0",
    ),
    Entry(
        "prometheus-client-error",
        _p(r"Error building Prometheus client for \S+ .*"),
        _T.WEBHOOK_FAILED,
        extract=_fixed_reason("prometheus-client"),
        since="0.20.0",
    ),
    Entry(
        "metric-template-error",
        _p(
            r"Metric template (?P<subject>\S+)"
            r" (?:secret \S+ |provider \S+ |query render )?error: .*"
        ),
        _T.WEBHOOK_FAILED,
        extract=_metric_error("metric-template"),
    ),
    Entry(
        "copying-spec",
        _p(rf"Copying {REF} template spec to {_ref('primary_')}"),
        _T.PROMOTING,
        Phase.PROMOTING,
        _target,
    ),
    Entry(
        "routing-to-primary", _p(r"Routing all traffic to primary"), _T.FINALISING, Phase.FINALISING
    ),
    Entry(
        "primary-weight",
        _p(rf"Advance {REF} primary weight (?P<weight>{_INT})"),
        _T.FINALISING,
        Phase.FINALISING,
    ),
    Entry(
        "promotion-completed",
        _p(rf"Promotion completed! Scaling down {REF}"),
        _T.PROMOTED,
        Phase.SUCCEEDED,
        _target,
    ),
    Entry(
        "promotion-completed-0x",
        # 0.0.1–0.1.0-alpha.1: recorded once the rollout finished (a rollback said
        # "Canary failed! Scaling down …"); names the canary deployment.
        _p(rf"Scaling down {REF}"),
        _T.PROMOTED,
        Phase.SUCCEEDED,
        _target,
        since="0.0.1",
        until="0.1.0-alpha.1",
    ),
    Entry(
        "promotion-skipped-analysis",
        _p(rf"Promotion completed! Canary analysis was skipped for {REF}"),
        _T.PROMOTED,
        Phase.SUCCEEDED,
        _fixed_reason("analysis-skipped", target=True),
    ),
    Entry(
        "rollback-failed-checks",
        _p(rf"Rolling back {REF} failed checks threshold reached (?P<n>{_INT})"),
        _T.ROLLED_BACK,
        Phase.FAILED,
        _failed_checks,
    ),
    Entry(
        "rollback-manual",
        _p(rf"Rolling back {REF} manual webhook invoked"),
        _T.ROLLED_BACK,
        Phase.FAILED,
        _fixed_reason("manual"),
    ),
    Entry(
        "rollback-progress-deadline",
        _p(rf"Rolling back {REF} progress deadline exceeded(?: .*)?"),
        _T.ROLLED_BACK,
        Phase.FAILED,
        _fixed_reason("progress-deadline"),
        until="1.36.0",
    ),
    Entry(
        "canary-failed",
        _p(rf"Canary failed! Scaling down {REF}"),
        _T.ROLLED_BACK,
        Phase.FAILED,
        _target,
    ),
    Entry(
        "promotion-failed",
        _p(rf"Promotion of {REF} failed, primary not ready: .*"),
        _T.PROMOTION_FAILED,
        Phase.FAILED,
        _fixed_reason("primary-not-ready", target=True),
        since="1.44.0",
    ),
    Entry(
        "progress-deadline-not-ready",
        # Only the canary's own deployment: when the primary (``<target>-primary``) is past its
        # deadline it is the primary's readiness (``primary-not-ready`` below), and Flagger 1.44
        # follows with "Promotion of … failed" — traffic stays on the canary, nothing rolls back
        # (seen from the real Flagger 1.44 in tests/realcluster/test_real_flagger.py).
        # DaemonSets say "exceeded its progressDeadlineSeconds: N".
        _p(
            rf"{_WORKLOAD}(?!\S+-primary\.){REF}{_NOT_READY}"
            r" .*exceeded its progress(?: deadline|DeadlineSeconds).*"
        ),
        _T.ROLLED_BACK,
        Phase.FAILED,
        _deadline,
        since="1.36.1",
        needs="exceeded its progress",
    ),
    Entry(
        "canary-not-ready",
        _p(rf"canary (?:deployment|dae?monset) {REF}{_NOT_READY_TAIL}"),
        _T.NOT_READY,
        extract=_not_ready("canary"),
    ),
    Entry(
        "primary-not-ready",
        _p(rf"(?:primary (?:deployment|daemonset) )?(?=\S+-primary\.){REF}{_NOT_READY_TAIL}"),
        _T.NOT_READY,
        extract=_not_ready("primary"),
        needs="-primary.",
    ),
    Entry(
        "primary-scaled-to-zero",
        # 0.x: "Halt"/"halt" without the colon; v1.0.0-rc.2–rc.3 prefix "IsPrimaryReady failed: ".
        _p(
            r"(?:IsPrimaryReady failed: )?[Hh]alt "
            rf"{REF} advancement:? primary deployment is scaled to zero"
        ),
        _T.NOT_READY,
        extract=_fixed_reason("primary: primary deployment is scaled to zero"),
        since="0.1.0-alpha.2",
        first_words=("IsPrimaryReady", "Halt", "halt"),
    ),
    Entry(
        "not-ready-0x-halt",
        # 0.0.1–0.3.0: ``%s.%s`` is the Canary, for the canary and the primary alike.
        _p(rf"Halt {REF} advancement {_READINESS_WHY}"),
        _T.NOT_READY,
        extract=_not_ready_unnamed,
        since="0.0.1",
        until="0.3.0",
    ),
    Entry(
        "not-ready-0x-halt-advancement",
        # 0.4.0–v1.0.0-rc.1: names the workload (``<target>`` or ``<target>-primary``).
        _p(rf"[Hh]alt advancement {REF} {_READINESS_WHY}"),
        _T.NOT_READY,
        extract=_not_ready_named,
        since="0.4.0",
        until="1.0.0-rc.1",
        first_words=("Halt", "halt"),
    ),
    Entry(
        "not-ready-0x-bare",
        # 0.1.1–0.3.0: the primary's non-retriable readiness error, recorded as it is.
        _p(rf"{_READINESS_WHY}"),
        _T.NOT_READY,
        extract=_not_ready_unnamed,
        since="0.1.1",
        until="0.3.0",
        first_words=("waiting", "deployment", "daemonset"),
    ),
    Entry(
        "knative-revision-not-ready",
        _p(rf"Knative Revision {REF} is not ready"),
        _T.NOT_READY,
        extract=_revision_not_ready,
        since="1.41.0",
    ),
    Entry(
        "httproute-not-ready",
        # Gateway API: the route is not yet accepted by its parent; Flagger waits like for a
        # workload.
        _p(rf"HTTPRoute {REF} parent (?P<parent>\S+) is not ready \((?P<why>.*)\)"),
        _T.NOT_READY,
        extract=_route_not_ready,
        since="1.42.0",
    ),
    Entry(
        "other-not-ready",
        _p(rf"(?P<subject>.+?){_NOT_READY_TAIL}"),
        _T.NOT_READY,
        extract=_not_ready_other,
        needs=" not ready",
    ),
    Entry(
        "suspended",
        _p(r"skipping canary run as object is suspended"),
        _T.SUSPENDED,
        since="1.32.0",
    ),
    Entry("terminating", _p(rf"Terminating canary {REF}"), _T.TERMINATED, Phase.TERMINATING),
    Entry("terminated", _p(rf"Terminated canary {REF}"), _T.TERMINATED, Phase.TERMINATED),
    # Known, informational only: counted, never notified.
    Entry("pre-rollout-passed", _p(r"Pre-rollout check \S+ passed"), None),
    Entry("post-rollout-passed", _p(r"Post-rollout check \S+ passed"), None),
    Entry("rollback-check-passed", _p(r"Rollback check \S+ passed"), None),
    Entry("rollback-hook-idle", _p(r"Rollback hook \S+ not signaling a rollback"), None),
    Entry("metric-providers-ok", _p(r"all the metrics providers are available!"), None),
    Entry("routing-to-canary", _p(r"Routing all traffic to canary"), None),
    Entry(
        "mirroring-stopped",
        _p(r"Stop traffic mirroring and route all traffic to canary"),
        None,
    ),
    Entry(
        "kubernetes-provider-unsupported",
        _p(r".+ is not supported when using the kubernetes provider"),
        None,
        needs=" is not supported when using the kubernetes provider",
    ),
    Entry("kubernetes-provider-iterations", _p(r"Setting canaryAnalysis\.iterations: \d+"), None),
    Entry(
        "scaling-up-0x",
        # Follows "New revision detected …" in the same tick; that message is the transition.
        _p(rf"Scaling up {REF}"),
        None,
        since="0.0.1",
        until="0.1.0-alpha.1",
    ),
    Entry(
        "object-created-0x",
        _p(rf"(?:Deployment|Service|VirtualService|HorizontalPodAutoscaler) {REF} created"),
        None,
        since="0.1.0-alpha.1",
        until="0.1.0-alpha.1",
        first_words=("Deployment", "Service", "VirtualService", "HorizontalPodAutoscaler"),
    ),
)

_LEADING_WORD = re.compile(r"(?P<word>[-A-Za-z0-9_]+) (?![?*+{])")
"""A pattern that begins with a literal word and an unrepeated space."""


def _alternates_at_top(source: str) -> bool:
    """Whether the regular expression ``source`` has a ``|`` outside every group."""
    depth, i = 0, 0
    while i < len(source):
        char = source[i]
        if char == "\\":
            i += 1
        elif char == "[":
            i += 1
            if source.startswith("^", i):
                i += 1
            if source.startswith("]", i):
                i += 1
            while i < len(source) and source[i] != "]":
                i += 2 if source[i] == "\\" else 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        i += 1
    return False


def first_words_of(entry: Entry) -> frozenset[str] | None:
    """Every first word of a message ``entry`` matches, or ``None`` when it can be any word.

    ``Entry.first_words`` when given, else the literal word the pattern begins with. A message's
    first word is its text before the first space (``str.partition``).
    """
    if entry.first_words:
        return frozenset(entry.first_words)
    pattern = entry.pattern
    found = _LEADING_WORD.match(pattern.pattern)
    if (
        found is None
        or pattern.flags & (re.IGNORECASE | re.VERBOSE)
        or _alternates_at_top(pattern.pattern)
    ):
        return None
    return frozenset({found["word"]})


def _index(
    catalogue: tuple[Entry, ...],
) -> tuple[dict[str, tuple[Entry, ...]], tuple[Entry, ...]]:
    """Per first word, the entries that can match a message beginning with it, in catalogue order;
    and the entries that can match whatever the first word is."""
    words = [(entry, first_words_of(entry)) for entry in catalogue]
    any_word = tuple(entry for entry, first in words if first is None)
    keys = {word for _, first in words if first is not None for word in first}
    by_word = {
        key: tuple(entry for entry, first in words if first is None or key in first) for key in keys
    }
    return by_word, any_word


_BY_FIRST_WORD, _ANY_FIRST_WORD = _index(CATALOGUE)


def candidates(text: str) -> tuple[Entry, ...]:
    """The entries that may match ``text`` (already stripped), in catalogue order.

    Entries with ``needs`` are still to be checked for it.
    """
    return _BY_FIRST_WORD.get(text.partition(" ")[0], _ANY_FIRST_WORD)


def classify(message: str) -> MessageMatch | None:
    """What ``message`` means, or ``None`` when no catalogue entry knows it.

    The aggregation prefix is stripped first; surrounding whitespace is ignored.
    """
    text = strip_aggregation(message).strip()
    for entry in candidates(text):
        if entry.needs in text:
            found = entry.match(text)
            if found is not None:
                return found
    return None


def classify_in_order(message: str) -> MessageMatch | None:
    """What ``classify`` answers, by trying every catalogue entry in order.

    The plain definition of ``classify``, kept as the oracle its tests compare it with.
    """
    text = strip_aggregation(message).strip()
    for entry in CATALOGUE:
        found = entry.match(text)
        if found is not None:
            return found
    return None


_URL = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?:[^/\s@]*@)?(?P<host>[^/\s?#]*)\S*")
_EXCERPT_CHARS = 160


def safe_excerpt(message: str) -> str:
    """A short, log-safe excerpt of an unknown message.

    URLs keep only scheme and host (no userinfo, path or query, which may carry tokens).
    """
    text = _URL.sub(lambda m: f"{m['scheme']}{m['host']}/…", strip_aggregation(message).strip())
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1] + "…"
    return text


def to_event(
    match: MessageMatch,
    *,
    canary: CanaryRef,
    message: str,
    source: SourceName,
    observed_at: datetime,
    occurred_at: datetime | None = None,
    phase: Phase | None = None,
    hints: Mapping[str, str] = EMPTY_MAPPING,
) -> CanaryEvent | None:
    """The ``CanaryEvent`` for a matched message, or ``None`` if it is informational.

    ``phase`` is what the source reported and is used only when the message implies none.
    """
    if match.transition is None:
        return None
    return CanaryEvent(
        canary=canary,
        transition=match.transition,
        observed_at=observed_at,
        sources=SEEN_BY[source],
        severity=TRANSITIONS[match.transition].severity,
        phase=match.phase or phase,
        weight=match.weight,
        failed_checks=match.failed_checks,
        message=strip_aggregation(message).strip(),
        reason=match.reason,
        detail=match.detail,
        target=match.target,
        occurred_at=occurred_at,
        hints=hints,
    )
