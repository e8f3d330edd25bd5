/**
 * The npm package installs without a compiler: `npm pack` (with the prebuilt linux-x64
 * addon, built here when absent), then `npm install <tarball>` into an empty directory with
 * no C/C++ compiler, make or python on PATH (CC/CXX=false), then `gqa2mla convert` on the
 * tiny-llama-gqa fixture through the installed bin. Also: the tarball holds LICENSE and no
 * source maps, and the install prints no EBADENGINE warning.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = join(new URL('.', import.meta.url).pathname, '..');
const FIX = join(ROOT, 'test', 'fixtures');
const linuxX64 = process.platform === 'linux' && process.arch === 'x64';
const maybe = linuxX64 ? test : test.skip;
let tmp: string;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-pack-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A PATH of one directory holding node, npm's shell needs and coreutils, but no compiler, make or python. */
function compilerFreePath(): string {
  const bin = join(tmp, 'bin');
  mkdirSync(bin, { recursive: true });
  symlinkSync(process.execPath, join(bin, 'node'));
  for (const tool of ['sh', 'bash', 'env', 'ls', 'cat', 'mkdir', 'rm', 'cp', 'mv', 'ln', 'chmod', 'uname', 'ldd', 'tar', 'gzip']) {
    const p = ['/bin', '/usr/bin'].map((d) => join(d, tool)).find((f) => existsSync(f));
    if (p) symlinkSync(p, join(bin, tool));
  }
  for (const tool of ['cc', 'gcc', 'g++', 'c++', 'make', 'python3', 'python', 'cmake']) expect(existsSync(join(bin, tool))).toBe(false);
  return bin;
}

async function ensurePrebuild(): Promise<string> {
  const dir = join(ROOT, 'prebuilds', 'linux-x64');
  if (!existsSync(dir) || !readdirSync(dir).some((f) => f.endsWith('.node')))
    await run(process.execPath, [join(ROOT, 'scripts', 'prebuild.cjs'), '--from-build'], { cwd: ROOT, timeout: 900_000, maxBuffer: 64 << 20 });
  const addon = readdirSync(dir).find((f) => f.endsWith('.node'))!;
  const deps = execFileSync('ldd', [join(dir, addon)], { encoding: 'utf8' });
  expect(deps).not.toMatch(/openblas|lapack|libblas/);
  return dir;
}

maybe(
  'npm pack -> npm install into an empty dir without a compiler -> gqa2mla convert on a fixture',
  async () => {
    await ensurePrebuild();
    const npmCli = realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
    const { stdout } = await run(process.execPath, [npmCli, 'pack', '--json', '--pack-destination', tmp], { cwd: ROOT, timeout: 600_000, maxBuffer: 64 << 20 });
    const packed = JSON.parse(stdout.slice(stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const files = packed[0].files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['LICENSE', 'bin/gqa2mla.js', 'dist/index.js', 'prebuilds/linux-x64/libgfortran.so.5']));
    expect(files.some((f) => /^prebuilds\/linux-x64\/gqa2mla.*\.node$/.test(f))).toBe(true);
    expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
    expect(files.some((f) => f.startsWith('build/'))).toBe(false);
    expect(readFileSync(join(ROOT, 'dist', 'index.js'), 'utf8')).not.toContain('sourceMappingURL');
    const tarball = join(tmp, packed[0].filename);

    const app = join(tmp, 'app');
    mkdirSync(app);
    const env = {
      PATH: compilerFreePath(),
      HOME: process.env.HOME ?? tmp,
      CC: 'false',
      CXX: 'false',
      npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? tmp, '.npm'),
      GQA2MLA_ADDON: '',
    };
    const inst = await run(process.execPath, [npmCli, 'install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', tarball], { cwd: app, env, timeout: 600_000, maxBuffer: 64 << 20 });
    const log = inst.stdout + inst.stderr;
    expect(log).not.toContain('EBADENGINE');
    expect(log).not.toContain('compiling it');
    const pkg = join(app, 'node_modules', 'gqa2mla');
    expect(existsSync(join(pkg, 'build'))).toBe(false);

    const bin = join(pkg, 'bin', 'gqa2mla.js');
    const version = await run(process.execPath, [bin, '--version'], { cwd: app, env });
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
    const out = join(app, 'tiny-mla');
    // --context = --calib-seqlen (held-out windows of 64 tokens): the installed bin is what is tested
    const conv = await run(
      process.execPath,
      [bin, 'convert', join(FIX, 'tiny-llama-gqa'), out, '--calib', join(FIX, 'pydocs-train-3M.txt'), '--qk-rope-dim', '32', '--kv-lora-rank', '96',
        '--calib-samples', '8', '--calib-seqlen', '64', '--held-out', '2', '--context', '64', '--method', 'transmla', '--freqfold', '2', '--balance-kv', '1', '--json'],
      { cwd: app, env, timeout: 600_000, maxBuffer: 64 << 20 },
    );
    const report = JSON.parse(conv.stdout);
    expect(report.layers).toHaveLength(4);
    expect(report.kvValuesPerToken.perLayerAfter).toBe(128);
    for (const l of report.layers) expect(l.attnRelError).toBeGreaterThan(0);
    expect(existsSync(join(out, 'report.html'))).toBe(true);
    // the installed package loaded its prebuilt addon (no build/ anywhere in it)
    const script = "await import('gqa2mla'); const fs = await import('node:fs'); console.log([...new Set(fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => /\\.node$|libgfortran/.test(l)).map((l) => l.split(/\\s+/).pop()))].join('\\n'));";
    const maps = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: app, env });
    const mapped = maps.stdout.trim().split('\n');
    expect(mapped.some((f) => f.startsWith(join(realpathSync(pkg), 'prebuilds', 'linux-x64')) && f.endsWith('.node'))).toBe(true);
    expect(mapped.filter((f) => f.endsWith('.node') && !f.includes('/prebuilds/'))).toEqual([]);
  },
  1_200_000,
);
