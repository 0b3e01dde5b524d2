"""Did the model get better, and break nothing: trained model versions, slices, metrics
per slice and version with regression alarms, detection mAP, drift, model cards.
Imports the core room only."""
