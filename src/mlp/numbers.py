"""Numbers as mlp writes them in JSON (metrics.json, summary.json, every ``--json``).

Losses and accuracies are computed in float32, which holds about 7 significant digits; the
float64 that Python prints has 17 (``0.5063476943969727``), the last ten of them noise.  Floats
are written with 7 significant digits.  NaN and infinity are not JSON (``json.dumps`` writes a
bare ``NaN`` that jq and JavaScript refuse): they are written as null.
"""

from __future__ import annotations

import json
import math
from typing import Any

SIGNIFICANT = 7


def json_ready(obj: Any) -> Any:
    """``obj`` with every float rounded to SIGNIFICANT digits and every non-finite one made None."""
    if isinstance(obj, float):
        return float(f"{obj:.{SIGNIFICANT}g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_ready(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(value) for value in obj]
    return obj


def dumps(obj: Any, **options) -> str:
    """``json.dumps`` of ``json_ready(obj)``: valid JSON whatever the numbers."""
    return json.dumps(json_ready(obj), allow_nan=False, **options)
