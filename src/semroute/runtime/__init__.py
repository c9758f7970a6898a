"""Runtime feedback: what the router learns between requests (circuit breakers, observed latency, escalation and
cost budgets, the decision cache, sticky conversations) and where it keeps it (in process, or Redis shared by
replicas). Independent of the gRPC layer; the server wires it in (semroute.server.feedback).

Modules: settings (the route files' ``feedback:`` section), store (the StateStore interface), local (in process),
redis_store (shared), cache (the decision cache), loop (the FeedbackLoop applied on the Route path). Import them
directly: routes.py imports settings, so this package's ``__init__`` imports nothing that imports routes.
"""
