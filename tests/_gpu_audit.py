"""A pytest plugin for ``test_gpu_check_scripts.py``: after collection, writes one JSON line per
test to ``$FSRF_GPU_AUDIT`` with its node id, whether it carries the ``gpu`` mark and the reasons
of its ``skipif`` marks, then deselects everything (nothing runs).

Loaded with ``-p _gpu_audit`` in a subprocess whose ``PYTHONPATH`` holds this folder.
"""

import json
import os


def pytest_collection_modifyitems(config, items):
    with open(os.environ["FSRF_GPU_AUDIT"], "w", encoding="utf-8") as fh:
        for it in items:
            reasons = [str(m.kwargs.get("reason", "")) for m in it.iter_markers("skipif")]
            fh.write(json.dumps({"id": it.nodeid, "gpu": it.get_closest_marker("gpu") is not None,
                                 "skipif": reasons}) + "\n")
    config.hook.pytest_deselected(items=list(items))
    items[:] = []
