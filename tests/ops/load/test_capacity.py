"""The capacity plan's figures: writes counted from the commit plan on real deliveries, measured figures read back
from BENCHMARKS.md, and the section written between its markers."""
from __future__ import annotations

from pathlib import Path

from ops.load import bench, capacity


def test_writes_per_event_come_from_the_commit_plan() -> None:
    assert capacity.writes_by_kind() == {
        "crediting order": 4, "refund (completed, reverses the order)": 4, "subscription cycle": 4,
        "ignored (no ledger effect, e.g. a pending refund)": 1, "ignored (other types, e.g. ON_PAYMENT_COMPLETED)": 1}
    assert capacity.batched_order_writes(1) == 4 and capacity.batched_order_writes(10) == 3.1  # one wallet write
    per_webhook, by_status = capacity.mix_writes(1000)
    assert 1 < per_webhook < 4 and by_status["ignored"] == 1 and by_status["duplicate delivery"] == 0


def test_measured_figures_are_read_back_and_the_section_is_written(tmp_path: Path) -> None:
    text = "\n".join([
        "| Ingress (python -m ingress) (run 1) | 3,000 | 0.300 | x |", "| Ingress (python -m ingress) (run 2) | 3,400 "
        "| 0.250 | x |", "| (b) the pipeline, Firestore sink (batched) | 6000 | 7.6 | 714 |",
        "| (c) ceiling: the sink's LedgerWriter alone | 6000 | 4.5 | 1,337 |",
        "hot wallet: 12.5 wallet commits/s at 50 webhooks/s"])
    assert capacity.measured(text) == {"ingress_rps": 3200, "ingress_cpu_ms": 0.275, "pipeline_eps": 714,
                                       "ceiling_eps": 1337, "hot_wallet_commits_per_s": 12.5}
    section = capacity.section(text, sample=300)
    assert "**What binds first: the single wallet document.**" in section and "12.5 wallet commits/s" in section
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\nintro\n")
    capacity.write_section(section, path)
    capacity.write_section("again", path)
    assert path.read_text().count(capacity.BEGIN) == 1 and "again" in path.read_text()
    bench.write_run(["x"], "now", "1.0 / 1.0 / 1.0", 60, path)
    assert path.read_text().startswith("# Benchmarks\n\n" + bench.BEGIN)
