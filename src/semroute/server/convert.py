"""Decision <-> protobuf. Shared by the server (to answer) and the client (to read answers)."""

from __future__ import annotations

from .._proto.semroute.v1 import router_pb2 as pb
from ..policy.types import CandidateResult, TraceStep
from ..scoring import Decision, Neighbour, Reason, RouteScore, Timings

REASON_TO_PB = {
    Reason.MATCHED: pb.REASON_MATCHED,
    Reason.BELOW_THRESHOLD: pb.REASON_BELOW_THRESHOLD,
    Reason.NEGATIVE_MATCH: pb.REASON_NEGATIVE_MATCH,
    Reason.NO_MATCH: pb.REASON_NO_MATCH,
    Reason.NO_ELIGIBLE_MODEL: pb.REASON_NO_ELIGIBLE_MODEL,
    Reason.RULE: pb.REASON_RULE,
    Reason.ESCALATION_BUDGET_EXHAUSTED: pb.REASON_ESCALATION_BUDGET_EXHAUSTED,
    Reason.ESCALATED: pb.REASON_ESCALATED,
    Reason.BREAKER_OPEN: pb.REASON_BREAKER_OPEN,
    Reason.STICKY: pb.REASON_STICKY,
    Reason.COST_BUDGET_EXHAUSTED: pb.REASON_COST_BUDGET_EXHAUSTED,
}
_PB_TO_REASON = {v: k for k, v in REASON_TO_PB.items()}


def decision_to_pb(d: Decision, *, total_ns: int = 0, batch_size: int = 1) -> pb.Decision:
    msg = pb.Decision(
        model=d.model,
        score=d.score,
        fallback=d.fallback,
        reason=REASON_TO_PB[d.reason],
        margin=d.margin,
        scores=[pb.RouteScore(route=s.route, score=s.score) for s in d.scores],
        neighbours=[
            pb.Neighbour(text=n.text, route=n.route, similarity=n.similarity, negative=n.negative)
            for n in d.neighbours
        ],
        index_version=d.index_version,
        truncated=d.truncated,
        n_tokens=d.n_tokens,
        timings=pb.Timings(
            queue_ns=d.timings.queue_ns,
            tokenize_ns=d.timings.tokenize_ns,
            encode_ns=d.timings.encode_ns,
            search_ns=d.timings.search_ns,
            score_ns=d.timings.score_ns,
            total_ns=total_ns,
            batch_size=batch_size,
        ),
        policy_version=d.policy_version,
        trace=[pb.TraceStep(stage=t.stage, kind=t.kind, subject=t.subject, detail=t.detail) for t in d.trace],
        pii_kinds=list(d.pii_kinds),
        tier=d.tier,
        objective=d.objective,
        rule=d.rule,
        candidates=[_candidate_to_pb(c) for c in d.candidates],
    )
    if d.route is not None:
        msg.route = d.route
    if d.threshold is not None:
        msg.threshold = d.threshold
    if d.estimated_cost is not None:
        msg.estimated_cost = d.estimated_cost
    if d.cached:
        msg.cached = True
    if d.endpoint is not None:
        msg.endpoint = d.endpoint
    if d.feedback_trace:
        msg.feedback_trace.extend(d.feedback_trace)
    return msg


def _candidate_to_pb(c: CandidateResult) -> pb.CandidateInfo:
    msg = pb.CandidateInfo(model=c.model, eligible=c.eligible, excluded_by=c.excluded_by,
                           quality_source=c.quality_source, estimated_cost=c.estimated_cost)
    if c.quality is not None:
        msg.quality = c.quality
    if c.latency_ms is not None:
        msg.latency_ms = c.latency_ms
    if c.score is not None:
        msg.score = c.score
    return msg


def _candidate_from_pb(m: pb.CandidateInfo) -> CandidateResult:
    return CandidateResult(
        model=m.model, eligible=m.eligible, excluded_by=m.excluded_by,
        quality=m.quality if m.HasField("quality") else None, quality_source=m.quality_source,
        estimated_cost=m.estimated_cost, latency_ms=m.latency_ms if m.HasField("latency_ms") else None,
        score=m.score if m.HasField("score") else None,
    )


def decision_from_pb(msg: pb.Decision) -> Decision:
    t = msg.timings
    return Decision(
        route=msg.route if msg.HasField("route") else None,
        model=msg.model,
        score=msg.score,
        threshold=msg.threshold if msg.HasField("threshold") else None,
        fallback=msg.fallback,
        reason=_PB_TO_REASON[msg.reason],
        margin=msg.margin,
        scores=[RouteScore(s.route, s.score) for s in msg.scores],
        neighbours=[Neighbour(n.text, n.route, n.similarity, n.negative) for n in msg.neighbours],
        index_version=msg.index_version,
        truncated=msg.truncated,
        n_tokens=msg.n_tokens,
        timings=Timings(
            tokenize_ns=t.tokenize_ns, encode_ns=t.encode_ns, search_ns=t.search_ns, score_ns=t.score_ns,
            queue_ns=t.queue_ns,
        ),
        policy_version=msg.policy_version,
        trace=tuple(TraceStep(s.stage, s.kind, s.subject, s.detail) for s in msg.trace),
        pii_kinds=tuple(msg.pii_kinds),
        estimated_cost=msg.estimated_cost if msg.HasField("estimated_cost") else None,
        tier=msg.tier,
        objective=msg.objective,
        rule=msg.rule,
        candidates=tuple(_candidate_from_pb(c) for c in msg.candidates),
        cached=msg.cached,
        endpoint=msg.endpoint if msg.HasField("endpoint") else None,
        feedback_trace=tuple(msg.feedback_trace),
    )
