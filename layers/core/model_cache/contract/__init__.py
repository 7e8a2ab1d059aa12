"""The contracts every side keeps: errors and their names, repo ids and revisions, the S3 layout, the
file selection rules and the manifest. The lowest floor: it imports nothing else of the package."""
