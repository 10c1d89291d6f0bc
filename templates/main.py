"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): hands the template parameters to the pipeline."""
import sys

from pipeline.main import run

if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
