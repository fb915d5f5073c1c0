-- One row per call with its cost components as columns (credit by component type).
-- ${calls} is the `calls` view here, and `calls_between(start_date, end_date)` in the
-- call_costs_between table function.
SELECT
  calls.session_id,
  calls.call_id,
  calls.agent_id,
  calls.started_at,
  DATE(calls.started_at) AS call_date,
  calls.call_status,
  calls.voip_provider,
  calls.duration_seconds,
  calls.duration_seconds / 60 AS minutes,
  calls.total_credit,
  SUM(IF(cost.type = 'millis', cost.credit, 0)) AS millis_credit,
  SUM(IF(cost.type = 'llm', cost.credit, 0)) AS llm_credit,
  SUM(IF(cost.type = 'tts', cost.credit, 0)) AS tts_credit,
  SUM(IF(cost.type = 'stt', cost.credit, 0)) AS stt_credit,
  SUM(IF(cost.type = 'voip', cost.credit, 0)) AS voip_credit,
  -- Every other type, NULL included: the credit columns always add up to total_credit.
  SUM(
    IF(
      cost.type IS NULL OR cost.type NOT IN ('millis', 'llm', 'tts', 'stt', 'voip'),
      cost.credit,
      0
    )
  ) AS other_credit
FROM ${calls} AS calls
LEFT JOIN UNNEST(calls.cost_breakdown) AS cost
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
