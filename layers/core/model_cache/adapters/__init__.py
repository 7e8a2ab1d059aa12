"""The outside world as the pipeline sees it: the Hub's API, where the Hub token comes from, CloudWatch
metrics, progress on a console. Imports only `contract`."""
