from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_MATCHED: _ClassVar[Reason]
    REASON_BELOW_THRESHOLD: _ClassVar[Reason]
    REASON_NEGATIVE_MATCH: _ClassVar[Reason]
    REASON_NO_MATCH: _ClassVar[Reason]
    REASON_NO_ELIGIBLE_MODEL: _ClassVar[Reason]
    REASON_RULE: _ClassVar[Reason]
    REASON_ESCALATION_BUDGET_EXHAUSTED: _ClassVar[Reason]
    REASON_ESCALATED: _ClassVar[Reason]
    REASON_BREAKER_OPEN: _ClassVar[Reason]
    REASON_STICKY: _ClassVar[Reason]
    REASON_COST_BUDGET_EXHAUSTED: _ClassVar[Reason]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_OK: _ClassVar[Outcome]
    OUTCOME_ERROR: _ClassVar[Outcome]
    OUTCOME_TIMEOUT: _ClassVar[Outcome]
    OUTCOME_RATE_LIMITED: _ClassVar[Outcome]
REASON_UNSPECIFIED: Reason
REASON_MATCHED: Reason
REASON_BELOW_THRESHOLD: Reason
REASON_NEGATIVE_MATCH: Reason
REASON_NO_MATCH: Reason
REASON_NO_ELIGIBLE_MODEL: Reason
REASON_RULE: Reason
REASON_ESCALATION_BUDGET_EXHAUSTED: Reason
REASON_ESCALATED: Reason
REASON_BREAKER_OPEN: Reason
REASON_STICKY: Reason
REASON_COST_BUDGET_EXHAUSTED: Reason
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_OK: Outcome
OUTCOME_ERROR: Outcome
OUTCOME_TIMEOUT: Outcome
OUTCOME_RATE_LIMITED: Outcome

