"""Beam streaming job: Pub/Sub envelopes -> version gate -> dedupe -> exactly-once Firestore points ledger."""
