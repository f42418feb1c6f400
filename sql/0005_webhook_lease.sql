-- Webhook deliveries are claimed with a lease instead of a transaction held open while
-- the receiver answers: a claimed row has leased_until in the future, is delivered with
-- no transaction open, then recorded. A rig process that dies mid-delivery leaves a
-- lease that simply runs out, and the event is sent again (at least once).
ALTER TABLE webhook_deliveries ADD COLUMN leased_until timestamptz;
