"""Looking after a cache already filled: retention (gc), audit, cost, doctor, the loader's release.
Imports the floors below it, never `cli`."""
