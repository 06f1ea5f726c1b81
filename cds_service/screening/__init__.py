"""Population screening: every patient of a FHIR Bulk Data export against every trial, with the same
engine and trial files as the hook. `bulk` groups the export by patient on disk (memory bounded whatever
its size), `run` evaluates the groups across cores, `funnel` counts cohort attrition per criterion,
`output` writes patients.csv/.parquet, funnel.csv and funnel.html."""
