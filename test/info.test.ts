import { native } from '../src/native/binding.js';

test('addon loads and reports its build', () => {
  const info = native.buildInfo();
  expect(info.blas).toBe('openblas');
  expect(info.napiVersion).toBeGreaterThanOrEqual(8);
  expect(info.threads).toBeGreaterThanOrEqual(1);
  expect(typeof info.avx2).toBe('boolean');
});
