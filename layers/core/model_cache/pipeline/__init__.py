"""Putting a Hub snapshot into S3: plan, transfer, verify, publish, the claims and the in-flight ledger,
the state machine's tasks (`steps`), the Fargate copier and the one-process engine. Imports `contract` and
`adapters`, never `operations` or `cli`."""
