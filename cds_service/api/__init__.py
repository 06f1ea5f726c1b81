"""The HTTP edge: a small app factory, a router per area, the CDS Hooks wire models, client
authentication and the middleware that keeps input out of logs and tracebacks.

Request flow: api (this package) -> fhir (gather, normalize) -> eligibility (evaluate) -> views (cards).
"""
