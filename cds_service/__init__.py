"""trial-matcher: a CDS Hooks service matching patients to clinical trials from FHIR R4 data."""

__version__ = "0.1.0"
