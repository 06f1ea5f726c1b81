"""Trial authoring: the source text kept beside each trial file (sources), the linter that checks a
trial file and says how to fix it (lint), the import of a ClinicalTrials.gov record (ctgov), and the
diff of a trial's criteria against a newer registry text."""
