-- A payout that failed on chain leaves its amount in payout_pending (docs/adr/0014). A human
-- operator returns it to the supplier's available balance with POST /v1/admin/withdrawals/{id}/return;
-- the withdrawal is then `returned`, once, and the move audited (docs/adr/0014, "Returning a failed
-- payout").
ALTER TABLE withdrawals DROP CONSTRAINT withdrawals_status_check;
ALTER TABLE withdrawals ADD CONSTRAINT withdrawals_status_check
  CHECK (status IN ('pending_approval', 'approved', 'rejected', 'paid', 'failed', 'returned'));
