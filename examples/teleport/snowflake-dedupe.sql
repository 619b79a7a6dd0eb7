-- One row per Teleport event in Snowflake, whatever reached the table twice.
--
-- weir stores each event once per replica (README.md, "Exactly once, across replicas"); an
-- event that two replicas both stored (a resend that went to another pod) is loaded twice by
-- Snowpipe. Run this after section 4 of README.md, in the same schema as PARSEJSON_RAW, and
-- pick one of the two ways below: the view (nothing to run, each query pays for the
-- deduplication) or the stream and task (a table kept deduplicated every 5 minutes, queries
-- pay nothing extra).

USE SCHEMA LOGS_DB.PUBLIC;

-- An event's identity. Every Teleport audit event has a unique `uid`; an event of a session
-- recording without one is identified by its session and index (`sid`, `ei`). NULL when an
-- event has neither (no Teleport event): such rows are never merged with one another.
-- Snowflake's || gives NULL when either side is NULL.
CREATE OR REPLACE FUNCTION TELEPORT_EVENT_KEY(RAW VARIANT)
  RETURNS VARCHAR
  AS $$ COALESCE(RAW:uid::VARCHAR, RAW:sid::VARCHAR || '/' || RAW:ei::VARCHAR) $$;

-- ---- 1. A view: query TELEPORT_EVENTS instead of PARSEJSON_RAW -----------------------------
--
-- The first copy of each event (by its own time; copies are identical). Every query over the
-- view reads and sorts the whole of PARSEJSON_RAW again.

CREATE OR REPLACE VIEW TELEPORT_EVENTS AS
SELECT TELEPORT_EVENT_KEY(RAW_DATA) AS EVENT_KEY,
       RAW_DATA
  FROM PARSEJSON_RAW
QUALIFY EVENT_KEY IS NULL
     OR ROW_NUMBER() OVER (PARTITION BY TELEPORT_EVENT_KEY(RAW_DATA)
                           ORDER BY TRY_TO_TIMESTAMP_TZ(RAW_DATA:time::VARCHAR)) = 1;

-- ---- 2. A stream and a task: query TELEPORT_EVENTS_UNIQUE ---------------------------------
--
-- The stream hands over the rows Snowpipe appended since the task last ran (with
-- SHOW_INITIAL_ROWS, the first run also gets every row already there); the task inserts those
-- whose key the table does not hold yet, one per key. A task is created suspended: RESUME
-- starts it.

CREATE TABLE IF NOT EXISTS TELEPORT_EVENTS_UNIQUE (
  EVENT_KEY VARCHAR,   -- TELEPORT_EVENT_KEY(RAW_DATA)
  RAW_DATA  VARIANT
);

CREATE OR REPLACE STREAM PARSEJSON_RAW_NEW
  ON TABLE PARSEJSON_RAW
  APPEND_ONLY = TRUE
  SHOW_INITIAL_ROWS = TRUE;

CREATE OR REPLACE TASK MERGE_TELEPORT_EVENTS
  -- your warehouse; or, for a serverless task billed per second of work instead:
  -- USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE = 'XSMALL'
  WAREHOUSE = COMPUTE_WH
  SCHEDULE = '5 MINUTES'
  WHEN SYSTEM$STREAM_HAS_DATA('PARSEJSON_RAW_NEW')
AS
MERGE INTO TELEPORT_EVENTS_UNIQUE t
USING (
  SELECT TELEPORT_EVENT_KEY(RAW_DATA) AS EVENT_KEY,
         RAW_DATA
    FROM PARSEJSON_RAW_NEW
  QUALIFY EVENT_KEY IS NULL
       OR ROW_NUMBER() OVER (PARTITION BY TELEPORT_EVENT_KEY(RAW_DATA)
                             ORDER BY TRY_TO_TIMESTAMP_TZ(RAW_DATA:time::VARCHAR)) = 1
) s
-- a NULL key never equals anything: keyless rows are always inserted
ON t.EVENT_KEY = s.EVENT_KEY
WHEN NOT MATCHED THEN
  INSERT (EVENT_KEY, RAW_DATA) VALUES (s.EVENT_KEY, s.RAW_DATA);

ALTER TASK MERGE_TELEPORT_EVENTS RESUME;

-- Check: the keys that PARSEJSON_RAW holds more than once (what the view and the task remove),
-- and that the deduplicated table holds each key once (the two counts are equal).
SELECT TELEPORT_EVENT_KEY(RAW_DATA) AS EVENT_KEY, COUNT(*) AS COPIES
  FROM PARSEJSON_RAW
 WHERE TELEPORT_EVENT_KEY(RAW_DATA) IS NOT NULL
 GROUP BY 1
HAVING COUNT(*) > 1
 ORDER BY COPIES DESC
 LIMIT 20;

SELECT COUNT(EVENT_KEY) AS KEYED_ROWS, COUNT(DISTINCT EVENT_KEY) AS DISTINCT_KEYS
  FROM TELEPORT_EVENTS_UNIQUE;
