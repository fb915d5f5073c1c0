-- Cost per day, agent, component type and provider.
SELECT
  DATE(calls.started_at) AS call_date,
  calls.agent_id,
  cost.type AS cost_type,
  cost.provider,
  COUNT(DISTINCT calls.session_id) AS calls,
  SUM(cost.credit) AS credit
FROM `${project}.${dataset}.calls` AS calls
CROSS JOIN UNNEST(calls.cost_breakdown) AS cost
GROUP BY 1, 2, 3, 4
