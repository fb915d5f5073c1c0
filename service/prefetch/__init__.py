"""Before a call: the prefetch webhook (webhook.py) finds the caller's profile and answers the
agent's templates (answer.py), reading Firestore over REST (firestore_rest.py) through a cache
and a read coalescer (profiles.py, coalescer.py).

The caller is waiting: this package must never import BigQuery, pydantic, gRPC or the
google-cloud-firestore client, nor anything of service.end_of_call or service.stores.
"""
