// `npm install` hook: use the addon that is there (a local build, or the prebuilt binary
// for this platform in prebuilds/), and compile only when none loads. Compiling needs a C++
// compiler, make, python and the OpenBLAS + LAPACKE headers (checked first, with the
// packages to install).
const { spawnSync } = require('child_process');
const path = require('path');
const root = path.join(__dirname, '..');
try {
  const file = require('node-gyp-build').path(root);
  require(file).buildInfo();
  process.exit(0);
} catch (e) {
  console.error(`gqa2mla: no usable prebuilt addon for ${process.platform}-${process.arch} (${String(e.message).split('\n')[0]}); compiling it`);
}
const check = spawnSync(process.execPath, [path.join(__dirname, 'check-blas.cjs')], { stdio: 'inherit' });
if (check.status !== 0) process.exit(check.status ?? 1);
// npm hands its own node-gyp to install scripts (npm_config_node_gyp); fall back to PATH
const gyp = process.env.npm_config_node_gyp;
const r = gyp
  ? spawnSync(process.execPath, [gyp, 'rebuild'], { stdio: 'inherit', cwd: root })
  : spawnSync('node-gyp', ['rebuild'], { stdio: 'inherit', cwd: root, shell: process.platform === 'win32' });
process.exit(r.status ?? 1);
