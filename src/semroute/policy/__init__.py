"""Routing policy: rules, tiers, PII-aware compliance, and the choice among a route's candidate models.

Modules: ``schema`` (the ``policy:`` section as written), ``compile`` (cross-checks with file:line errors),
``candidates`` (the models each route and the fallback may go to, checked against the declared models),
``pii`` (PII and secrets detection: kinds only), ``rules`` (conditions compiled over one RE2 pass), ``choose``
(constraints, then the objective), ``engine`` (the order of evaluation), ``types`` (what they pass around,
including the plug-in points ``RuntimeView`` and ``RuntimeSource``). See docs/policy.md.

Kept free of imports of the rest of semroute at package level: ``routes`` imports ``policy.schema``.
"""
