/**
 * Progress bars on stderr (cli-progress), shown only when stderr is a TTY and neither
 * --json nor --quiet is given.
 */
import cliProgress from 'cli-progress';

/** A progress reporter: a real bar on a TTY, silent otherwise. */
export interface Progress {
  start(total: number, label: string): void;
  update(value: number, label?: string): void;
  stop(): void;
}

/** Creates a progress reporter; `enabled` false (or a non-TTY stderr) makes it silent. */
export function createProgress(enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY) {
    return { start() {}, update() {}, stop() {} };
  }
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: '{label} |{bar}| {value}/{total} | ETA {eta_formatted} | {stage}',
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 4,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    start(total, label) {
      if (started) bar.stop();
      bar.start(total, 0, { label, stage: '' });
      started = true;
    },
    update(value, stage) {
      if (started) bar.update(value, { stage: stage ?? '' });
    },
    stop() {
      if (started) bar.stop();
      started = false;
    },
  };
}
