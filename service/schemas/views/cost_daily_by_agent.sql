-- Cost per day and agent: calls, minutes, total credit and credit by component type.
SELECT
  call_date,
  agent_id,
  COUNT(*) AS calls,
  SUM(minutes) AS minutes,
  SUM(total_credit) AS total_credit,
  SUM(millis_credit) AS millis_credit,
  SUM(llm_credit) AS llm_credit,
  SUM(tts_credit) AS tts_credit,
  SUM(stt_credit) AS stt_credit,
  SUM(voip_credit) AS voip_credit,
  SUM(other_credit) AS other_credit
FROM `${project}.${dataset}.call_costs`
GROUP BY call_date, agent_id
