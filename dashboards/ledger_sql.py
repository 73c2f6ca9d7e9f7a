"""SQL the dashboards run against the ledger through Grafana's PostgreSQL datasource.

Grafana expands `$__timeFrom()`/`$__timeTo()` to the dashboard range as quoted RFC 3339
timestamps, and `${var:sqlstring}` to the variable as a quoted SQL string with its quotes
doubled, so a search text can never leave its literal. Money is integer micro-dollars in the
ledger; the division by 1e6 gives the USD the panels display.

Both queries read the daily rollups, as the admin API's user detail does and its cost table
does for the users of a page (`ledger.reports`; the cost table ranks from `period_spend`): the
range covers the UTC days it touches and the numbers are the same in both places. The per-user
panel returns every user with all their figures, so a refresh costs O(days x users x models)
whatever the traffic: about what the cost table cost before it ranked from `period_spend`
(seconds for a year of 10,000 busy users).
"""

from __future__ import annotations

# Whole UTC days touched by the half-open range [from, to): the rollups have day granularity.
_DAYS = """\
  SELECT
    (($__timeFrom())::timestamptz AT TIME ZONE 'UTC')::date AS first_day,
    ((($__timeTo())::timestamptz - interval '1 microsecond') AT TIME ZONE 'UTC')::date
      AS last_day"""

_TOKEN_SUMS = """\
    SUM(d.input_tokens) AS input_tokens,
    SUM(d.output_tokens) AS output_tokens,
    SUM(d.cache_read_tokens) AS cache_read_tokens,
    SUM(d.cache_write_tokens + d.cache_write_1h_tokens) AS cache_write_tokens"""

# Why SQL and not PromQL for the per-user cost table: the table must hold exact totals over the
# dashboard range for users found by username *or* display name. increase(...[$__range])
# extrapolates between samples, forgets what is older than Prometheus' retention and cannot
# count distinct chats over a range; the ledger's rollups have all of it, and the search matches
# the admin API's `q` (case-insensitive substring, `%` and `_` taken literally).
PER_USER_COST = f"""\
WITH days AS (
{_DAYS}
), search AS (
  SELECT '%' || replace(replace(replace(lower(${{search:sqlstring}}),
    '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%' AS pattern
), usage AS (
  SELECT
    d.user_id,
    SUM(d.cost_micros) AS cost_micros,
    SUM(d.messages) AS messages,
{_TOKEN_SUMS}
  FROM daily_usage d, days
  WHERE d.day BETWEEN days.first_day AND days.last_day
  GROUP BY d.user_id
), chat_counts AS (
  SELECT c.user_id, COUNT(DISTINCT c.chat_id) AS chats
  FROM chat_daily_usage c, days
  WHERE c.day BETWEEN days.first_day AND days.last_day
  GROUP BY c.user_id
)
SELECT
  u.username AS "username",
  u.name AS "name",
  usage.cost_micros / 1e6 AS "cost_usd",
  usage.messages AS "messages",
  COALESCE(chat_counts.chats, 0) AS "chats",
  usage.input_tokens AS "input_tokens",
  usage.output_tokens AS "output_tokens",
  usage.cache_read_tokens AS "cache_read_tokens",
  usage.cache_write_tokens AS "cache_write_tokens"
FROM users u
JOIN usage ON usage.user_id = u.id
LEFT JOIN chat_counts ON chat_counts.user_id = u.id
CROSS JOIN search
WHERE lower(u.username) LIKE search.pattern ESCAPE '\\'
  OR lower(u.name) LIKE search.pattern ESCAPE '\\'
ORDER BY usage.cost_micros DESC, u.username
"""

# Chat ids are unbounded: as Prometheus labels they would explode the series count, so the
# per-chat breakdown is read from the ledger's per-chat daily rollup.
PER_CHAT = f"""\
WITH days AS (
{_DAYS}
)
SELECT
  ch.external_id AS "chat",
  MIN(d.day) AS "first_day",
  MAX(d.day) AS "last_day",
  SUM(d.messages) AS "messages",
  SUM(d.cost_micros) / 1e6 AS "cost_usd",
{_TOKEN_SUMS}
FROM chat_daily_usage d
JOIN chats ch ON ch.id = d.chat_id
JOIN users u ON u.id = d.user_id
CROSS JOIN days
WHERE u.username = ${{user:sqlstring}}
  AND d.day BETWEEN days.first_day AND days.last_day
GROUP BY ch.external_id
ORDER BY SUM(d.cost_micros) DESC, ch.external_id
LIMIT 500
"""
