/**
 * The one file that types the native addon. Every export of `native/addon.cc` is
 * declared here; the rest of the TypeScript code imports `native` from this module.
 *
 * Conventions of the addon: TypedArray arguments are read in place (no copies);
 * functions named `*Async` run on the libuv thread pool and return Promises; bad
 * arguments throw TypeError/RangeError with `code` (ERR_INVALID_ARG_TYPE, ERR_SHAPE,
 * ERR_OUT_OF_RANGE); solver failures reject with an Error carrying `code` and `info`.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Facts about the build of the addon and the CPU it runs on. */
export interface BuildInfo {
  cuda: boolean;
  blas: string;
  blasConfig: string;
  blasThreads: number;
  threads: number;
  avx2: boolean;
  napiVersion: number;
}

/* ---- linalg (native/linalg.cc) ---- */
/* ---- forward kernels (native/forward_*.cc) ---- */
/* ---- decode kernels (native/decode_*.cc) ---- */

/** The addon's exports. */
export interface NativeBinding {
  buildInfo(): BuildInfo;
}

function findAddon(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/native or dist/native -> package root
  const root = join(here, '..', '..');
  const candidates = [
    process.env.GQA2MLA_ADDON,
    join(root, 'build', 'Release', 'gqa2mla.node'),
    join(root, 'build', 'Debug', 'gqa2mla.node'),
  ].filter((p): p is string => typeof p === 'string' && p.length > 0);
  for (const c of candidates) if (existsSync(c)) return c;
  const err = new Error(
    `gqa2mla native addon not found (looked in ${candidates.join(', ')}); run \`npm install\` ` +
      '(needs libopenblas-dev and liblapacke-dev) or `npm run build:native`',
  ) as Error & { code: string };
  err.code = 'ERR_ADDON_MISSING';
  throw err;
}

const require = createRequire(import.meta.url);

/** The loaded native addon. */
export const native: NativeBinding = require(findAddon()) as NativeBinding;
