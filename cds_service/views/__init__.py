"""What people see: CDS Hooks cards, order warning cards, the checklist page behind a card, and each
trial as a FHIR ResearchStudy."""
