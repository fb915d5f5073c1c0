-- Cost per calendar month (UTC) and agent.
SELECT
  DATE_TRUNC(call_date, MONTH) AS month,
  agent_id,
  COUNT(*) AS calls,
  SUM(minutes) AS minutes,
  SUM(total_credit) AS total_credit,
  SAFE_DIVIDE(SUM(total_credit), SUM(minutes)) AS credit_per_minute,
  SUM(millis_credit) AS millis_credit,
  SUM(llm_credit) AS llm_credit,
  SUM(tts_credit) AS tts_credit,
  SUM(stt_credit) AS stt_credit,
  SUM(voip_credit) AS voip_credit,
  SUM(other_credit) AS other_credit
FROM `${project}.${dataset}.call_costs`
GROUP BY month, agent_id
