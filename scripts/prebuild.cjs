// Builds the prebuilt CPU addon shipped in the npm package: prebuildify (N-API, stripped)
// with OpenBLAS and LAPACKE linked statically (GQA2MLA_STATIC_BLAS=1, scripts/blas-link.cjs),
// then copies the two Fortran runtime libraries it still needs beside it (found through the
// addon's $ORIGIN rpath). Output: prebuilds/<platform>-<arch>/.
const { spawnSync, execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const bin = path.join(root, 'node_modules', '.bin', 'prebuildify');
// N-API: one binary for every Node version; build against the running Node's own headers
// when it ships them (official tarballs and distribution packages do), else node-gyp fetches them
const env = { ...process.env, GQA2MLA_STATIC_BLAS: '1' };
const prefix = path.join(path.dirname(process.execPath), '..');
if (!env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = path.resolve(prefix);
const r = spawnSync(bin, ['--napi', '--strip', '-t', process.versions.node], { stdio: 'inherit', cwd: root, env });
if (r.status !== 0) process.exit(r.status ?? 1);
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const addon = fs.readdirSync(dir).find((f) => f.endsWith('.node'));
if (!addon) throw new Error(`prebuildify left no .node in ${dir}`);
// ldd lists what the dynamic loader resolves: copy the Fortran runtime next to the addon
const deps = execFileSync('ldd', [path.join(dir, addon)], { encoding: 'utf8' });
for (const lib of ['libgfortran.so.5', 'libquadmath.so.0']) {
  const m = new RegExp(`${lib.replace(/\./g, '\\.')} => (\\S+)`).exec(deps);
  if (m) fs.copyFileSync(fs.realpathSync(m[1]), path.join(dir, lib));
}
const bad = deps.split('\n').filter((l) => /openblas|lapack|blas\.so/.test(l));
if (bad.length > 0) throw new Error(`the prebuilt addon still links BLAS dynamically:\n${bad.join('\n')}`);
console.log(`gqa2mla: prebuilt ${path.relative(root, dir)}: ${fs.readdirSync(dir).join(', ')}`);
