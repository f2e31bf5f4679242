-- The table nfacctd's pgsql plugin writes in perf/postgres.sh (perf/nfacctd-pgsql.conf):
-- pmacct's column names for the configured aggregation primitives (README.pgsql, "Aggregation
-- primitives to SQL schema mapping") plus the mandatory counters. :table is set by psql -v.
DROP TABLE IF EXISTS :"table";
CREATE TABLE :"table" (
    peer_ip_src inet NOT NULL DEFAULT '0.0.0.0',
    ip_src inet NOT NULL DEFAULT '0.0.0.0',
    ip_dst inet NOT NULL DEFAULT '0.0.0.0',
    port_src INT NOT NULL DEFAULT 0,
    port_dst INT NOT NULL DEFAULT 0,
    ip_proto SMALLINT NOT NULL DEFAULT 0,
    tos INT NOT NULL DEFAULT 0,
    tcp_flags SMALLINT NOT NULL DEFAULT 0,
    iface_in BIGINT NOT NULL DEFAULT 0,
    iface_out BIGINT NOT NULL DEFAULT 0,
    as_src BIGINT NOT NULL DEFAULT 0,
    as_dst BIGINT NOT NULL DEFAULT 0,
    mask_src SMALLINT NOT NULL DEFAULT 0,
    mask_dst SMALLINT NOT NULL DEFAULT 0,
    timestamp_start timestamp without time zone NOT NULL DEFAULT '0001-01-01 00:00:00',
    timestamp_start_residual INT NOT NULL DEFAULT 0,
    timestamp_end timestamp without time zone NOT NULL DEFAULT '0001-01-01 00:00:00',
    timestamp_end_residual INT NOT NULL DEFAULT 0,
    packets BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    stamp_inserted timestamp without time zone,
    stamp_updated timestamp without time zone
);
