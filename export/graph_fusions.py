"""Graph rewrites applied to the exported ONNX graphs before they are saved.

RoPE -> `com.microsoft.RotaryEmbedding`. The canonical model writes interleaved RoPE as
`x * cos + (x @ R) * sin` with R a constant signed pair swap (export/layers.py): four kernels and two passes over
x per rotated tensor, three rotated tensors per decoder layer. onnxruntime's contrib op does it in one kernel
(CPU and CUDA execution providers; DirectML registers it too). The graph already holds this step's cos/sin rows
(`cos`, `sin`: [T, 1, head_dim], each angle repeated for its pair), so the op gets them as its cache with
position 0: row t of the cache is position t of this call, exactly the angles the unfused graph uses.

Only float32 graphs are rewritten by default (in float16 graphs cos/sin are cast first, and the rule leaves them);
with `float16=True` (the per-turn graphs, export/memory_fusions.py) the cast float16 cos/sin become the op's
caches. `rxt-edge verify` checks the fused graphs against the torch model like any other.

Shared-input projections -> one MatMul. Attention projects one input three times (queries, keys, values; the
memory K/V graph twice): three small matrix products per layer, each a kernel call and, once quantized, its own
activation quantization. Their weights are concatenated into one initializer ([K, Nq + Nk + Nv]) and a Split
hands each consumer its columns: one larger product, the same numbers. Quantizers see one ordinary MatMul
with a constant weight.

Grouped memory cross-attention -> no regrouping. The fused memory cross-attention (export/memory_attention.py)
reorders its query heads around `MultiHeadAttention`; `fold_memory_head_groups` moves that order into the query
and output projections' weights (a column / row permutation), leaving one Reshape on each side.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern, rewrite
from rxt_edge.runtimes.operators import DEFAULT_DOMAINS, MS_DOMAIN


def _rope_target(op, x, r, cos, sin):
    return op.Add(op.Mul(x, cos), op.Mul(op.MatMul(x, r), sin))


def _is_pair_swap(r: ir.Value) -> bool:
    """R with (x @ R)[2i] = -x[2i+1] and (x @ R)[2i+1] = x[2i] (export/layers.py `_pair_swap`)."""
    if r.const_value is None:
        return False
    m = r.const_value.numpy()
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] % 2:
        return False
    expected = np.zeros(m.shape, dtype=m.dtype)
    idx = np.arange(0, m.shape[0], 2)
    expected[idx + 1, idx] = -1
    expected[idx, idx + 1] = 1
    return bool(np.array_equal(m, expected))


def _rope_check(context, x, r, cos, sin, dtypes=(ir.DataType.FLOAT,), **_) -> bool:
    shape = x.shape
    return (
        _is_pair_swap(r)
        and x.dtype in dtypes
        and cos.dtype == x.dtype
        and sin.dtype == x.dtype
        and shape is not None
        and len(shape) == 4
        and all(isinstance(d, int) for d in shape[2:])  # [B, T, heads, head_dim], heads and head_dim static
        and cos.shape is not None
        and len(cos.shape) == 3
    )


def _rope_replacement(op, x, r, cos, sin, **_):
    heads, head_dim = x.shape[2], x.shape[3]

    def ints(*values: int):
        return op.Constant(value=ir.tensor(np.array(values, dtype=np.int64)))

    def cache(table):  # [T, 1, head_dim] -> [T, head_dim / 2]: one angle per pair
        return op.Reshape(op.Slice(table, ints(0), ints(head_dim), ints(2), ints(2)), ints(-1, head_dim // 2))

    # [B, T, heads * head_dim]: where x is a view of the projection's output, rotate that output directly
    source = x.producer()
    flat = source.inputs[0] if source is not None and source.op_type == "Reshape" else None
    shape = flat.shape if flat is not None else None
    if (
        shape is None
        or len(shape) != 3
        or shape[2] != heads * head_dim
        or list(shape[:2]) != list(x.shape[:2])
    ):
        flat = op.Reshape(x, ints(0, 0, heads * head_dim))
    rotated = op.RotaryEmbedding(
        flat, ints(0), cache(cos), cache(sin), interleaved=1, num_heads=heads, _domain=MS_DOMAIN
    )
    return op.Reshape(rotated, ints(0, 0, heads, head_dim))


def _rope_check_any(context, x, r, cos, sin, **_) -> bool:
    """float32, or float16 with the float16 cos/sin the graph casts for it (export/layers.py `apply_rope`)."""
    return _rope_check(context, x, r, cos, sin, dtypes=(ir.DataType.FLOAT, ir.DataType.FLOAT16))


ROPE_RULE = pattern.RewriteRule(_rope_target, _rope_replacement, _rope_check, name="InterleavedRoPE")
ROPE_RULE_ANY = pattern.RewriteRule(
    _rope_target, _rope_replacement, _rope_check_any, name="InterleavedRoPE16"
)


def fuse_rope(model: ir.Model, float16: bool = False) -> int:
    """Rewrite every interleaved RoPE of `model` in place; returns how many were fused. `float16`: also in
    float16 graphs, rotating by the float16 cos/sin the unfused graph multiplies with (the per-turn graphs)."""
    before = sum(1 for n in model.graph if n.op_type == "RotaryEmbedding")
    rewrite(model, pattern_rewrite_rules=[ROPE_RULE_ANY if float16 else ROPE_RULE])
    fused = sum(1 for n in model.graph if n.op_type == "RotaryEmbedding") - before
    if fused and MS_DOMAIN not in model.opset_imports:
        model.opset_imports[MS_DOMAIN] = 1
    return fused


def _constant_weight(node: ir.Node | None) -> np.ndarray | None:
    """The 2-D constant right operand (used only there) of a plain MatMul, or None."""
    if (
        node is None
        or node.op_type != "MatMul"
        or node.domain not in ("", "ai.onnx")
        or len(node.inputs) != 2
    ):
        return None
    weight = node.inputs[1]
    if weight is None or weight.const_value is None or len(weight.uses()) != 1:
        return None
    array = weight.const_value.numpy()
    return array if array.ndim == 2 else None


def fuse_shared_input_matmuls(model: ir.Model) -> int:
    """Merge every group of MatMuls that read the same input with constant 2-D weights of one dtype and one
    row count into one MatMul + Split (see the module docstring); returns how many MatMuls were removed."""
    graph = model.graph
    groups: dict[tuple[ir.Value, str, int], list[tuple[ir.Node, np.ndarray]]] = defaultdict(list)
    for node in graph:  # topological order: a group's first node comes first
        weight = _constant_weight(node)
        if weight is not None and node.inputs[0] is not None:  # ir.Value hashes by identity
            groups[(node.inputs[0], str(weight.dtype), weight.shape[0])].append((node, weight))
    removed = 0
    for (source, _, _), members in groups.items():
        if len(members) < 2 or any(node.outputs[0].is_graph_output() for node, _ in members):
            continue  # a graph output keeps its producer (its name is part of the contract)
        first = members[0][0]
        widths = [w.shape[1] for _, w in members]
        stacked = ir.Value(
            name=f"{first.name}_fused_weight",
            const_value=ir.tensor(
                np.concatenate([w for _, w in members], axis=1), name=f"{first.name}_fused_weight"
            ),
        )
        graph.register_initializer(stacked)
        sizes = ir.Value(
            name=f"{first.name}_fused_split",
            const_value=ir.tensor(np.array(widths, dtype=np.int64), name=f"{first.name}_fused_split"),
        )
        graph.register_initializer(sizes)
        product = ir.node("MatMul", [source, stacked], name=f"{first.name}_fused")
        split = ir.node(
            "Split",
            [product.outputs[0], sizes],
            {"axis": -1},
            num_outputs=len(members),
            name=f"{first.name}_split",
        )
        graph.insert_before(first, [product, split])
        for (node, _), part in zip(members, split.outputs, strict=True):
            part.shape, part.type = node.outputs[0].shape, node.outputs[0].type
            node.outputs[0].replace_all_uses_with(part)
        for node, _ in members:
            weight = node.inputs[1]
            graph.remove(node, safe=True)
            graph.initializers.pop(weight.name, None)
        removed += len(members) - 1
    return removed


# --- residual add + RMSNorm -> SkipSimplifiedLayerNormalization ------------------------------------------
def _scalar(value: ir.Value | None) -> float | None:
    if value is None or value.const_value is None:
        return None
    array = value.const_value.numpy()
    return float(array.reshape(())) if array.size == 1 else None


def _only_user(value: ir.Value, op_type: str) -> ir.Node | None:
    users = [u.node for u in value.uses()]
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _rms_norm_of(total: ir.Value) -> tuple[ir.Node, float, ir.Value, list[ir.Node]] | None:
    """The canonical RMSNorm reading `total` (export/layers.py: x / sqrt(mean(x^2) + eps) * w, computed in
    float32; a float16 `total` is cast up first and the result back): (the node whose output is the norm's,
    eps, the weight in `total`'s dtype, its nodes in order), or None."""
    if total.dtype == ir.DataType.FLOAT16:
        for use in total.uses():
            up = use.node
            if up.op_type != "Cast" or up.attributes.get_int("to", 0) != ir.DataType.FLOAT.value:
                continue
            if len(up.outputs[0].uses()) != 2:  # read by the norm's Pow and Div only
                continue
            core = _rms_core(up.outputs[0])
            down = _only_user(core[0].outputs[0], "Cast") if core is not None else None
            if down is None or down.attributes.get_int("to", 0) != ir.DataType.FLOAT16.value:
                continue
            _, eps, weight, nodes = core
            return down, eps, _half(up.graph, weight), [up, *nodes, down]
        return None
    return _rms_core(total)


def _half(graph: ir.Graph, weight: ir.Value) -> ir.Value:
    """The float16 copy of a float32 constant, one initializer per weight (the norm weight of a float16 model,
    cast up in the graph: exact)."""
    name = f"{weight.name}_fp16"
    if name not in graph.initializers:
        array = weight.const_value.numpy().astype(np.float16)
        graph.register_initializer(ir.Value(name=name, const_value=ir.tensor(array, name=name)))
    return graph.initializers[name]


def _rms_core(x: ir.Value) -> tuple[ir.Node, float, ir.Value, list[ir.Node]] | None:
    """x / sqrt(mean(x^2) + eps) * w reading `x`: (its final Mul, eps, the weight, its nodes), or None."""
    for use in x.uses():
        power = use.node
        if power.op_type != "Pow" or power.inputs[0] is not x or _scalar(power.inputs[1]) != 2.0:
            continue
        mean = _only_user(power.outputs[0], "ReduceMean")
        axes = mean.inputs[1] if mean is not None and len(mean.inputs) > 1 else None
        if mean is None or axes is None or axes.const_value is None:
            continue
        if (
            axes.const_value.numpy().tolist() not in ([-1], [2])
            or mean.attributes.get_int("keepdims", 1) != 1
        ):
            continue
        add = _only_user(mean.outputs[0], "Add")
        eps = _scalar(add.inputs[1]) if add is not None else None
        root = _only_user(add.outputs[0], "Sqrt") if eps is not None else None
        div = _only_user(root.outputs[0], "Div") if root is not None else None
        if div is None or div.inputs[0] is not x:
            continue
        mul = _only_user(div.outputs[0], "Mul")
        weight = mul.inputs[1] if mul is not None else None
        if weight is None or weight.const_value is None or len(weight.const_value.shape) != 1:
            continue
        return mul, eps, weight, [power, mean, add, root, div, mul]
    return None


def _split_bias(branch: ir.Value) -> tuple[ir.Value, ir.Value | None]:
    """A residual branch `MatMul + bias` (bias a 1-D constant, both used only here) -> (MatMul output, bias)."""
    add = branch.producer()
    if add is None or add.op_type != "Add" or len(branch.uses()) != 1:
        return branch, None
    product, bias = add.inputs
    if bias is not None and bias.const_value is None:
        product, bias = bias, product
    if (
        product is None
        or bias is None
        or bias.const_value is None
        or len(bias.const_value.shape) != 1
        or product.producer() is None
        or product.producer().op_type != "MatMul"
        or len(product.uses()) != 1
    ):
        return branch, None
    return product, bias


_NORM_DTYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)


