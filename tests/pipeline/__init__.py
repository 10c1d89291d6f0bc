"""Tests of the Beam ledger pipeline (pipeline/)."""
