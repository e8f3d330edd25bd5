/**
 * Progress on stderr, unless --json or --quiet: a bar (cli-progress) when stderr is a TTY,
 * otherwise one plain line each time a step completes (logs, CI, nohup). Both show the
 * elapsed time and an ETA computed here from the completed steps of this run (the time per
 * step so far times the steps left), so a resumed run's skipped steps do not distort it.
 */
import cliProgress from 'cli-progress';

/** A progress reporter. */
export interface Progress {
  /** Starts counting `total` steps named `label` (e.g. 'layers'); restarts when called again. */
  start(total: number, label: string): void;
  /** `value` steps are done; `stage` says what runs now. */
  update(value: number, stage?: string): void;
  /** A one-off line (e.g. 'tokenize'), printed in both modes. */
  note(text: string): void;
  stop(): void;
}

/** Where progress goes: a writable stream and whether it is a terminal. */
export interface ProgressSink {
  write(s: string): unknown;
  isTTY?: boolean;
}

/** Seconds as "4.2 s", "3m07s" or "1h02m". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Timing of one counted run: elapsed time and ETA from the steps completed since the first update. */
export class StepClock {
  private t0 = 0;
  private v0: number | null = null;
  private tFirst = 0;
  private readonly now: () => number;
  constructor(now: () => number = () => performance.now() / 1000) {
    this.now = now;
  }
  /** Restarts the clock. */
  reset(): void {
    this.t0 = this.now();
    this.v0 = null;
  }
  /** Seconds since the reset. */
  elapsed(): number {
    return this.now() - this.t0;
  }
  /**
   * Seconds left for `total` steps with `value` done: the time per step since the first call
   * (whose value is the starting point, e.g. a resumed layer) times the steps left; null until
   * a step of this run completed.
   */
  eta(value: number, total: number): number | null {
    const t = this.now();
    if (this.v0 === null) {
      this.v0 = value;
      this.tFirst = t;
    }
    const done = value - this.v0;
    if (done <= 0) return value >= total ? 0 : null;
    return ((t - this.tFirst) / done) * Math.max(0, total - value);
  }
}

function silent(): Progress {
  return { start() {}, update() {}, note() {}, stop() {} };
}

/** Plain lines: one per completed step, with elapsed time and ETA. */
function lineProgress(sink: ProgressSink, clock: StepClock): Progress {
  let total = 0;
  let label = '';
  let last = -1;
  return {
    start(t, l) {
      total = t;
      label = l;
      last = -1;
      clock.reset();
    },
    update(value) {
      if (total === 0) return;
      const eta = clock.eta(value, total);
      if (last < 0) last = value;
      if (value <= last) return;
      last = value;
      const etaText = eta === null ? '--' : formatDuration(eta);
      sink.write(`gqa2mla: ${label} ${value}/${total} done, elapsed ${formatDuration(clock.elapsed())}, ETA ${etaText}\n`);
    },
    note(text) {
      sink.write(`gqa2mla: ${text}\n`);
    },
    stop() {
      total = 0;
    },
  };
}

/** A cli-progress bar with this module's ETA. */
function barProgress(sink: ProgressSink, clock: StepClock): Progress {
  const bar = new cliProgress.SingleBar(
    {
      stream: sink as NodeJS.WritableStream,
      format: '{label} |{bar}| {value}/{total} | {duration_formatted} | ETA {myEta} | {stage}',
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let total = 0;
  return {
    start(t, label) {
      if (started) bar.stop();
      total = t;
      clock.reset();
      bar.start(t, 0, { label, stage: '', myEta: '--' });
      started = true;
    },
    update(value, stage) {
      if (!started) return;
      const eta = clock.eta(value, total);
      bar.update(value, { stage: stage ?? '', myEta: eta === null ? '--' : formatDuration(eta) });
    },
    note(text) {
      if (!started) sink.write(`gqa2mla: ${text}\n`);
    },
    stop() {
      if (started) bar.stop();
      started = false;
    },
  };
}

/**
 * Creates a progress reporter on `sink` (default stderr): silent when `enabled` is false, a
 * bar on a TTY, lines otherwise.
 */
export function createProgress(enabled: boolean, sink: ProgressSink = process.stderr, clock = new StepClock()): Progress {
  if (!enabled) return silent();
  return sink.isTTY ? barProgress(sink, clock) : lineProgress(sink, clock);
}