def fuse_skip_rms_norm(model: ir.Model) -> int:
    """Every residual `Add` feeding an RMSNorm -> one `com.microsoft.SkipSimplifiedLayerNormalization` (the bias
    of a projection ending the residual branch folded in; the op's fourth output is the sum, for the next
    residual): three to four kernels and passes over the hidden state become one. A plain graph walk (no
    pattern matcher: linear in the graph's size). float32 and float16 graphs (a float16 norm computes in float32
    between two Casts, as the op does inside).
    Returns how many were fused."""
    graph, fused = model.graph, 0
    for node in list(graph):
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or node.graph is None:
            continue
        total = node.outputs[0]
        a, b = node.inputs
        if a is None or b is None or a.dtype not in _NORM_DTYPES or b.dtype != a.dtype:
            continue
        if a.shape is None or len(a.shape) != 3 or total.is_graph_output():
            continue
        norm = _rms_norm_of(total)
        if norm is None:
            continue
        mul, eps, weight, nodes = norm
        skip, bias = _split_bias(b)
        if bias is None:
            a_skip, a_bias = _split_bias(a)
            if a_bias is not None:
                a, b, skip, bias = b, a, a_skip, a_bias
        inputs = [a, skip, weight] + ([bias] if bias is not None else [])
        fused_node = ir.node(
            "SkipSimplifiedLayerNormalization",
            inputs,
            {"epsilon": eps},
            domain=MS_DOMAIN,
            num_outputs=4,
            name=f"{node.name}_skip_rms",
        )
        graph.insert_before(node, fused_node)
        out, _, _, summed = fused_node.outputs
        out.shape, out.type = mul.outputs[0].shape, mul.outputs[0].type
        summed.shape, summed.type = total.shape, total.type
        mul.outputs[0].replace_all_uses_with(out)
        for n in reversed(nodes):
            graph.remove(n, safe=True)
        total.replace_all_uses_with(summed)
        graph.remove(node, safe=True)
        if bias is not None and b.producer() is not None and not b.uses():
            graph.remove(b.producer(), safe=True)
        fused += 1
    if fused and MS_DOMAIN not in model.opset_imports:
        model.opset_imports[MS_DOMAIN] = 1
    return fused


