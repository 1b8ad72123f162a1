"""The IR with shapes and costs as JSON (`cnndsl compile --emit json`); the schema is `SCHEMA`.

    {"schema": "cnndsl.ir/1", "network": "VGG16", "input_shape": [224, 224, 3],
     "output": "fc3", "output_shape": [1000],
     "totals": {"params": ..., "state": ..., "macs": ..., "flops": ..., "activation_bytes": ...},
     "nodes": [{"id": 0, "name": "input", "op": "input", "attrs": {"shape": [224, 224, 3]},
                "inputs": [], "output_shape": [224, 224, 3], "params": 0, "state": 0, "macs": 0,
                "label": "input", "path": [], "span": {"line": 2, "col": 1, "end_line": 2, "end_col": 16}},
               ...]}

`op` is the op's kind (`conv`, `pool`, `global_pool`, `fc`, `flatten`, `activation`, `bn`, `lrn`,
`dropout`, `concat`, `add`); `attrs` are its normalized parameters (pairs as [h, w], padding `"same"`,
`"valid"` or [[top, bottom], [left, right]]); `inputs` are node ids; nodes are in topological order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cnndsl.lang.report import Report

SCHEMA = "cnndsl.ir/1"


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def to_json(report: Report) -> dict[str, Any]:
    """The IR graph of a checked network, each node with its shape and costs."""
    graph = report.graph
    rows = {row.name: row for row in report.rows}
    nodes = []
    dropped = graph.training_only_nodes
    for node in graph.nodes:
        row = rows.get(node.name)
        nodes.append({
            "id": node.id, "name": node.name, "op": node.op.kind,
            "attrs": {f.name: _plain(getattr(node.op, f.name)) for f in dataclasses.fields(node.op)},
            "inputs": list(node.inputs),
            "output_shape": list(row.output_shape if row else report.input_shape),
            "params": row.params if row else 0, "state": row.state if row else 0, "macs": row.macs if row else 0,
            "label": node.op.label(), "path": [f.label for f in node.path],
            "span": dataclasses.asdict(node.span),
            **({"training_only": True} if node.id in dropped else {}),
        })
    return {
        "schema": SCHEMA, "network": report.name, "input_shape": list(report.input_shape),
        "output": graph.nodes[graph.output].name, "output_shape": list(report.output_shape),
        "totals": {"params": report.params, "state": report.state, "macs": report.macs, "flops": report.flops,
                   "activation_bytes": report.activation_bytes},
        "nodes": nodes,
        # the other outputs: `training_only` heads' layers are marked so and left out of the MACs
        **({"heads": [{"name": h.name, "node": graph.nodes[h.node].name, "training_only": h.training_only}
                      for h in graph.heads]} if graph.heads else {}),
    }
