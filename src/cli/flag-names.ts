/**
 * API option names -> CLI flag names, applied to error and warning messages at the CLI
 * boundary. The library's messages name the option the caller passed (`kvLoraRank`,
 * `overwrite: true`); the command line shows the flag the user typed (`--kv-lora-rank`,
 * `--force`). Mapping here keeps one wording per message in the library.
 */

/** Options whose flag is not the kebab-case of the option name, per command ('' = every command). */
const RENAMED: Record<string, Record<string, string>> = {
  '': {
    overwrite: '--force',
    calibFile: '--calib',
    heldOutSamples: '--held-out',
    kvLoraRanks: '--kv-lora-rank',
    qkRopeDims: '--qk-rope-dim',
    contextTokens: '--context',
    maxNewTokens: '--max-new-tokens',
    compareDir: '--compare',
  },
  'eval-ppl': { textFile: '--text' },
  convert: { textFile: '--eval-text' },
};

/** Single-word option names: mapped only as `name: value`, `name` in backticks, or `name must ...`. */
const SINGLE_WORDS = ['overwrite', 'resume', 'seed', 'context', 'dtype', 'device', 'method', 'freqfold', 'temperature', 'prompt', 'seq', 'windows', 'batch', 'target'];

function kebab(name: string): string {
  return `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

function flagOf(name: string, command: string): string {
  return RENAMED[command]?.[name] ?? RENAMED[''][name] ?? kebab(name);
}

/**
 * Rewrites the option names in `message` as the flags of `command`: camelCase option names
 * anywhere (kvLoraRank -> --kv-lora-rank), `overwrite: true` -> --force, and single-word
 * names in the forms listed in SINGLE_WORDS' comment.
 */
export function toFlagNames(message: string, command = ''): string {
  let s = message.replace(/`?\b(overwrite|resume): true`?/g, (_, n: string) => flagOf(n, command));
  s = s.replace(/(?<![-\w.])([a-z]+(?:[A-Z][a-z0-9]*)+)\b(?![(/\w])/g, (m: string, n: string) => (KNOWN_CAMEL.has(n) ? flagOf(n, command) : m));
  for (const w of SINGLE_WORDS) {
    s = s.replace(new RegExp(`\`${w}\``, 'g'), flagOf(w, command));
    s = s.replace(new RegExp(`(^|; |: )${w}( must )`, 'g'), (_, a: string, b: string) => `${a}${flagOf(w, command)}${b}`);
  }
  return s;
}

/** camelCase option names of the API (convert, evalPpl, plan, generate). */
const KNOWN_CAMEL = new Set([
  'calibFile',
  'calibSamples',
  'calibSeqlen',
  'heldOutSamples',
  'qkRopeDim',
  'kvLoraRank',
  'qkRopeDims',
  'kvLoraRanks',
  'qLoraRank',
  'balanceKv',
  'ropeSelection',
  'kvMetric',
  'nopeRotation',
  'outputRefit',
  'latentNorm',
  'calibInputs',
  'qkNorm',
  'checkpointSeconds',
  'contextTokens',
  'contextWindows',
  'contextQueries',
  'textFile',
  'maxNewTokens',
  'topP',
  'compareDir',
]);