# --- packed QKV into GroupQueryAttention ---------------------------------------------------------------------
def pack_attention_qkv(model: ir.Model) -> int:
    """A GroupQueryAttention whose query, key and value are the three parts of one `Split` (the merged q/k/v
    projection, `fuse_shared_input_matmuls`) takes the projection's output whole instead (its packed-QKV form:
    key and value left empty): one node less per layer, no copy. Returns how many were packed."""
    packed = 0
    for node in list(model.graph):
        if node.op_type != "GroupQueryAttention" or node.domain != MS_DOMAIN:
            continue
        q, k, v = node.inputs[:3]
        split = q.producer() if q is not None else None
        if (
            split is None
            or split.op_type != "Split"
            or len(split.outputs) != 3
            or list(split.outputs) != [q, k, v]
            or split.attributes.get_int("axis", 0) not in (-1, 2)
            or any(len(out.uses()) != 1 for out in split.outputs)
        ):
            continue
        node.replace_input_with(0, split.inputs[0])
        node.replace_input_with(1, None)
        node.replace_input_with(2, None)
        sizes = split.inputs[1] if len(split.inputs) > 1 else None
        model.graph.remove(split, safe=True)
        if sizes is not None and not sizes.uses() and sizes.name in model.graph.initializers:
            model.graph.initializers.pop(sizes.name)
        packed += 1
    return packed


