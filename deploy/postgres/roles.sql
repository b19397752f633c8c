-- Least-privilege roles for the GreenStream warehouse on PostgreSQL/RDS.
-- Run once as an administrator (psql -v schema=greenstream -v pipeline=greenstream_pipeline
-- -v analysts=greenstream_analyst -v password=... -f deploy/postgres/roles.sql).
-- The pipeline's role owns its schema (it creates, migrates and loads it) and nothing else;
-- analysts can read it and nothing else.

CREATE ROLE :"pipeline" LOGIN PASSWORD :'password';
CREATE ROLE :"analysts" NOLOGIN;

CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"pipeline";
REVOKE ALL ON SCHEMA :"schema" FROM PUBLIC;
-- Nobody but owners may create objects in public (the default since PostgreSQL 15; explicit here).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

GRANT USAGE ON SCHEMA :"schema" TO :"analysts";
GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO :"analysts";
-- Tables (and day partitions) the pipeline creates later are readable by analysts too.
ALTER DEFAULT PRIVILEGES FOR ROLE :"pipeline" IN SCHEMA :"schema" GRANT SELECT ON TABLES TO :"analysts";
