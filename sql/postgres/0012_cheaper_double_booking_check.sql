-- The double-booking guarantee, kept whole, at a third of the cost per booking.
--
-- 0006's exclusion constraint compared (lot_id, spot_id) as two text columns inside GiST
-- (btree_gist's text support: detoasting and a collation-aware compare at every node). The
-- same rule over one 64-bit hash of the spot's full name costs ~68 µs per insert instead of
-- ~193 µs (30,000 single-row inserts over 100 spots, measured on PostgreSQL 15; see
-- bench/results/reservations.md).
--
-- Equal spots always have equal hashes, so every real overlap is still refused. Two different
-- spots whose names hash alike (odds about n²/2⁶⁵ for n spots in the whole database) would
-- only refuse each other's overlapping bookings: a false refusal, never a double booking.
-- Lot and spot ids cannot contain '/', so the joined name is unambiguous.
--
-- The old index also served the lot-wide "what holds a spot in this window" reads through
-- its (lot_id, range) prefix; a GiST index over the holding rows' time range takes that job
-- (and answers it faster: the lot is a filter, not a text key in every node).
--
-- Both are built inside this migration's transaction: there is no moment without the rule.

ALTER TABLE reservations DROP CONSTRAINT reservations_no_double_booking;
ALTER TABLE reservations ADD CONSTRAINT reservations_no_double_booking EXCLUDE USING gist (
    (hashtextextended(lot_id || '/' || spot_id, 0)) WITH =,
    tstzrange(starts_at, ends_at, '[)') WITH &&
) WHERE (state IN ('requested', 'confirmed', 'checked_in'));
CREATE INDEX reservations_holding_by_time ON reservations
    USING gist (tstzrange(starts_at, ends_at, '[)'))
    WHERE (state IN ('requested', 'confirmed', 'checked_in'));
