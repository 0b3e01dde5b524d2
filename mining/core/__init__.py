"""The lake itself, below every other room: the typed config, the errors, the device
policy, the tables' schemas, the lake on storage, the one Delta writer, the read-only
DuckDB views, named sets, the job summary and serialisation, statistics and media.
Imports nothing of mining's other rooms."""
