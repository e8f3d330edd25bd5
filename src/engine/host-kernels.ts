/**
 * The layer graph's kernels (graph.ts) on host float32 arrays: the addon's CPU kernels,
 * weights read from a LayerWeights by name, scratch from a Workspace.
 */
import type { RopeTables } from '../model/rope.js';
import { native } from '../native/binding.js';
import type { LayerKernels } from './graph.js';
import { routeTokens } from './moe-routing.js';
import { type LayerWeights, opt, req } from './weights.js';
import type { Workspace } from './workspace.js';

/** Kernels bound to layer `w`, scratch `ws`, and the positions `pos` of the rows with RoPE tables `rope`. */
export function hostKernels(w: LayerWeights, ws: Workspace, pos: Int32Array, rope: RopeTables): LayerKernels<Float32Array> {
  return {
    rope,
    scratch: (name, length) => ws.get(name, length),
    offset: (b, elements) => b.subarray(elements),
    linear: (x, weight, bias, out, o) => {
      const options: Parameters<typeof native.linearAsync>[3] = { rows: o.rows, inDim: o.inDim, outDim: o.outDim, bias: bias ? opt(w, bias, o.outDim) : null };
      if (o.xStride !== undefined) options.xStride = o.xStride;
      if (o.accumulate !== undefined) options.accumulate = o.accumulate;
      return native.linearAsync(x, req(w, weight, o.outDim * o.inDim), out, options);
    },
    rmsNorm: (x, weight, out, o) => native.rmsNormAsync(x, req(w, weight, o.dim), out, o),
    ropeAt: (x, o) => {
      const { rows: _rows, ...ro } = o;
      return native.ropeAsync(x, pos, rope.invFreq, ro);
    },
    attention: (q, k, v, out, o) => native.attentionAsync(q, k, v, out, o),
    swiglu: (gate, up, out, n) => native.swigluAsync(gate, up, out, n),
    route: async (logits, o) => routeTokens({ ...o, logits, bias: o.bias ? req(w, o.bias, o.numExperts) : null }),
    gatherRows: async (x, rows, dim, out) => {
      for (let i = 0; i < rows.length; i++) out.set(x.subarray(rows[i] * dim, (rows[i] + 1) * dim), i * dim);
    },
    scatterAddRows: async (src, rows, weights, dim, out) => {
      for (let i = 0; i < rows.length; i++) {
        const o = rows[i] * dim;
        const wt = weights[i];
        for (let j = 0; j < dim; j++) out[o + j] += wt * src[i * dim + j];
      }
    },
  };
}
