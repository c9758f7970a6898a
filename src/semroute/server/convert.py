"""Decision <-> protobuf. Shared by the server (to answer) and the client (to read answers)."""

from __future__ import annotations

from .._proto.semroute.v1 import router_pb2 as pb
from ..scoring import Decision, Neighbour, Reason, RouteScore, Timings

REASON_TO_PB = {
    Reason.MATCHED: pb.REASON_MATCHED,
    Reason.BELOW_THRESHOLD: pb.REASON_BELOW_THRESHOLD,
    Reason.NEGATIVE_MATCH: pb.REASON_NEGATIVE_MATCH,
    Reason.NO_MATCH: pb.REASON_NO_MATCH,
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
    )
    if d.predicted_quality:
        msg.predicted_quality.extend(pb.ModelQuality(model=k, quality=v) for k, v in d.predicted_quality.items())
    if d.quality_target is not None:
        msg.quality_target = d.quality_target
    if d.route is not None:
        msg.route = d.route
    if d.threshold is not None:
        msg.threshold = d.threshold
    return msg


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
        predicted_quality={q.model: q.quality for q in msg.predicted_quality},
        quality_target=msg.quality_target if msg.HasField("quality_target") else None,
    )
