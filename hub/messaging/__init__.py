"""Node-to-node messaging: RPC, mailboxes, payload codecs."""
