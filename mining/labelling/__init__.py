"""Batches out to annotation vendors and labels back: export, the formats (a registry of
writers and parsers), Label Studio's REST API, label import.
Imports the core, search and review rooms."""
