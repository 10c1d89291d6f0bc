"""`python -m pipeline --subscription ... --dlq_topic ... --project ... --region ...`"""
from pipeline.main import run

raise SystemExit(run())
