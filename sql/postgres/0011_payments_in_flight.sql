-- One payment in flight per thing paid for, and every open payment can be asked again.
--
-- requested_method: the payment method token the customer gave (the provider's token, never
-- card data: a run of 13 digits is refused), kept from the start so that a payment whose
-- provider answer was lost (or whose process died while asking) can be sent again under the
-- same provider idempotency key: the provider then replays the first attempt or makes it,
-- never a second charge.
--
-- The two partial unique indexes allow at most one open payment (created, requires_action,
-- processing, pending_unknown) per parking session (exit payments) and per reservation
-- (prepayments): two payments of the same bill under different idempotency keys could both
-- succeed. The API answers 409 `payment-in-progress`, or cancels an abandoned 3-D Secure
-- attempt first.
--
-- operator_actions: changing a lot's tariff is audited like the gate actions.

ALTER TABLE payments ADD COLUMN requested_method text
    CHECK (requested_method IS NULL OR requested_method !~ '[0-9]{13}');

CREATE UNIQUE INDEX payments_one_open_exit ON payments (session_id)
    WHERE purpose = 'exit'
      AND status IN ('created', 'requires_action', 'processing', 'pending_unknown');
CREATE UNIQUE INDEX payments_one_open_prepayment ON payments (reservation_id)
    WHERE purpose = 'reservation'
      AND status IN ('created', 'requires_action', 'processing', 'pending_unknown');

ALTER TABLE operator_actions
    DROP CONSTRAINT operator_actions_action_check,
    ADD CONSTRAINT operator_actions_action_check
        CHECK (action IN ('gate_open', 'emergency_start', 'emergency_end', 'tariff_set'));
