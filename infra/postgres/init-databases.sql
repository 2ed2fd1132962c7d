-- Runs once, when the Postgres volume is first initialised: one database per server.
-- Prefect's migrations enable the pg_trgm extension themselves (postgres:16 ships it).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
