"""millis-webhooks: the Millis AI prefetch and end-of-call webhooks on Firestore and BigQuery."""
