/** A tensor handed to the checkpoint writer. */

/** A tensor to store: float32 values converted to `dtype`, or raw bytes already in it. */
export interface OutTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Float32Array | Uint8Array;
}
