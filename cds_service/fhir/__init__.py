"""Reading FHIR: which URLs may be fetched (urls), gathering one patient's resources from prefetch and
the FHIR server (gather), code maps (mappings, codes), and turning resources into patient facts in
canonical units (normalize, facts, derive, answers)."""
