/**
 * Warnings the CLI derives from a conversion report after the fact (the report holds the
 * numbers; the CLI says what they mean).
 */
import type { ConversionReport } from '../report-types.js';

/** Layers with subnormal stored weights (exact latent norm and q_a_layernorm) and their total. */
export function subnormalCounts(report: Pick<ConversionReport, 'layers'>): { total: number; layers: number[] } {
  let total = 0;
  const layers: number[] = [];
  for (const l of report.layers) {
    const n = (l.latentNorm?.subnormalWeights ?? 0) + (l.queryCompression?.norm?.subnormalWeights ?? 0);
    if (n > 0) layers.push(l.layer);
    total += n;
  }
  return { total, layers };
}

function layerList(layers: number[]): string {
  return layers.length > 8 ? `${layers.slice(0, 8).join(', ')}, ... (${layers.length} layers)` : layers.join(', ');
}

/**
 * The warning for weights stored as subnormals (float16's range ends at 6.1e-5; the exact
 * latent norm scales latent rows far below it), or null when there are none.
 */
export function subnormalWarning(report: Pick<ConversionReport, 'layers' | 'settings'>): string | null {
  const { total, layers } = subnormalCounts(report);
  if (total === 0) return null;
  const dtype = report.settings.dtype;
  return (
    `${total} stored attention weights are ${dtype} subnormals (layers ${layerList(layers)}) and lose precision; ` +
    `--dtype BF16 or --dtype F32 keeps them normal (same exponent range as float32)`
  );
}
