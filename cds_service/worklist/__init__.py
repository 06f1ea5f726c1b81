"""The coordinator's worklist: stored screens, incremental re-screens, the worklist and the screening log."""