# --- grouped memory cross-attention: head order folded into the projections ------------------------------------
def _single_producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type and len(value.uses()) == 1 else None


def _regrouping(value: ir.Value) -> tuple[ir.Node, ir.Node, ir.Node] | None:
    """`Reshape(Transpose(Reshape(x, 5-D), perm=[0, 1, 3, 2, 4]), 3-D)` ending in `value`: its three nodes."""
    outer = _single_producer(value, "Reshape")
    swap = _single_producer(outer.inputs[0], "Transpose") if outer is not None else None
    if swap is None or list(swap.attributes.get_ints("perm", [])) != [0, 1, 3, 2, 4]:
        return None
    inner = _single_producer(swap.inputs[0], "Reshape")
    return (inner, swap, outer) if inner is not None else None


def _regrouped_output(value: ir.Value) -> tuple[ir.Node, ir.Node, ir.Node] | None:
    """`Reshape(Transpose(Reshape(value, 5-D), perm=[0, 1, 3, 2, 4]), 3-D)` read only by a constant-weight
    MatMul: its three nodes."""
    nodes, perm = [], [0, 1, 3, 2, 4]
    for op_type in ("Reshape", "Transpose", "Reshape"):
        uses = value.uses()
        node = uses[0].node if len(uses) == 1 else None
        if node is None or node.op_type != op_type or uses[0].idx != 0:
            return None
        if op_type == "Transpose" and list(node.attributes.get_ints("perm", [])) != perm:
            return None
        nodes.append(node)
        value = node.outputs[0]
    uses = value.uses()
    if len(uses) != 1 or uses[0].idx != 0 or _constant_weight(uses[0].node) is None:
        return None
    return nodes[0], nodes[1], nodes[2]


def _replace_weight(graph: ir.Graph, node: ir.Node, array: np.ndarray) -> None:
    old = node.inputs[1]
    new = ir.Value(name=f"{old.name}_grouped", const_value=ir.tensor(array, name=f"{old.name}_grouped"))
    graph.register_initializer(new)
    node.replace_input_with(1, new)
    graph.initializers.pop(old.name, None)


