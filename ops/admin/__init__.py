"""Operator tools that talk to PayNow itself (its Management API): reconciliation."""
