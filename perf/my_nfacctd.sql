-- The table nfacctd's mysql plugin writes in perf/mysql.sh (perf/nfacctd-mysql.conf): pmacct's
-- column names for the configured aggregation primitives (README.mysql, "Aggregation primitives
-- to SQL schema mapping") plus the mandatory counters; InnoDB like goflow's table. @TABLE@ is
-- substituted by perf/mysql.sh.
DROP TABLE IF EXISTS `@TABLE@`;
CREATE TABLE `@TABLE@` (
    peer_ip_src CHAR(45) NOT NULL DEFAULT '0.0.0.0',
    ip_src CHAR(45) NOT NULL DEFAULT '0.0.0.0',
    ip_dst CHAR(45) NOT NULL DEFAULT '0.0.0.0',
    src_port INT UNSIGNED NOT NULL DEFAULT 0,
    dst_port INT UNSIGNED NOT NULL DEFAULT 0,
    ip_proto SMALLINT UNSIGNED NOT NULL DEFAULT 0,
    tos INT UNSIGNED NOT NULL DEFAULT 0,
    tcp_flags INT UNSIGNED NOT NULL DEFAULT 0,
    iface_in INT UNSIGNED NOT NULL DEFAULT 0,
    iface_out INT UNSIGNED NOT NULL DEFAULT 0,
    as_src INT UNSIGNED NOT NULL DEFAULT 0,
    as_dst INT UNSIGNED NOT NULL DEFAULT 0,
    mask_src TINYINT UNSIGNED NOT NULL DEFAULT 0,
    mask_dst TINYINT UNSIGNED NOT NULL DEFAULT 0,
    timestamp_start DATETIME NOT NULL DEFAULT '1970-01-01 00:00:00',
    timestamp_start_residual INT UNSIGNED NOT NULL DEFAULT 0,
    timestamp_end DATETIME NOT NULL DEFAULT '1970-01-01 00:00:00',
    timestamp_end_residual INT UNSIGNED NOT NULL DEFAULT 0,
    packets BIGINT UNSIGNED NOT NULL,
    bytes BIGINT UNSIGNED NOT NULL,
    stamp_inserted DATETIME,
    stamp_updated DATETIME,
    KEY (timestamp_end)
) ENGINE=InnoDB;
