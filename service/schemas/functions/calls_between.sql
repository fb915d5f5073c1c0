-- One row per Millis session that started between start_date and end_date (inclusive, UTC),
-- the latest delivery winning, as the `calls` view but reading only those days' partitions:
-- the date filter comes before the ranking, so BigQuery prunes partitions.
SELECT
  * EXCEPT (delivery_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY received_at DESC) AS delivery_rank
  FROM `${project}.${dataset}.call_events`
  WHERE started_at >= TIMESTAMP(start_date)
    AND started_at < TIMESTAMP(DATE_ADD(end_date, INTERVAL 1 DAY))
)
WHERE delivery_rank = 1
