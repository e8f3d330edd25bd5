/**
 * Import-cycle check of src/ (type-only imports included: a cycle through types is still a
 * cycle of the design). Run by `npm run check:cycles` (part of `npm test`).
 */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'src/ is layered: a module never reaches itself through its imports (type imports included)',
      from: { path: '^src' },
      to: { circular: true },
    },
    {
      name: 'compute-below-pipeline',
      severity: 'error',
      comment: 'tensor/, engine/ and backend/ are the compute floors the conversion pipeline stands on: they never import convert/',
      from: { path: '^src/(tensor|engine|backend)/' },
      to: { path: '^src/convert/' },
    },
    {
      name: 'tensor-is-a-floor',
      severity: 'error',
      comment: 'tensor/ (float64 matrices, moments, tensor types) imports only the addon, linalg and errors',
      from: { path: '^src/tensor/' },
      to: { path: '^src/(?!tensor/|native/|linalg\\.ts|errors\\.ts)' },
    },
    {
      name: 'report-reads-types-only',
      severity: 'error',
      comment: 'report/ reads the conversion report through src/report-types.ts, never convert/',
      from: { path: '^src/report/' },
      to: { path: '^src/convert/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js'] },
    moduleSystems: ['es6'],
  },
};