class RequestMetadata(_message.Message):
    __slots__ = ("tenant", "user_tier", "request_id", "labels", "conversation_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    USER_TIER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    user_tier: str
    request_id: str
    labels: _containers.ScalarMap[str, str]
    conversation_id: str
    def __init__(self, tenant: _Optional[str] = ..., user_tier: _Optional[str] = ..., request_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class RouteOptions(_message.Message):
    __slots__ = ("top_scores", "top_neighbours", "max_cost", "quality_floor", "objective")
    TOP_SCORES_FIELD_NUMBER: _ClassVar[int]
    TOP_NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FLOOR_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    top_scores: int
    top_neighbours: int
    max_cost: float
    quality_floor: float
    objective: str
    def __init__(self, top_scores: _Optional[int] = ..., top_neighbours: _Optional[int] = ..., max_cost: _Optional[float] = ..., quality_floor: _Optional[float] = ..., objective: _Optional[str] = ...) -> None: ...

class Escalation(_message.Message):
    __slots__ = ("from_model", "confidence")
    FROM_MODEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    from_model: str
    confidence: float
    def __init__(self, from_model: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("text", "metadata", "options", "escalate")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ESCALATE_FIELD_NUMBER: _ClassVar[int]
    text: str
    metadata: RequestMetadata
    options: RouteOptions
    escalate: Escalation
    def __init__(self, text: _Optional[str] = ..., metadata: _Optional[_Union[RequestMetadata, _Mapping]] = ..., options: _Optional[_Union[RouteOptions, _Mapping]] = ..., escalate: _Optional[_Union[Escalation, _Mapping]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("text", "metadata")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    text: str
    metadata: RequestMetadata
    def __init__(self, text: _Optional[str] = ..., metadata: _Optional[_Union[RequestMetadata, _Mapping]] = ...) -> None: ...

class RouteBatchRequest(_message.Message):
    __slots__ = ("queries", "options")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    options: RouteOptions
    def __init__(self, queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., options: _Optional[_Union[RouteOptions, _Mapping]] = ...) -> None: ...

class TraceStep(_message.Message):
    __slots__ = ("stage", "kind", "subject", "detail")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    stage: str
    kind: str
    subject: str
    detail: str
    def __init__(self, stage: _Optional[str] = ..., kind: _Optional[str] = ..., subject: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class CandidateInfo(_message.Message):
    __slots__ = ("model", "eligible", "excluded_by", "quality", "quality_source", "estimated_cost", "latency_ms", "score")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_BY_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    QUALITY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    model: str
    eligible: bool
    excluded_by: str
    quality: float
    quality_source: str
    estimated_cost: float
    latency_ms: float
    score: float
    def __init__(self, model: _Optional[str] = ..., eligible: _Optional[bool] = ..., excluded_by: _Optional[str] = ..., quality: _Optional[float] = ..., quality_source: _Optional[str] = ..., estimated_cost: _Optional[float] = ..., latency_ms: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class RouteScore(_message.Message):
    __slots__ = ("route", "score")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    route: str
    score: float
    def __init__(self, route: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Neighbour(_message.Message):
    __slots__ = ("text", "route", "similarity", "negative")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    text: str
    route: str
    similarity: float
    negative: bool
    def __init__(self, text: _Optional[str] = ..., route: _Optional[str] = ..., similarity: _Optional[float] = ..., negative: _Optional[bool] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_ns", "tokenize_ns", "encode_ns", "search_ns", "score_ns", "total_ns", "batch_size")
    QUEUE_NS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZE_NS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_NS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_NS_FIELD_NUMBER: _ClassVar[int]
    SCORE_NS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_ns: int
    tokenize_ns: int
    encode_ns: int
    search_ns: int
    score_ns: int
    total_ns: int
    batch_size: int
    def __init__(self, queue_ns: _Optional[int] = ..., tokenize_ns: _Optional[int] = ..., encode_ns: _Optional[int] = ..., search_ns: _Optional[int] = ..., score_ns: _Optional[int] = ..., total_ns: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("route", "model", "score", "threshold", "fallback", "reason", "margin", "scores", "neighbours", "index_version", "truncated", "n_tokens", "timings", "policy_version", "trace", "pii_kinds", "estimated_cost", "tier", "objective", "rule", "candidates", "cached", "endpoint", "feedback_trace")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    N_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    PII_KINDS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TRACE_FIELD_NUMBER: _ClassVar[int]
    route: str
    model: str
    score: float
    threshold: float
    fallback: bool
    reason: Reason
    margin: float
    scores: _containers.RepeatedCompositeFieldContainer[RouteScore]
    neighbours: _containers.RepeatedCompositeFieldContainer[Neighbour]
    index_version: str
    truncated: bool
    n_tokens: int
    timings: Timings
    policy_version: str
    trace: _containers.RepeatedCompositeFieldContainer[TraceStep]
    pii_kinds: _containers.RepeatedScalarFieldContainer[str]
    estimated_cost: float
    tier: str
    objective: str
    rule: str
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateInfo]
    cached: bool
    endpoint: str
    feedback_trace: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, route: _Optional[str] = ..., model: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., fallback: _Optional[bool] = ..., reason: _Optional[_Union[Reason, str]] = ..., margin: _Optional[float] = ..., scores: _Optional[_Iterable[_Union[RouteScore, _Mapping]]] = ..., neighbours: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ..., index_version: _Optional[str] = ..., truncated: _Optional[bool] = ..., n_tokens: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., policy_version: _Optional[str] = ..., trace: _Optional[_Iterable[_Union[TraceStep, _Mapping]]] = ..., pii_kinds: _Optional[_Iterable[str]] = ..., estimated_cost: _Optional[float] = ..., tier: _Optional[str] = ..., objective: _Optional[str] = ..., rule: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[CandidateInfo, _Mapping]]] = ..., cached: _Optional[bool] = ..., endpoint: _Optional[str] = ..., feedback_trace: _Optional[_Iterable[str]] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("decision", "request_id")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    request_id: str
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RouteBatchResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("request_id", "model", "endpoint", "outcome", "latency_ms", "tokens_in", "tokens_out", "confidence", "feedback", "tenant")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    endpoint: str
    outcome: Outcome
    latency_ms: float
    tokens_in: int
    tokens_out: int
    confidence: float
    feedback: str
    tenant: str
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., endpoint: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., latency_ms: _Optional[float] = ..., tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., confidence: _Optional[float] = ..., feedback: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("duplicate", "known_request", "breaker")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    KNOWN_REQUEST_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    known_request: bool
    breaker: str
    def __init__(self, duplicate: _Optional[bool] = ..., known_request: _Optional[bool] = ..., breaker: _Optional[str] = ...) -> None: ...

class BreakerInfo(_message.Message):
    __slots__ = ("key", "state", "opened_at")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    key: str
    state: str
    opened_at: float
    def __init__(self, key: _Optional[str] = ..., state: _Optional[str] = ..., opened_at: _Optional[float] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "cost_per_1k_input", "cost_per_1k_output", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_INPUT_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    cost_per_1k_input: float
    cost_per_1k_output: float
    description: str
    def __init__(self, name: _Optional[str] = ..., cost_per_1k_input: _Optional[float] = ..., cost_per_1k_output: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

class RouteInfo(_message.Message):
    __slots__ = ("name", "model", "threshold", "description", "tier", "metadata", "n_utterances", "n_negative")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    N_UTTERANCES_FIELD_NUMBER: _ClassVar[int]
    N_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    threshold: float
    description: str
    tier: str
    metadata: _containers.ScalarMap[str, str]
    n_utterances: int
    n_negative: int
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., threshold: _Optional[float] = ..., description: _Optional[str] = ..., tier: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., n_utterances: _Optional[int] = ..., n_negative: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("index_version", "semroute_version", "fallback_model", "routes", "models", "encoder_name", "encoder_fingerprint", "encoder_dim", "encoder_max_tokens", "settings_json", "bundle_created", "max_batch_size", "max_wait_us", "policy_version", "policy_json", "tiers", "default_tier", "breakers", "state_store", "state_store_up", "latency_ms")
    class LatencyMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEMROUTE_VERSION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_NAME_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ENCODER_DIM_FIELD_NUMBER: _ClassVar[int]
    ENCODER_MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_JSON_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_CREATED_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_US_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TIER_FIELD_NUMBER: _ClassVar[int]
    BREAKERS_FIELD_NUMBER: _ClassVar[int]
    STATE_STORE_FIELD_NUMBER: _ClassVar[int]
    STATE_STORE_UP_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    semroute_version: str
    fallback_model: str
    routes: _containers.RepeatedCompositeFieldContainer[RouteInfo]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    encoder_name: str
    encoder_fingerprint: str
    encoder_dim: int
    encoder_max_tokens: int
    settings_json: str
    bundle_created: str
    max_batch_size: int
    max_wait_us: int
    policy_version: str
    policy_json: str
    tiers: _containers.RepeatedScalarFieldContainer[str]
    default_tier: str
    breakers: _containers.RepeatedCompositeFieldContainer[BreakerInfo]
    state_store: str
    state_store_up: bool
    latency_ms: _containers.ScalarMap[str, float]
    def __init__(self, index_version: _Optional[str] = ..., semroute_version: _Optional[str] = ..., fallback_model: _Optional[str] = ..., routes: _Optional[_Iterable[_Union[RouteInfo, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., encoder_name: _Optional[str] = ..., encoder_fingerprint: _Optional[str] = ..., encoder_dim: _Optional[int] = ..., encoder_max_tokens: _Optional[int] = ..., settings_json: _Optional[str] = ..., bundle_created: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., max_wait_us: _Optional[int] = ..., policy_version: _Optional[str] = ..., policy_json: _Optional[str] = ..., tiers: _Optional[_Iterable[str]] = ..., default_tier: _Optional[str] = ..., breakers: _Optional[_Iterable[_Union[BreakerInfo, _Mapping]]] = ..., state_store: _Optional[str] = ..., state_store_up: _Optional[bool] = ..., latency_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...
