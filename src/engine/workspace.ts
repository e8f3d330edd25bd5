/**
 * Reusable float32 scratch buffers for the layer forward: one named buffer per role,
 * grown on demand and handed out as views, so a pass over many layers allocates once.
 */
export class Workspace {
  private readonly bufs = new Map<string, Float32Array>();

  /** A view of `n` floats of buffer `name` (contents unspecified). */
  get(name: string, n: number): Float32Array {
    let b = this.bufs.get(name);
    if (!b || b.length < n) {
      b = new Float32Array(n);
      this.bufs.set(name, b);
    }
    return b.subarray(0, n);
  }

  /** Total bytes held. */
  get bytes(): number {
    let s = 0;
    for (const b of this.bufs.values()) s += b.byteLength;
    return s;
  }

  /** Drops every buffer. */
  clear(): void {
    this.bufs.clear();
  }
}
