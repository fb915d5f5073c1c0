"""Where rows and letters are kept: the two BigQuery write APIs (bigquery.py for insertAll and the
tables, storage_write.py for the Storage Write API), their shared promise and errors (errors.py),
the dead letters in Firestore (dead_letters.py) and the google-cloud-firestore client
(firestore.py).

Stores know nothing of HTTP (no flask, nothing of service.web) nor of Millis's payloads (nothing
of service.end_of_call): they take rows held to service/stored_row.py's rules.
"""
