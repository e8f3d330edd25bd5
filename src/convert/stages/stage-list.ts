/**
 * The conversion's stage list: every named step of convert() with the progress event it
 * announces (null: none) and the report timing (StageTimes key) its seconds add to.
 * Progress events and report timings are both read from this one table, so a stage's
 * name is written here only.
 *
 * Invariant: the events a run emits and the buckets its seconds go to depend only on
 * the order in which the stages run, never on the stage modules themselves.
 */
import type { StageTimes } from '../../report-types.js';
import type { ConvertProgress } from '../options.js';

/** A report timing bucket (every StageTimes key but the total). */
export type TimeKey = Exclude<keyof StageTimes, 'total'>;

/** One entry of {@link STAGES}. */
export interface StageDef {
  /** the progress event announced when the stage starts (null: silent) */
  event: ConvertProgress['stage'] | null;
  /** where its seconds go in conversion-report.json's `times` */
  time: TimeKey;
}

/**
 * The stages grouped by the report timing their seconds add to (buckets in StageTimes
 * order, stages in pipeline order within a bucket), each with the progress event it
 * announces when it starts (null: none).
 */
const BY_TIME = {
  tokenize: {
    /** tokenize the calibration text and draw the windows */
    calibrate: 'tokenize',
  },
  read: {
    /** read one decoder layer's weights */
    load: null,
  },
  forward: {
    /** embed the calibration windows (or read an interrupted run's state) */
    embed: 'embed',
    /** hidden states through the layer (the next layer's inputs) */
    propagate: 'propagate',
  },
  statistics: {
    /** moments of the attention input on the statistics windows */
    statistics: 'statistics',
  },
  factorize: {
    /** factorize one candidate of the search */
    candidate: 'factorize',
    /** a closed-form refit of the chosen layer */
    refit: 'factorize',
    /** a refit's tensors rounded to the stored dtype */
    replace: null,
    /** query compression (q_a / q_a_layernorm / q_b) */
    query: 'factorize',
  },
  evaluate: {
    /** the original attention output on the held-out windows */
    reference: null,
    /** a candidate's held-out error */
    evaluateCandidate: 'evaluate',
    /** the held-out error of a refit or of the compressed query */
    heldOut: null,
  },
  write: {
    /** write the converted layer's shard */
    export: 'write',
    /** record the layer (and the resume state when due) */
    save: null,
    /** final norm, lm_head, config, tokenizer files and report */
    finish: null,
  },
} as const satisfies Record<TimeKey, Record<string, StageDef['event']>>;

/** A stage's name. */
export type StageName = { [T in TimeKey]: keyof (typeof BY_TIME)[T] }[TimeKey];

/** Every stage's event and timing bucket, read from {@link BY_TIME}. */
export const STAGES = Object.fromEntries(
  Object.entries(BY_TIME).flatMap(([time, stages]) => Object.entries(stages).map(([name, event]) => [name, { event, time }])),
) as Readonly<Record<StageName, StageDef>>;

/** Fresh zeroed timings. */
export function zeroTimes(): StageTimes {
  return { tokenize: 0, read: 0, forward: 0, statistics: 0, factorize: 0, evaluate: 0, write: 0, total: 0 };
}

const now = () => performance.now() / 1000;

/** Announces stages and times them into StageTimes, as {@link STAGES} says. */
export class StageClock {
  readonly startedAt = now();
  constructor(
    private readonly numLayers: number,
    private readonly onProgress?: (p: ConvertProgress) => void,
  ) {}

  /** Emits `stage`'s event (if any) for `layer`. */
  announce(stage: StageName, layer?: number, message?: string): void {
    const e = STAGES[stage].event;
    if (e) this.onProgress?.({ stage: e, layer, layers: this.numLayers, message });
  }

  /** The final event, after every stage. */
  done(): void {
    this.onProgress?.({ stage: 'done', layer: this.numLayers, layers: this.numLayers });
  }

  /** Runs `fn` as `stage` (announced for `layer`), adding its seconds to `times`. */
  async run<T>(stage: StageName, times: StageTimes, at: { layer?: number; message?: string }, fn: () => T | Promise<T>): Promise<T> {
    this.announce(stage, at.layer, at.message);
    const t = now();
    try {
      return await fn();
    } finally {
      times[STAGES[stage].time] += now() - t;
    }
  }

  /** Seconds since the run started. */
  elapsed(): number {
    return now() - this.startedAt;
  }
}
