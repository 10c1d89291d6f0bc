"""Operations for paynow-ledger: the `paynow` CLI, local emulators and stack, traffic, audit, DLQ tools, drills."""
