"""Serve an exported model folder the way `taxi-duration serve --model-dir` does, with a choice of route class for
the prediction endpoints: the route A/B of benchmarks/serve.py (both variants started by this same script).

Usage: python benchmarks/_serve_app.py MODEL_DIR PORT [--standard-route]
"""

import gc
import sys
from pathlib import Path

import uvicorn

from taxi_duration.serve.app import create_app
from taxi_duration.serve.predictor import ExportedModel


def main() -> None:
    folder, port = Path(sys.argv[1]), int(sys.argv[2])
    model = ExportedModel.load(folder)
    app = create_app(lambda: model, None, fast_route="--standard-route" not in sys.argv[3:])
    gc.collect()
    gc.freeze()  # as the CLI does before serving
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
