-- One row per Millis session: the latest delivery wins.
-- Millis, a proxy, a replay or a backfill may deliver the same session more than once, and
-- BigQuery's insertId de-duplication is best effort only, so every report reads this view.
SELECT
  * EXCEPT (delivery_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY received_at DESC) AS delivery_rank
  FROM `${project}.${dataset}.call_events`
)
WHERE delivery_rank = 1
