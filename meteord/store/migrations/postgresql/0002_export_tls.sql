-- Per-configuration TLS of exports: a CA file path and the pinned certificates' SHA-256
-- fingerprints as a JSON list (NULL when unset).

ALTER TABLE export_configs ADD COLUMN ca_file TEXT;
ALTER TABLE export_configs ADD COLUMN pinned_certificates TEXT;
