-- Numbering lanes handed to the browser extension's instances on a device without an agent
-- (store::extension): each browser profile numbers its visits in its own lane, so two pupils'
-- profiles on one Chromebook never reuse a sequence number.
ALTER TABLE agents ADD COLUMN extension_lanes BIGINT NOT NULL DEFAULT 0;
