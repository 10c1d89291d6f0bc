"""What only the local runner (FnApiRunner) needs: the acking read and its leases, claims, RSS recycling."""
