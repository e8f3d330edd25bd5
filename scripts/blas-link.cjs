// Prints the BLAS/LAPACKE link arguments for binding.gyp. Default: the shared system
// libraries (-lopenblas -llapacke). GQA2MLA_STATIC_BLAS=1 (the prebuilt binaries, see
// scripts/prebuild.cjs): OpenBLAS and LAPACKE linked in from their static archives, the C++
// runtime too, so the addon needs only libgfortran/libquadmath, which ship beside it and are
// found through its $ORIGIN rpath.
const fs = require('fs');
const path = require('path');
if (process.env.GQA2MLA_STATIC_BLAS !== '1') {
  console.log('-lopenblas -llapacke -pthread');
  process.exit(0);
}
const dirs = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib'];
function find(names) {
  for (const d of dirs) for (const n of names) {
    const p = path.join(d, n);
    if (fs.existsSync(p)) return fs.realpathSync(p);
  }
  console.error(`gqa2mla: GQA2MLA_STATIC_BLAS=1 needs ${names[0]} (Debian/Ubuntu: libopenblas-dev liblapacke-dev)`);
  process.exit(1);
}
const lapacke = find(['liblapacke.a']);
const openblas = find(['libopenblas.a']);
const gfortran = find(['libgfortran.so.5']);
console.log([lapacke, openblas, gfortran, '-lm', '-pthread', '-static-libstdc++', '-static-libgcc'].join(' '));
