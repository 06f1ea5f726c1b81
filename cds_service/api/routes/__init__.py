"""One APIRouter per area: CDS Hooks, REST match, trials, checklist pages, admin, health."""
