// Builds the prebuilt CPU addon shipped in the npm package, prebuilds/<platform>-<arch>/:
// prebuildify (N-API: one binary for every Node version; stripped; tagged glibc) with OpenBLAS
// and LAPACKE linked statically (GQA2MLA_STATIC_BLAS=1, scripts/blas-link.cjs), plus the two
// Fortran runtime libraries it still needs, found through the addon's $ORIGIN rpath.
// `--from-build`: package build/Release/gqa2mla.node when it is already such a static build
// (CI builds it so during `npm ci`) instead of compiling a second time.
const { spawnSync, execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const built = path.join(root, 'build', 'Release', 'gqa2mla.node');
const BLAS = /openblas|lapack|libblas/;

function ldd(file) {
  return execFileSync('ldd', [file], { encoding: 'utf8' });
}

function compile() {
  // build against the running Node's own headers when it ships them, else node-gyp fetches them
  const env = { ...process.env, GQA2MLA_STATIC_BLAS: '1' };
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (!env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
  const bin = path.join(root, 'node_modules', '.bin', 'prebuildify');
  const r = spawnSync(bin, ['--napi', '--strip', '--tag-libc', '-t', process.versions.node], { stdio: 'inherit', cwd: root, env });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

function fromBuild() {
  fs.mkdirSync(dir, { recursive: true });
  const dest = path.join(dir, 'gqa2mla.glibc.node');
  fs.copyFileSync(built, dest);
  spawnSync('strip', ['--strip-all', dest], { stdio: 'inherit' });
}

function bundleRuntime() {
  const addon = fs.readdirSync(dir).find((f) => f.endsWith('.node'));
  if (!addon) throw new Error(`no .node was built into ${dir}`);
  const deps = ldd(path.join(dir, addon));
  const bad = deps.split('\n').filter((l) => BLAS.test(l));
  if (bad.length > 0) throw new Error(`the prebuilt addon still links BLAS dynamically:\n${bad.join('\n')}`);
  for (const lib of ['libgfortran.so.5', 'libquadmath.so.0']) {
    const m = new RegExp(`${lib.replace(/\./g, '\\.')} => (\\S+)`).exec(deps);
    if (!m) continue;
    const src = fs.realpathSync(m[1]);
    const dest = path.join(dir, lib);
    if (!fs.existsSync(dest) || fs.realpathSync(dest) !== src) fs.copyFileSync(src, dest);
  }
  console.log(`gqa2mla: prebuilt ${path.relative(root, dir)}: ${fs.readdirSync(dir).join(', ')}`);
}

fs.rmSync(dir, { recursive: true, force: true });
if (process.argv.includes('--from-build') && fs.existsSync(built) && !BLAS.test(ldd(built))) fromBuild();
else compile();
bundleRuntime();
