"""After a call: the end-of-call webhook (webhook.py) validates Millis's payload (models.py, pure
pydantic models of both formats), normalises it into one row with secrets redacted
(normalise.py, redaction/), and delivers it: BigQuery first, a dead letter otherwise
(delivery.py, through service.stores).

Loaded on the first end-of-call only. Never imports service.prefetch.
"""