def fold_memory_head_groups(model: ir.Model) -> int:
    """Drop the query/output regrouping around each `MultiHeadAttention` of the memory cross-attention
    (export/memory_attention.py) by ordering the heads in the projections' weights instead.

    The op folds query head h = kv * G + g into row g of K/V head kv, which costs a Reshape/Transpose/Reshape
    on each side. Written in head order (g, kv) by the query projection (its output columns permuted) and read
    in that order by the output projection (its input rows permuted), the query is already [B, T * G, Hkv * hd]
    after one free Reshape. RoPE between projection and attention rotates every head by the same angles, so the
    head order does not change it. Folded only where the query comes from a constant-weight MatMul through
    Reshapes (and a RotaryEmbedding, if any), and the output goes straight into a constant-weight MatMul (no
    gate). The per-turn graphs' attentions (export/turn_attention.py) have the same regrouping.
    Returns how many were folded."""
    graph, folded = model.graph, 0
    for mha in list(graph):
        if mha.op_type != "MultiHeadAttention" or mha.domain != MS_DOMAIN:
            continue
        q_side, out_side = _regrouping(mha.inputs[0]), _regrouped_output(mha.outputs[0])
        if q_side is None or out_side is None:
            continue
        last = out_side[2]
        out_proj = last.outputs[0].uses()[0].node
        source = q_side[0].inputs[0]  # back over Reshapes (read only here) to the rotated projection
        while len(source.uses()) == 1 and _single_producer(source, "Reshape") is not None:
            source = source.producer().inputs[0]
        rope = _single_producer(source, "RotaryEmbedding")  # RoPE on the queries, or none (memory write)
        projected = rope.inputs[0] if rope is not None else source
        q_proj = projected.producer() if projected is not None else None
        q_weight = _constant_weight(q_proj) if len(projected.uses()) == 1 else None
        shape = q_side[0].inputs[1].const_value if q_side[0].inputs[1] is not None else None
        if q_weight is None or shape is None:
            continue
        _, _, kv_heads, groups, head_dim = shape.numpy().tolist()
        order = np.arange(kv_heads * groups * head_dim).reshape(kv_heads, groups, head_dim)
        order = order.transpose(1, 0, 2).reshape(-1)  # new column (g, kv, d) <- old column (kv, g, d)
        _replace_weight(graph, q_proj, q_weight[:, order])
        _replace_weight(graph, out_proj, _constant_weight(out_proj)[order, :])
        q_side[2].replace_input_with(0, source)  # [B, T, (g, kv, d)] -> [B, T * G, (kv, d)]: one Reshape
        last.replace_input_with(0, mha.outputs[0])
        for node in (*reversed(out_side[:2]), *reversed(q_side[:2])):
            graph.remove(node, safe=True)
        folded += 1
    _drop_dead_reshapes(graph)
    return folded


def _drop_dead_reshapes(graph: ir.Graph) -> None:
    """Reshapes (and their shape-building nodes) left without users by a fold."""
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph)):
            if node.op_type in ("Reshape", "Concat", "Shape", "Gather", "Unsqueeze") and not any(
                out.uses() or out.is_graph_output() for out in node.outputs
            ):
                graph.remove(node, safe=True)
                changed = True


# --- SiLU -> QuickGelu ---------------------------------------------------------------------------------------
def fuse_silu(model: ir.Model) -> int:
    """Every `x * Sigmoid(x)` (SwiGLU's SiLU) -> one `com.microsoft.QuickGelu` with alpha 1, which is that
    function (x * sigmoid(alpha * x)): two kernels a feed-forward layer become one, on CPU (float32) and CUDA
    (float16/float32); onnxruntime's fp16 converter keeps it float16. Returns how many were fused."""
    graph, fused = model.graph, 0
    for sig in list(graph):
        if sig.op_type != "Sigmoid" or sig.domain not in DEFAULT_DOMAINS or sig.graph is None:
            continue
        x, s = sig.inputs[0], sig.outputs[0]
        if x is None or x.dtype not in _NORM_DTYPES or s.is_graph_output() or len(s.uses()) != 1:
            continue
        mul = s.uses()[0].node
        if mul.op_type != "Mul" or mul.domain not in DEFAULT_DOMAINS or set(mul.inputs) != {x, s}:
            continue
        node = ir.node("QuickGelu", [x], {"alpha": 1.0}, domain=MS_DOMAIN, name=f"{mul.name}_silu")
        graph.insert_before(mul, node)
        out = node.outputs[0]
        out.shape, out.type = mul.outputs[0].shape, mul.outputs[0].type
        mul.outputs[0].replace_all_uses_with(out, replace_graph_outputs=True)
        graph.remove([mul, sig], safe=True)
        fused += 1
    if fused and MS_DOMAIN not in model.opset_imports:
        model.opset_imports[MS_DOMAIN] = 1
    return fused
