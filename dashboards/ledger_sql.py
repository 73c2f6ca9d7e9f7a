"""SQL the dashboards run against the ledger through Grafana's PostgreSQL datasource.

Grafana expands `$__timeFrom()`/`$__timeTo()` to the dashboard range as quoted RFC 3339
timestamps, and `${var:sqlstring}` to the variable as a quoted SQL string with its quotes
doubled, so a search text can never leave its literal. Money is integer micro-dollars in the
ledger; the division by 1e6 gives the USD the panels display.

Both queries cover the UTC days the range touches and give the same numbers as the admin API
(`ledger.reports`). The per-user panel does what the API's cost table does: it ranks the users
matching the search by their spend over the range, summed from `period_spend` over the range's
whole months, weeks and days (a few dozen index entries per user whatever the range), keeps the
`TOP_USERS` most expensive, and sums messages, tokens and distinct chats from the daily rollups
for those users only. A refresh costs O(users x tiles) for the ranking plus O(top users x days
x models) for the figures, not O(users x days x models): for 400 days of 10,000 users, from
over a second to about 0.15 s. The per-chat panel reads one user's rows of the per-chat daily
rollup.
"""

from __future__ import annotations

from ledger.reports import MAX_PER_PAGE

# The per-user panel lists this many users, the most expensive first: as many as one page of
# the admin API's cost table holds, so the panel equals its first page at the largest size.
TOP_USERS = MAX_PER_PAGE

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

# The range's days tiled as `ledger.periods.covering_periods` tiles them for the cost table:
# the calendar months that fit whole ([first_month, end_month), empty when none does), the ISO
# weeks (Monday to Sunday) whose seven days are all outside those months, then the other days.
# Any tiling sums to the same spend; this one reads a few dozen rows per user whatever the
# range, where the daily rows number one per active day.
_TILES = """\
months AS (
  SELECT
    (date_trunc('month', (days.first_day - 1)::timestamp) + interval '1 month')::date
      AS first_month,
    date_trunc('month', (days.last_day + 1)::timestamp)::date AS end_month
  FROM days
), loose_days AS (
  SELECT each.day::date AS day, date_trunc('week', each.day)::date AS week_start
  FROM days, months, generate_series(days.first_day::timestamp, days.last_day::timestamp,
                                     interval '1 day') AS each(day)
  WHERE each.day < months.first_month OR each.day >= months.end_month
), whole_weeks AS (
  SELECT week_start FROM loose_days GROUP BY week_start HAVING COUNT(*) = 7
), tiles AS (
  SELECT 'month' AS period, each.month_start::date AS period_start
  FROM months, generate_series(months.first_month::timestamp,
                               months.end_month::timestamp - interval '1 month',
                               interval '1 month') AS each(month_start)
  UNION ALL
  SELECT 'week', week_start FROM whole_weeks
  UNION ALL
  SELECT 'day', day FROM loose_days
  WHERE week_start NOT IN (SELECT week_start FROM whole_weeks)
)"""

# One index-only range of `period_spend` per kind of tile, as the cost table reads it (an OR
# of the three kinds would read the table's pages).
_SPEND_OF = """\
    SELECT s.user_id, s.cost_micros FROM period_spend s
    WHERE s.period = '{period}' AND s.period_start = ANY (ARRAY(
      SELECT tiles.period_start FROM tiles WHERE tiles.period = '{period}'))"""

# Why SQL and not PromQL for the per-user cost table: the table must hold exact totals over the
# dashboard range for users found by username *or* display name. increase(...[$__range])
# extrapolates between samples, forgets what is older than Prometheus' retention and cannot
# count distinct chats over a range; the ledger's rollups have all of it, and the search matches
# the admin API's `q` (case-insensitive substring, `%` and `_` taken literally).
# As in `ledger.reports.cost_table`, the order is the `period_spend` ranking and the figures are
# the daily rollups' for the ranked users (both written in the same transaction as each message,
# so the spend ranked by is the cost shown); `user_id = ANY (ARRAY(...))` makes those reads
# ranges of the rollups' (user_id, day, ...) indexes.
PER_USER_COST = f"""\
WITH days AS (
{_DAYS}
), {_TILES}, search AS (
  SELECT '%' || replace(replace(replace(lower(${{search:sqlstring}}),
    '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%' AS pattern
), spend AS (
  SELECT tiled.user_id, SUM(tiled.cost_micros) AS cost_micros
  FROM (
{_SPEND_OF.format(period="month")}
    UNION ALL
{_SPEND_OF.format(period="week")}
    UNION ALL
{_SPEND_OF.format(period="day")}
  ) AS tiled
  GROUP BY tiled.user_id
), top_users AS (
  SELECT u.id, u.username, u.name, spend.cost_micros
  FROM spend
  JOIN users u ON u.id = spend.user_id
  CROSS JOIN search
  WHERE lower(u.username) LIKE search.pattern ESCAPE '\\'
    OR lower(u.name) LIKE search.pattern ESCAPE '\\'
  ORDER BY spend.cost_micros DESC, u.username
  LIMIT {TOP_USERS}
), usage AS (
  SELECT
    d.user_id,
    SUM(d.cost_micros) AS cost_micros,
    SUM(d.messages) AS messages,
{_TOKEN_SUMS}
  FROM daily_usage d, days
  WHERE d.user_id = ANY (ARRAY(SELECT id FROM top_users))
    AND d.day BETWEEN days.first_day AND days.last_day
  GROUP BY d.user_id
), chat_counts AS (
  SELECT c.user_id, COUNT(DISTINCT c.chat_id) AS chats
  FROM chat_daily_usage c, days
  WHERE c.user_id = ANY (ARRAY(SELECT id FROM top_users))
    AND c.day BETWEEN days.first_day AND days.last_day
  GROUP BY c.user_id
)
SELECT
  top_users.username AS "username",
  top_users.name AS "name",
  usage.cost_micros / 1e6 AS "cost_usd",
  usage.messages AS "messages",
  COALESCE(chat_counts.chats, 0) AS "chats",
  usage.input_tokens AS "input_tokens",
  usage.output_tokens AS "output_tokens",
  usage.cache_read_tokens AS "cache_read_tokens",
  usage.cache_write_tokens AS "cache_write_tokens"
FROM top_users
JOIN usage ON usage.user_id = top_users.id
LEFT JOIN chat_counts ON chat_counts.user_id = top_users.id
ORDER BY top_users.cost_micros DESC, top_users.username
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
