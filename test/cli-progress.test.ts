/**
 * CLI helpers: progress lines off a TTY (one per completed step, elapsed and ETA from this
 * run's steps), the bar's ETA, API option names -> CLI flags in messages, and the subnormal
 * weights warning derived from a conversion report.
 */
import { createProgress, formatDuration, StepClock } from '../src/cli/progress.js';
import { toFlagNames } from '../src/cli/flag-names.js';
import { subnormalCounts, subnormalWarning } from '../src/cli/warnings.js';
import { syntheticReport } from './helpers/synthetic-report.js';

function fakeClock(times: number[]): StepClock {
  let i = 0;
  return new StepClock(() => times[Math.min(i++, times.length - 1)]);
}

test('non-TTY: one line per completed layer with elapsed and ETA; notes as lines; nothing when disabled', () => {
  const lines: string[] = [];
  const sink = { write: (s: string) => lines.push(s), isTTY: false };
  // reset at t=0; each update reads the clock for eta (and elapsed when printing)
  let t = 0;
  const clock = new StepClock(() => t);
  const p = createProgress(true, sink, clock);
  p.note('tokenizing the calibration text');
  p.start(4, 'layers');
  t = 1;
  p.update(0, 'layer 0 statistics');
  t = 5;
  p.update(0, 'layer 0 factorize');
  t = 11;
  p.update(1, 'layer 1 statistics'); // 1 layer in 10 s since the first layer started -> ETA 30 s
  t = 21;
  p.update(2, 'layer 2 statistics'); // 2 in 20 s -> 20 s left
  t = 40;
  p.update(4, 'layer 4 done');
  p.stop();
  expect(lines).toEqual([
    'gqa2mla: tokenizing the calibration text\n',
    'gqa2mla: layers 1/4 done, elapsed 11.0 s, ETA 30.0 s\n',
    'gqa2mla: layers 2/4 done, elapsed 21.0 s, ETA 20.0 s\n',
    'gqa2mla: layers 4/4 done, elapsed 40.0 s, ETA 0.0 s\n',
  ]);
  const quiet: string[] = [];
  const q = createProgress(false, { write: (s: string) => quiet.push(s), isTTY: false });
  q.note('x');
  q.start(2, 'layers');
  q.update(1);
  expect(quiet).toEqual([]);
});

test('a resumed run: the ETA counts only this run\'s steps', () => {
  const c = fakeClock([0, 10, 30]);
  c.reset(); // t=0
  expect(c.eta(30, 32)).toBeNull(); // first sight at layer 30 (resumed), t=10: nothing done yet
  expect(c.eta(31, 32)).toBeCloseTo(20, 10); // 1 step in 20 s (t 10 -> 30) -> 1 left: 20 s
});

test('TTY: the bar gets a finite ETA after the first step', () => {
  let out = '';
  let t = 0;
  const sink = { write: (s: string) => { out += s; return true; }, isTTY: true, columns: 200, cursorTo() { return true; }, clearLine() { return true; }, moveCursor() { return true; }, on() { return sink; }, removeListener() { return sink; } };
  const p = createProgress(true, sink as never, new StepClock(() => t));
  p.start(4, 'layers');
  t = 2;
  p.update(0, 'layer 0');
  t = 10;
  p.update(1, 'layer 1');
  p.stop();
  expect(out).toContain('ETA 24.0 s');
  expect(out).not.toMatch(/ETA (NaN|Infinity|NF)/);
});

test('formatDuration', () => {
  expect(formatDuration(4.24)).toBe('4.2 s');
  expect(formatDuration(187)).toBe('3m07s');
  expect(formatDuration(3720)).toBe('1h02m');
  expect(formatDuration(NaN)).toBe('--');
});

test('API option names become CLI flags; paths and unrelated words stay', () => {
  expect(toFlagNames('kvLoraRank 300 exceeds the maximum 2 x kv_heads x head_dim - qkRopeDim = 224')).toBe('--kv-lora-rank 300 exceeds the maximum 2 x kv_heads x head_dim - --qk-rope-dim = 224');
  expect(toFlagNames('output directory /a/b already exists (pass overwrite: true to replace it)')).toBe('output directory /a/b already exists (pass --force to replace it)');
  expect(toFlagNames('calibInputs must be original', 'convert')).toBe('--calib-inputs must be original');
  expect(toFlagNames('textFile is missing', 'eval-ppl')).toBe('--text is missing');
  expect(toFlagNames('textFile is missing', 'convert')).toBe('--eval-text is missing');
  expect(toFlagNames('seed must be an integer (got 1.5)')).toBe('--seed must be an integer (got 1.5)');
  expect(toFlagNames('contextTokens must be positive; maxNewTokens must be positive; topP must be in (0, 1]')).toBe('--context must be positive; --max-new-tokens must be positive; --top-p must be in (0, 1]');
  expect(toFlagNames('cannot read /x/kvLoraRank/config.json: the seed of it')).toBe('cannot read /x/kvLoraRank/config.json: the seed of it');
});

test('subnormal warning: counts latent and query-norm subnormals, names the layers and the fix', () => {
  const r = syntheticReport({});
  expect(subnormalWarning(r)).toBeNull();
  const withSub = { ...r, settings: { ...r.settings, dtype: 'F16' } };
  withSub.layers = r.layers.map((l, i) => ({ ...l, latentNorm: l.latentNorm ? { ...l.latentNorm, subnormalWeights: i === 1 ? 0 : 100 * (i + 1) } : l.latentNorm }));
  const counts = subnormalCounts(withSub);
  expect(counts.layers).toEqual(withSub.layers.filter((l) => (l.latentNorm?.subnormalWeights ?? 0) > 0).map((l) => l.layer));
  expect(counts.total).toBe(withSub.layers.reduce((s, l) => s + (l.latentNorm?.subnormalWeights ?? 0), 0));
  expect(counts.total).toBeGreaterThan(0);
  const w = subnormalWarning(withSub)!;
  expect(w).toContain(`${counts.total} stored attention weights are F16 subnormals`);
  expect(w).toContain('--dtype BF16');
});
