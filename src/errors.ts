/**
 * Errors raised by gqa2mla carry a stable `code` and the CLI exit status that fits them:
 * 2 usage (bad options), 3 input (malformed or unsupported checkpoint/file), 4 runtime.
 */
export type ErrorKind = 'usage' | 'input' | 'runtime';

/** An error with a machine-readable `code`, e.g. `ERR_SAFETENSORS_HEADER`. */
export class GqaError extends Error {
  readonly code: string;
  readonly kind: ErrorKind;
  constructor(code: string, message: string, kind: ErrorKind = 'input', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GqaError';
    this.code = code;
    this.kind = kind;
  }
  /** CLI exit status for this error. */
  get exitCode(): number {
    return this.kind === 'usage' ? 2 : this.kind === 'input' ? 3 : 4;
  }
}

/** Shorthand for an options error (exit status 2). */
export function usageError(code: string, message: string): GqaError {
  return new GqaError(code, message, 'usage');
}
