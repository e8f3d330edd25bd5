/**
 * The two rotary layouts of a rope block of `rotDim` rows (DeepSeek's q_pe / k_pe):
 *   half-split (rotate_half, "neox"): pair i = rows (i, i + rotDim/2), frequency i;
 *   interleaved (GPT-J, is_neox_style=False): pair i = rows (2i, 2i + 1), frequency i.
 * vLLM's and SGLang's DeepSeek-V2/V3 code rotate interleaved pairs; transformers does either
 * (rope_interleave). The same pairs with the same frequencies in the other order: moving the
 * rows of q / q_b and kv_a_proj_with_mqa from one layout to the other is a permutation, and
 * every logit q . k is unchanged (both sides are permuted alike).
 */

/** New row order of one rope block: `perm[j]` = the half-split row that becomes interleaved row j. */
export function interleavePermutation(rotDim: number): Int32Array {
  if (!Number.isInteger(rotDim) || rotDim < 2 || rotDim % 2 !== 0) throw new RangeError(`rotary dimension ${rotDim} must be an even integer >= 2`);
  const half = rotDim / 2;
  const perm = new Int32Array(rotDim);
  for (let i = 0; i < half; i++) {
    perm[2 * i] = i;
    perm[2 * i + 1] = i + half;
  }
  return perm;
}

/** Where the rope rows of a weight lie: `blocks` blocks of `blockRows` rows, the rope rows at `offset`. */
export interface RopeRows {
  blocks: number;
  blockRows: number;
  offset: number;
  rotDim: number;
}

/**
 * Rows of a row-major matrix (or vector, cols 1) with every rope block moved from the
 * half-split layout to the interleaved one (`inverse`: back). Other rows are copied as is.
 */
export function permuteRopeRows<T extends Float32Array | Uint16Array | Uint8Array>(data: T, cols: number, rows: RopeRows, inverse = false): T {
  const { blocks, blockRows, offset, rotDim } = rows;
  if (data.length !== blocks * blockRows * cols) throw new RangeError(`rope rows: ${data.length} values, expected ${blocks} x ${blockRows} x ${cols}`);
  if (offset + rotDim > blockRows) throw new RangeError(`rope rows ${offset}..${offset + rotDim} exceed the block of ${blockRows} rows`);
  const perm = interleavePermutation(rotDim);
  const out = data.slice() as T;
  for (let b = 0; b < blocks; b++) {
    const base = b * blockRows + offset;
    for (let j = 0; j < rotDim; j++) {
      const [dst, src] = inverse ? [perm[j], j] : [j, perm[j]];
      out.set(data.subarray((base + src) * cols, (base + src + 1) * cols), (base + dst) * cols);
    }
  }
  return out;
}
