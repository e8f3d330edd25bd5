/** Rank agreement of two score lists (shared by the criterion benches). */

/** Kendall's tau-a between two equally long score lists (1: same order). */
export function kendallTau(a: number[], b: number[]): number {
  let s = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++)
    for (let j = i + 1; j < a.length; j++) {
      s += Math.sign(a[i] - a[j]) * Math.sign(b[i] - b[j]);
      n++;
    }
  return n ? s / n : 1;
}
