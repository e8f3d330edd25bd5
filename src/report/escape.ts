/**
 * Text escaping and number formatting for the HTML report.
 */

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for HTML/SVG element content and (double- or single-quoted) attribute values. */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ENTITIES[c]);
}

/**
 * A number for people: `digits` significant digits, exponent notation for very large or
 * very small magnitudes, an em dash for missing or non-finite values.
 */
export function fmt(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '\u2014';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e6 || a < 1e-3) return x.toExponential(Math.max(0, digits - 1)).replace(/\.?0+e/, 'e');
  if (Number.isInteger(x) && a < 1e6) return String(x);
  const s = x.toPrecision(digits);
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/** A share as a percentage with one decimal, e.g. `0.8312` -> `83.1%`. */
export function pct(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '\u2014';
  return `${(100 * x).toFixed(1)}%`;
}

/** Fixed decimals, an em dash for missing or non-finite values. */
export function fixed(x: number | null | undefined, decimals: number): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '\u2014';
  return x.toFixed(decimals);
}
