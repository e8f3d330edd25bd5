/**
 * The `gqa2mla` command line. Each command lives in its own module and registers
 * itself on the commander program; errors become one line on stderr and an exit status
 * (2 usage, 3 input error, 4 runtime) unless `--verbose` asks for the stack.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { GqaError } from '../errors.js';
import { toFlagNames } from './flag-names.js';

/** The package version, from the package.json beside src/ or dist/. */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Builds the program with every command registered. */
export async function buildProgram(): Promise<Command> {
  const program = new Command();
  program
    .name('gqa2mla')
    .description('Convert GQA/MHA checkpoints to Multi-Head Latent Attention (DeepSeek-V3 format) and measure the result')
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('--verbose', 'print stack traces on errors')
    .showHelpAfterError()
    .exitOverride();
  const commands = [await import('./inspect.js'), await import('./eval-ppl.js'), await import('./convert.js'), await import('./report.js'), await import('./plan.js'), await import('./generate.js'), await import('./check.js')];
  for (const c of commands) c.register(program);
  return program;
}

/** Runs the CLI on `argv` (process.argv form) and returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const verbose = argv.includes('--verbose');
  try {
    const program = await buildProgram();
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    return reportError(e, verbose, commandOf(argv));
  }
}

/** The subcommand named in `argv` (process.argv form), '' when none. */
function commandOf(argv: string[]): string {
  return argv.slice(2).find((a) => !a.startsWith('-')) ?? '';
}

function reportError(e: unknown, verbose: boolean, command: string): number {
  if (e instanceof CommanderError) {
    // commander already printed its message (help or usage error)
    return e.exitCode === 0 ? 0 : 2;
  }
  if (e instanceof GqaError) {
    process.stderr.write(`gqa2mla: ${toFlagNames(e.message, command)}\n`);
    if (verbose && e.stack) process.stderr.write(`${e.stack}\n`);
    return e.exitCode;
  }
  const err = e as Error & { code?: string };
  process.stderr.write(`gqa2mla: ${err?.message ?? String(e)}${err?.code ? ` (${err.code})` : ''}\n`);
  if (verbose && err?.stack) process.stderr.write(`${err.stack}\n`);
  return 4;
}
