// Fails `npm install` early, with the packages to install, when OpenBLAS or LAPACKE is missing.
const fs = require('fs');
const path = require('path');
const dirs = ['/usr/include', '/usr/include/x86_64-linux-gnu', '/usr/include/aarch64-linux-gnu',
  '/usr/include/openblas', '/usr/local/include', '/opt/homebrew/opt/openblas/include'];
const need = { 'cblas.h': false, 'lapacke.h': false };
for (const d of dirs) for (const h of Object.keys(need)) if (fs.existsSync(path.join(d, h))) need[h] = true;
const missing = Object.entries(need).filter(([, ok]) => !ok).map(([h]) => h);
if (missing.length > 0) {
  console.error(`gqa2mla: cannot find ${missing.join(', ')}. Install OpenBLAS and LAPACKE first:\n` +
    '  Debian/Ubuntu: sudo apt-get install libopenblas-dev liblapacke-dev\n' +
    '  (set CPATH/LIBRARY_PATH if they live elsewhere)');
  process.exit(1);
}
