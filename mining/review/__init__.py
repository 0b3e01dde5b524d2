"""What a reviewer looks at and decides: reviewers' decisions, review queues and their
samplers (a registry), suspected label errors, and the images a source spec names.
Imports the core, search and evaluation rooms."""
