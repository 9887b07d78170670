"""JVM-free serving: export a Spark PipelineModel to JSON, compute features in Python, predict, serve over HTTP.

    export.export_model(spark_model_dir, out_dir, name, version, metrics)  -> out_dir/model.json
    predictor.ExportedModel.load(out_dir).predict_minutes(trip) / .predict_batch(frame)
    app.create_app(loader, admin_key, quality=params.quality)               -> FastAPI app

The API (needs fastapi and prometheus-client; import it from `taxi_duration.serve.app`): `app` composes
`models` (request/response bodies; `request_models(quality)` gives an app's bounds), `routes` (routers),
`deps` (FastAPI dependencies: the served models, the admin key), `serving` (loading, reloading, following an
alias, shadow scoring), `errors`, `metrics` (Prometheus) and `limits` (body size and deadline).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taxi_duration.serve.export import ExportError, export_model
    from taxi_duration.serve.predictor import ExportedModel, ExportedModelError, log_exported_pyfunc

__all__ = ["ExportError", "ExportedModel", "ExportedModelError", "export_model", "log_exported_pyfunc"]
_HOME = {
    "ExportError": "export",
    "export_model": "export",
    "ExportedModel": "predictor",
    "ExportedModelError": "predictor",
    "log_exported_pyfunc": "predictor",
}


def __getattr__(name: str) -> Any:
    """The names above, imported when first used (PEP 562): importing a module of this package does not import
    pandas and the predictor, so the request log's writer process (request_log_files.py) starts with NumPy and
    pyarrow only."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
